"""Celery tasks of the rewards app: thin, by ID, tolerant of vanished rows."""

from celery import shared_task


@shared_task(name="rewards.verify_tasks", acks_late=True)
def verify_tasks(task_ids: list[int]) -> None:
    """Run the campaigns' verifier kernels on these tasks' waiting results and decide them."""
    from rewards.verifier import verify_tasks as run

    run(task_ids)


@shared_task(name="rewards.revalidate_stuck", acks_late=True)
def revalidate_stuck() -> None:
    """Safety net, for a periodic schedule: decide tasks whose validation was never run."""
    from rewards.validation import revalidate, stuck_tasks

    revalidate(stuck_tasks())
