"""The wire-independent view of a reply that every protocol encodes: its events in order, then its saved row.

Each protocol module turns these into its own wire format; none reads Redis or the event bus itself.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from chats import events
from chats.models import Message
from chats.streaming import reply_event_batches


async def reply_events(message_id: str, last_id: str = "0-0") -> AsyncIterator[dict[str, Any] | None]:
    """Follow reply `message_id` after `last_id` until its terminal event, as seed 004's relay does
    (`chats.streaming.reply_event_batches`: it reconnects through a Redis outage and falls back on the saved
    outcome).

    Yields each event as a dict (`{"type": ..., fields}`, DESIGN.md section 4, `chats.event_schema`) and None
    whenever `CHATSITE_SSE_PING_SECONDS` pass without one (time for a keep-alive).
    """
    async for batch in reply_event_batches(message_id, last_id):
        if not batch:
            yield None
        for _, _, data in batch:
            yield json.loads(data)


async def finished_reply(message_id: str) -> tuple[Message, dict[str, Any]]:
    """Wait for reply `message_id` to end; return its saved row and its terminal event (`end` or `error`)."""
    terminal: dict[str, Any] = {}
    async for event in reply_events(message_id):
        if event is not None and event["type"] in events.TERMINAL_TYPES:
            terminal = event
            break
    return await Message.objects.aget(id=message_id), terminal
