"""Celery tasks: thin wrappers that take ids and hand the work to plain Python."""

from celery import shared_task

from pipelines.runner import end_lost_replies, run_reply


@shared_task(name="pipelines.generate_reply", bind=True)
def generate_reply(self, message_id: str) -> str | None:
    """Generate the assistant reply `message_id` (a UUID string), or a waiting reply the admission puts first
    (`pipelines.admission`), and stream its events through Redis.

    Acknowledged late and requeued if the worker dies (settings: CELERY_TASK_ACKS_LATE and
    CELERY_TASK_REJECT_ON_WORKER_LOST): the redelivered task then takes the reply over (`run_reply`, told so by
    the broker's redelivered flag). A second delivery of an already claimed reply does nothing. Never raises:
    an exception ends its reply at once (`internal_error`) instead of leaving it to be delivered again.
    Returns the reply's final status, or None if there was nothing to do.
    """
    redelivered = bool((self.request.delivery_info or {}).get("redelivered", True))
    return run_reply(message_id, redelivered=redelivered)


@shared_task(name="pipelines.watchdog", ignore_result=True)
def watchdog() -> int:
    """Periodic (Celery beat, every CHATSITE_WATCHDOG_SECONDS): end replies whose worker vanished and
    requeue replies lost from the queue. Returns how many replies it ended."""
    return end_lost_replies()
