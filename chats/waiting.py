"""Replies that wait for a worker slot, and what their readers are told (the `queued` event, DESIGN.md section 4).

A lane (`chatsite.jobs`) has as many slots as its workers report (`chatsite.jobs.capacity`). A reply sent when
every slot of its lane is taken waits in the lane's queue; its readers hear it right after the stream opens:
`start`, then `{"type": "queued", "position": N}`, N being the replies of that lane queued before it. Each time a
worker takes a slot the line moves, and the replies still waiting hear their new place (`update_positions`).
The UI shows "Waiting for the model: N ahead". A waiting reply can be cancelled like any other.

Both are written as the reply's waiting writer (`chats.fencing.waiting_token`): nothing lands once a worker has
claimed the reply or it has ended. Publishing is best effort: a reply never fails for want of its `queued` event.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db.models import Count, Q

from chats import events, fencing
from chats.models import Message
from chatsite import jobs

logger = logging.getLogger(__name__)

# The most waiting replies of a lane told their new place when the line moves (the first ones).
UPDATE_LIMIT = 200


def _line(lane: str):
    return Message.objects.filter(role=Message.Role.ASSISTANT, lane=lane)


def announce(message_id: str, lane: str) -> int | None:
    """Tell the readers of the just-queued reply `message_id` that it waits, when no slot of `lane` is free for
    it (slots reported by the lane's workers; taken: replies streaming in the lane and those queued before it).
    Returns the position published, or None when a slot is free (nothing published).

    Embedded mode and full mode alike; one query and one Redis read.
    """
    try:
        slots = jobs.capacity(lane)
        row = Message.objects.filter(id=message_id).values("created_at", "status").first()
        if row is None or row["status"] != Message.Status.QUEUED:
            return None
        counts = _line(lane).aggregate(
            running=Count("id", filter=Q(status=Message.Status.STREAMING)),
            ahead=Count("id", filter=Q(status=Message.Status.QUEUED, created_at__lt=row["created_at"])),
        )
        if slots is not None and counts["running"] + counts["ahead"] < slots:
            return None
        message = Message.objects.filter(id=message_id, status=Message.Status.QUEUED).first()
        if message is None:
            return None
        publish_queued(message, counts["ahead"])
        return counts["ahead"]
    except Exception:
        logger.warning("could not tell reply %s's readers that it waits", message_id, exc_info=True)
        return None


def update_positions(lane: str) -> int:
    """A worker took a slot of `lane`: tell the replies still waiting beyond the free slots their new place.
    Returns how many were told. One query when nobody waits."""
    try:
        slots = jobs.capacity(lane)
        line = _line(lane)
        counts = line.aggregate(
            running=Count("id", filter=Q(status=Message.Status.STREAMING)),
            queued=Count("id", filter=Q(status=Message.Status.QUEUED)),
        )
        free = max(0, (slots or 0) - counts["running"])
        if counts["queued"] <= free:
            return 0
        waiting = list(line.filter(status=Message.Status.QUEUED).order_by("created_at")[:UPDATE_LIMIT])
        told = 0
        for position, message in enumerate(waiting):
            if position >= free:
                publish_queued(message, position)
                told += 1
        return told
    except Exception:
        logger.warning("could not update the places of the replies waiting in lane %s", lane, exc_info=True)
        return 0


def publish_queued(message: Message, position: int | None) -> None:
    """Write `start` (when the reply's stream is still empty) and `queued` with `position` to the waiting reply
    `message`, as its waiting writer: refused once a worker has claimed it or it has ended.

    Raises:
        redis.RedisError: when Redis cannot be reached.
    """
    from chats.lifecycle import start_event_for

    message_id = str(message.id)
    bus: Any = events.bus()
    told_key = f"{settings.CHATSITE_STREAM_KEY_PREFIX}{message_id}:told-position"
    if bus.flag(told_key) == str(position):
        return  # its readers know this place already (the admission and the line's move may both tell it)
    bus.set_flag(told_key, str(position), settings.CHATSITE_STREAM_TTL_SECONDS)
    fence = (fencing.fence_key(message_id), fencing.waiting_token(message.attempts))
    key = events.stream_key(message_id)
    start = start_event_for(message)
    # The start's id is the reply's creation time: refused if the stream holds anything already.
    start_id = f"{int(message.created_at.timestamp() * 1000)}-0"
    maxlen = settings.CHATSITE_STREAM_MAXLEN
    bus.append(key, {"type": start["type"], "data": events.encode(start)}, entry_id=start_id, maxlen=maxlen,
               fence=fence)  # fmt: skip
    event = events.queued_event(position)
    bus.append(key, {"type": event["type"], "data": events.encode(event)}, maxlen=maxlen, fence=fence)
