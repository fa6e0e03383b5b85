"""Embedded mode (`CHATSITE_EMBEDDED`): everything in the web process, no Redis, no Celery.

Replies are generated on thread pools of the web process instead of Celery workers, one per lane
(`chatsite.jobs`: `CHATSITE_EMBEDDED_WORKERS` threads for remote models, `CHATSITE_LOCAL_WORKERS` for local
ones), their events go through the in-memory bus (`chats.bus.MemoryBus`), and the watchdog runs on a timer
thread (here). The code that generates a reply is the same `pipelines.runner.run_reply` a Celery worker runs.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import connections

from chats.bus import MemoryBus

logger = logging.getLogger(__name__)

_watchdog: threading.Thread | None = None
_lock = threading.Lock()


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
