"""The SSE relay: turns a reply's Redis Stream into a `text/event-stream` response (DESIGN.md section 4).

The body is an async generator, so under daphne one web process holds many open streams without a thread
each. When the client goes away the generator is cancelled: only this reader stops, never the generation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import redis
from django.http import StreamingHttpResponse

from chats import events
from chats.events import read_events

logger = logging.getLogger(__name__)

PING = b": ping\n\n"
# How often and how long the relay tries to get Redis back before it gives up on a stream.
RECONNECT_ATTEMPTS = 5
RECONNECT_BASE_DELAY = 0.5  # seconds, doubled on each attempt


def format_sse(entry_id: str, data: str) -> bytes:
    """One SSE event: `id: <entry id>` and `data: <json>` lines, then a blank line (WHATWG HTML, 9.2)."""
    return f"id: {entry_id}\ndata: {data}\n\n".encode()


async def relay(message_id: str, last_id: str = "0-0") -> AsyncIterator[bytes]:
    """Yield a reply's events as SSE bytes from after `last_id` until its terminal event.

    Sends `: ping` whenever `CHATSITE_SSE_PING_SECONDS` pass with no event. If Redis goes away, it reconnects
    and carries on from the last event it relayed; after `RECONNECT_ATTEMPTS` failures it sends an `error`
    event (`stream_unavailable`, retryable, no `id:`) and ends, so the client can resume later.
    """
    failures = 0
    while True:
        try:
            async for item in read_events(message_id, last_id):
                failures = 0
                if item is None:
                    yield PING
                    continue
                entry_id, event_type, data = item
                last_id = entry_id
                yield format_sse(entry_id, data)
                if event_type in events.TERMINAL_TYPES:
                    return
        except redis.RedisError as exc:
            failures += 1
            logger.warning("relay of %s lost Redis (%s), attempt %d", message_id, exc, failures)
            if failures > RECONNECT_ATTEMPTS:
                error = events.error_event(
                    code="stream_unavailable",
                    message="The event stream is unavailable right now. Resume it in a moment.",
                    retryable=True,
                )
                yield f"data: {events.encode(error)}\n\n".encode()
                return
            await asyncio.sleep(RECONNECT_BASE_DELAY * 2 ** (failures - 1))


def event_stream_response(message_id: str, last_id: str = "0-0") -> StreamingHttpResponse:
    """A streaming response relaying the reply `message_id` as Server-Sent Events."""
    response = StreamingHttpResponse(relay(message_id, last_id), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # Tells nginx (and proxies that honour it) not to buffer the stream.
    response["X-Accel-Buffering"] = "no"
    return response
