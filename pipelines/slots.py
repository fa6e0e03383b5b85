"""How many replies this process may run at once, per lane, and how many it runs now.

A worker process of the `network` lane runs Celery's gevent pool: `CHATSITE_NETWORK_SLOTS` replies at once, each
on a greenlet. A `local` lane process (prefork) runs one. Embedded mode runs a thread pool per lane
(`chatsite.jobs`). The runner counts the replies it runs (`take`, `give_back`) so that it can tell whether this
process is full (`full`): only then do other replies wait for its slots, and only then is the admission's fair
order (`pipelines.admission`) worth its queries.
"""

from __future__ import annotations

import threading

from django.conf import settings

_lock = threading.Lock()
_running: dict[str, int] = {}
# Slots of this process, per lane, as its pool was started (chatsite.celery sets it in a worker); lanes it does
# not know have one.
_slots: dict[str, int] = {}


def set_slots(lane: str, count: int) -> None:
    """Record that this process runs `count` replies of `lane` at once (called when the worker starts)."""
    _slots[lane] = max(1, count)


def slots(lane: str) -> int:
    """How many replies of `lane` this process runs at once."""
    if settings.CHATSITE_EMBEDDED:
        from chatsite import jobs

        return jobs.pool_size(lane)
    return _slots.get(lane, 1)


def take(lane: str) -> None:
    """A reply of `lane` started running here."""
    with _lock:
        _running[lane] = _running.get(lane, 0) + 1


def give_back(lane: str) -> None:
    """A reply of `lane` stopped running here."""
    with _lock:
        _running[lane] = max(0, _running.get(lane, 0) - 1)


def running(lane: str) -> int:
    """How many replies of `lane` run here now."""
    return _running.get(lane, 0)


def full(lane: str) -> bool:
    """Whether every slot of `lane` in this process is taken (counting the reply that asks)."""
    return running(lane) >= slots(lane)
