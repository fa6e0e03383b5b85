"""Embedded mode (`CHATSITE_EMBEDDED`): everything in the web process, no Redis, no Celery.

Replies are generated on a thread pool (`CHATSITE_EMBEDDED_WORKERS` threads) instead of Celery workers, their
events go through the in-memory bus (`chats.bus.MemoryBus`), and the watchdog runs on a timer thread. The
code that generates a reply is the same `pipelines.runner.run_reply` a Celery worker runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connections

from chats.bus import MemoryBus

logger = logging.getLogger(__name__)

_executor: ThreadPoolExecutor | None = None
_jobs_executor: ThreadPoolExecutor | None = None
_watchdog: threading.Thread | None = None
_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(settings.CHATSITE_EMBEDDED_WORKERS, thread_name_prefix="reply")
        return _executor


def _jobs_pool() -> ThreadPoolExecutor:
    global _jobs_executor
    with _lock:
        if _jobs_executor is None:
            # One thread of its own, as full mode's ingest worker: a long PDF never holds up a reply.
            _jobs_executor = ThreadPoolExecutor(1, thread_name_prefix="job")
        return _jobs_executor


def _run(what: str, job: Callable[[str], object], object_id: str) -> None:
    try:
        job(object_id)
    except Exception:
        logger.exception("%s %s failed in the embedded worker", what, object_id)
    finally:
        connections.close_all()  # this thread's connection goes back (to the pool, on PostgreSQL)


def _generate(message_id: str) -> None:
    from pipelines.runner import run_reply

    # Never a redelivery: a thread that dies takes the whole process with it. The same rules as a Celery worker's
    # hold (attempts, time budget, admission, an exception ending its reply at once): they live in run_reply.
    run_reply(message_id, redelivered=False)


def submit(message_id: str) -> None:
    """Generate the reply `message_id` on the embedded thread pool."""
    _pool().submit(_run, "reply", _generate, message_id)


def submit_job(what: str, job: Callable[[str], object], object_id: str) -> None:
    """Run `job(object_id)` (document ingestion, say) on a thread apart from the replies'; `what` names it in
    logs. Jobs run one at a time, in order."""
    _jobs_pool().submit(_run, what, job, object_id)


def _watch() -> None:
    from chats.events import bus
    from pipelines.runner import end_lost_replies

    stop = threading.Event()
    while not stop.wait(settings.CHATSITE_WATCHDOG_SECONDS):
        try:
            end_lost_replies()
            event_bus = bus()
            if isinstance(event_bus, MemoryBus):
                event_bus.purge()
        except Exception:
            logger.exception("embedded watchdog failed")
        finally:
            connections.close_all()


def start() -> None:
    """Start the watchdog thread (once). Replies left `streaming` by a previous run end as `worker_lost`."""
    global _watchdog
    with _lock:
        if _watchdog is None:
            _watchdog = threading.Thread(target=_watch, name="watchdog", daemon=True)
            _watchdog.start()
