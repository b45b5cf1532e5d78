"""Celery tasks of the rewards app: thin, by ID, tolerant of vanished rows."""

from celery import shared_task


@shared_task(name="rewards.verify_tasks", acks_late=True)
def verify_tasks(task_ids: list[int]) -> None:
    """Run the campaigns' verifier kernels on these tasks' waiting results and decide them."""
    from rewards.verifier import verify_tasks as run

    run(task_ids)
