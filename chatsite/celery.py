"""The Celery application. Workers run `celery -A chatsite worker`; tasks live in `pipelines/tasks.py`."""

import logging
import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

app = Celery("chatsite")
# Every Celery setting comes from Django's settings, under the CELERY_ prefix.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

logger = logging.getLogger(__name__)


@signals.task_prerun.connect
@signals.task_postrun.connect
def release_database_connections(**kwargs) -> None:
    """Give a task's database connections back to the pool (or close them) before and after it runs.

    Celery's own per-task close is turned off by CELERY_DB_REUSE_MAX (see settings), because it also closes
    the pool; this keeps the pool, so a task starts on a connection that is already open. A connection that
    had errors and no longer works (killed server-side, say) is closed, not given back; one killed while it
    sat in the pool is found by the pool's check when it is next handed out (CONN_HEALTH_CHECKS, settings).
    """
    from django.db import close_old_connections

    close_old_connections()


def _lanes(worker) -> list[str]:
    """The lanes (chatsite.jobs) a worker serves, from the queues it consumes."""
    from chatsite import jobs

    queues = worker.app.amqp.queues.consume_from or {}
    return [lane for lane in (jobs.lane_of_queue(name) for name in queues) if lane is not None]


def _pool_runs_many(worker) -> bool:
    """Whether one process of this worker runs many tasks at once (gevent, eventlet, threads) or one (prefork)."""
    name = getattr(worker.pool_cls, "__module__", str(worker.pool_cls)).lower()
    return any(kind in name for kind in ("gevent", "eventlet", "thread"))


@signals.celeryd_after_setup.connect
def record_slots(sender, instance, **kwargs) -> None:
    """Tell the runner how many replies each process of this worker runs at once (`pipelines.slots`): all of the
    pool's for gevent (a reply per greenlet), one for prefork (each child process runs one)."""
    from pipelines import slots

    per_process = instance.concurrency if _pool_runs_many(instance) else 1
    for lane in _lanes(instance):
        slots.set_slots(lane, per_process)


@signals.worker_ready.connect
def report_capacity(sender, **kwargs) -> None:
    """Report this worker's slots per lane (`chatsite.jobs.report_capacity`) now and every
    CAPACITY_REPORT_SECONDS, so that the web knows when a reply must wait and operators see capacity."""
    import threading
    import time

    from celery.worker import state

    from chatsite import jobs

    worker = sender.controller
    lanes = _lanes(worker)

    def report() -> None:
        while True:
            for lane in lanes:
                try:
                    jobs.report_capacity(lane, worker.hostname, worker.concurrency, len(state.active_requests))
                except Exception:
                    logger.warning("could not report the capacity of lane %s", lane, exc_info=True)
            time.sleep(jobs.CAPACITY_REPORT_SECONDS)

    if lanes:
        threading.Thread(target=report, name="capacity-report", daemon=True).start()


@signals.worker_shutdown.connect
def withdraw_capacity(sender, **kwargs) -> None:
    """Take this worker's slots out of its lanes' capacity as it stops."""
    from chatsite import jobs

    for lane in _lanes(sender):
        try:
            jobs.withdraw_capacity(lane, sender.hostname)
        except Exception:
            logger.warning("could not withdraw the capacity of lane %s", lane, exc_info=True)
