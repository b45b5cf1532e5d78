"""Background jobs of operations/ (Celery tasks, enqueued through ccgsc.jobs.enqueue)."""

from celery import shared_task

from operations import notifications


@shared_task(name="operations.deliver")
def deliver(delivery_id: int) -> None:
    """One attempt at one notification; a missing row (campaign deleted) is nothing to do."""
    notifications.deliver_one(delivery_id)
