"""Celery tasks of the campaigns app: thin, by ID, tolerant of vanished rows."""

from celery import shared_task


@shared_task(name="campaigns.generate_tasks", acks_late=True)
def generate_tasks(campaign_id: int) -> None:
    from campaigns.services.generators import run_generator

    run_generator(campaign_id)


@shared_task(name="campaigns.reduce_results", acks_late=True)
def reduce_results(campaign_id: int, final: bool) -> None:
    from campaigns.services.reducer import campaign_reduce

    campaign_reduce(campaign_id=campaign_id, final=final)
