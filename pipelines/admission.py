"""Per-user fairness for replies that wait for a worker slot.

Replies reach workers in the order they were sent, so one user who sends many replies at once would hold every
slot while other users' replies wait behind them. Admission decides which waiting reply a free slot goes to:

    choose(message_id) -> Choice
        Called when a slot is free and a delivery of the queued reply `message_id` holds it (a Celery task, a
        thread of the embedded pool, or any later lane). Returns which queued reply should take the slot:
        `message_id` itself, or another user's reply that the fair order puts first. Reads the database only.
    defer(message_id, position)
        The reply `message_id` was passed over: tell its readers (`start` if its stream has none, then
        `{"type": "queued", "position": N}`, DESIGN.md section 4) and send it to the back of the queue.
    note_started(owner_id)
        A reply of `owner_id` took a slot (for the order's tie-break).

The fair order: users are served by how many of their replies are generating now (fewest first), then by how
long ago one of their replies last started (longest first), and each user's replies in the order they were sent.
Replies waiting beyond a user's fair share so wait behind other users' replies, and a user alone in the queue is
never held back: when no other user has a reply waiting, `choose` answers the reply that asked, without reading
anything more (one query). Being passed over is not an attempt (`Message.attempts` counts claims only).

This module knows nothing of the pool: the runner calls `choose` with the delivery it holds, claims the reply
it answers, and calls `defer` for the one it passed over.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Count

from chats import events, waiting
from chats.models import Message
from chatsite import jobs

logger = logging.getLogger(__name__)

# The most waiting replies the fair order is computed over (the oldest ones).
ORDER_LIMIT = 1000
# How long a user's last start is remembered (seconds): beyond it, users tie and the older reply goes first.
SERVED_TTL_SECONDS = 3600


@dataclass(frozen=True)
class Choice:
    """What a free slot should run: `run` (a queued reply's id), and when that is not the reply that asked,
    `passed_over` (the one that asked) with its `position` in the fair order once `run` has started."""

    run: str
    passed_over: str | None = None
    position: int | None = None


def _served_key(owner_id: Any) -> str:
    return f"{settings.CHATSITE_STREAM_KEY_PREFIX}admission:served:{owner_id}"


def note_started(owner_id: Any) -> None:
    """Record that a reply of `owner_id` started now (Redis, or memory in embedded mode; best effort)."""
    try:
        events.bus().set_flag(_served_key(owner_id), str(time.time_ns()), SERVED_TTL_SECONDS)
    except Exception:  # fairness is an optimisation: never fail a reply for it
        logger.warning("admission: could not note a start of %s", owner_id, exc_info=True)


def fair_order(
    waiting: list[tuple[str, Any, Any]], running: dict[Any, int], served: dict[Any, int]
) -> list[tuple[str, Any]]:
    """The order in which waiting replies should start.

    Args:
        waiting: `(message_id, owner_id, created_at)` of the queued replies, oldest first.
        running: replies generating now, per owner (missing: none).
        served: when each owner's last reply started (any increasing number; missing: long ago).

    Returns:
        `(message_id, owner_id)`, first to start first: the k-th waiting reply of an owner with r replies
        running is at level r + k; lower levels first, then owners served longer ago, then older replies.
    """
    rank: dict[Any, int] = {}
    keyed = []
    for message_id, owner_id, created_at in waiting:
        k = rank.get(owner_id, 0)
        rank[owner_id] = k + 1
        keyed.append(((running.get(owner_id, 0) + k, served.get(owner_id, 0), created_at), message_id, owner_id))
    keyed.sort(key=lambda item: item[0])
    return [(message_id, owner_id) for _, message_id, owner_id in keyed]


def _waiting_replies():
    return Message.objects.filter(role=Message.Role.ASSISTANT, status=Message.Status.QUEUED)


def choose(message_id: str) -> Choice:
    """Which queued reply should take the slot that a delivery of `message_id` holds (see the module docstring).

    The head of the fair order: with one user waiting, that user's oldest reply (two small queries); with more,
    the order is computed over the waiting replies. `message_id` is expected to be queued; if it is not among
    the waiting replies, it is answered as is.
    """
    owners = list(_waiting_replies().order_by().values_list("chat__owner_id", flat=True).distinct()[:2])
    if len(owners) < 2:
        oldest = _waiting_replies().order_by("created_at").values_list("id", flat=True).first()
        if oldest is None or str(oldest) == message_id:
            return Choice(message_id)
        # The same user's older reply goes first (its own delivery was queued again): no one else is waiting.
        return Choice(str(oldest), passed_over=message_id)
    waiting = list(
        _waiting_replies().order_by("created_at").values_list("id", "chat__owner_id", "created_at")[:ORDER_LIMIT]
    )
    waiting = [(str(m), owner, created) for m, owner, created in waiting]
    if message_id not in {m for m, _, _ in waiting}:
        return Choice(message_id)
    owner_ids = {owner for _, owner, _ in waiting}
    running = dict(
        Message.objects.filter(
            role=Message.Role.ASSISTANT, status=Message.Status.STREAMING, chat__owner_id__in=owner_ids
        )
        .order_by()
        .values("chat__owner_id")
        .annotate(n=Count("id"))
        .values_list("chat__owner_id", "n")
    )
    served: dict[Any, int] = {}
    for owner in owner_ids:
        try:
            value = events.bus().flag(_served_key(owner))
        except Exception:
            value = None
        if value is not None:
            served[owner] = int(value)
    order = [m for m, _ in fair_order(waiting, running, served)]
    if order[0] == message_id:
        return Choice(message_id)
    return Choice(order[0], passed_over=message_id, position=order.index(message_id) - 1)


def defer(message_id: str, position: int | None) -> None:
    """Tell the readers of the passed-over reply `message_id` that it waits (when `position` is known), and queue
    it again at the back.

    Publishes through `chats.waiting.publish_queued` (as the reply's waiting writer, so nothing is written once a
    worker has claimed it or it ended). Publishing is best effort; queueing it again is not.
    """
    message = Message.objects.filter(id=message_id, status=Message.Status.QUEUED).first()
    if message is None:
        return  # claimed or ended meanwhile: its own delivery, or its end, took care of it
    if position is not None:
        try:
            waiting.publish_queued(message, position)
        except Exception:
            logger.warning("admission: could not publish the queued event of reply %s", message_id, exc_info=True)
        logger.info("reply %s: waits behind other users' replies (position %s); queued again", message_id, position)
    jobs.submit("reply", message_id, lane=message.lane)
