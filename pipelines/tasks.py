"""Celery tasks: thin wrappers that take ids and hand the work to plain Python."""

from celery import shared_task

from pipelines.runner import end_lost_replies, run_reply


@shared_task(name="pipelines.generate_reply")
def generate_reply(message_id: str) -> str | None:
    """Generate the assistant reply `message_id` (a UUID string) and stream its events through Redis.

    Acknowledged late and requeued if the worker dies (settings: CELERY_TASK_ACKS_LATE and
    CELERY_TASK_REJECT_ON_WORKER_LOST); a second delivery of an already claimed reply does nothing.
    Returns the reply's final status, or None if there was nothing to do.
    """
    return run_reply(message_id)


@shared_task(name="pipelines.watchdog", ignore_result=True)
def watchdog() -> int:
    """Periodic (Celery beat, every CHATSITE_WATCHDOG_SECONDS): end replies whose worker vanished and
    requeue replies lost from the queue. Returns how many replies it ended."""
    return end_lost_replies()
