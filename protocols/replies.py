"""The wire-independent view of a reply that every protocol encodes: its events in order, then its saved row.

Each protocol module turns these into its own wire format; none reads Redis or the event bus itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis

from chats import events
from chats.models import Message

logger = logging.getLogger(__name__)

STREAM_UNAVAILABLE = events.error_event(
    code="stream_unavailable",
    message="The reply's event stream is unavailable right now; resume it over /api/chats/<chatId>/messages.",
    retryable=True,
)


async def reply_events(message_id: str, last_id: str = "0-0") -> AsyncIterator[dict[str, Any] | None]:
    """Follow reply `message_id` after `last_id` until its terminal event.

    Yields each event as a dict (`{"type": ..., fields}`, DESIGN.md section 4) and None whenever
    `CHATSITE_SSE_PING_SECONDS` pass without one (time for a keep-alive). If Redis cannot be reached it yields
    one `error` event `stream_unavailable` (retryable) and stops: the reply itself goes on, and the client can
    resume it over seed 004.
    """
    try:
        async for item in events.read_events(message_id, last_id):
            yield None if item is None else json.loads(item[2])
    except redis.RedisError:
        logger.warning("a protocol stream of reply %s lost Redis", message_id)
        yield STREAM_UNAVAILABLE


async def finished_reply(message_id: str) -> tuple[Message, dict[str, Any]]:
    """Wait for reply `message_id` to end; return its saved row and its terminal event (`end` or `error`)."""
    terminal: dict[str, Any] = STREAM_UNAVAILABLE
    async for event in reply_events(message_id):
        if event is not None and event["type"] in events.TERMINAL_TYPES:
            terminal = event
            break
    return await Message.objects.aget(id=message_id), terminal
