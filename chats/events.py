"""Reply events (DESIGN.md section 4) and the Redis Stream bus that carries them from worker to web.

Each assistant message has one Redis Stream, `<CHATSITE_STREAM_KEY_PREFIX><messageId>`. The worker appends
every event with XADD (capped with MAXLEN); once the terminal event is in, the key gets an expiry. A web
process reads the stream with XREAD from the start (or from a client's last event id), so no event published
before the reader attached is lost, and relays each entry as one SSE event whose `id:` is the entry id.

Each entry has two fields: `type` (the event type, so readers can spot the terminal event without parsing)
and `data` (the event as compact JSON, relayed verbatim). Events are plain dicts with camelCase keys.
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from collections.abc import AsyncIterator
from typing import Any

import redis
import redis.asyncio
from django.conf import settings

START = "start"
STEP = "step"
SOURCES = "sources"
CONTENT = "content"
TOOL_CALL = "tool_call"
TOOL_RESULT = "tool_result"
END = "end"
ERROR = "error"
TERMINAL_TYPES = frozenset({END, ERROR})

Event = dict[str, Any]


def start_event(
    *, message_id: str, chat_id: str, user_message_id: str | None, model: str, workflow_id: str | None
) -> Event:
    """The first event of every reply."""
    return {
        "type": START,
        "messageId": message_id,
        "chatId": chat_id,
        "userMessageId": user_message_id,
        "model": model,
        "workflowId": workflow_id,
    }


def content_event(delta: str) -> Event:
    """A piece of the reply's text; clients append the deltas in order."""
    return {"type": CONTENT, "delta": delta}


def end_event(*, message_id: str, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> Event:
    """The terminal event of a reply that finished: `finishReason` is `stop`, `length` or `cancelled`."""
    return {
        "type": END,
        "messageId": message_id,
        "finishReason": finish_reason,
        "usage": {"promptTokens": prompt_tokens, "completionTokens": completion_tokens},
    }


def error_event(*, code: str, message: str, retryable: bool) -> Event:
    """The terminal event of a reply that failed: a machine `error` code and a `message` for people."""
    return {"type": ERROR, "error": code, "message": message, "retryable": retryable}


def encode(event: Event) -> str:
    """Compact JSON for one event (UTF-8 kept as is, no spaces)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def stream_key(message_id: str) -> str:
    """The Redis key of a reply's event stream."""
    return f"{settings.CHATSITE_STREAM_KEY_PREFIX}{message_id}"


_sync_client: redis.Redis | None = None
_sync_lock = threading.Lock()


def sync_redis() -> redis.Redis:
    """The process-wide blocking Redis client (thread-safe connection pool), created on first use."""
    global _sync_client
    with _sync_lock:
        if _sync_client is None:
            _sync_client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
        return _sync_client


# One asyncio client per event loop: redis.asyncio connections belong to the loop that opened them.
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = weakref.WeakKeyDictionary()


def async_redis() -> redis.asyncio.Redis:
    """The asyncio Redis client of the running event loop, created on first use."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        # XREAD blocks for up to the ping interval: the socket timeout must outlast it.
        client = redis.asyncio.Redis.from_url(
            settings.REDIS_URL, decode_responses=True, socket_timeout=settings.CHATSITE_SSE_PING_SECONDS + 10
        )
        _async_clients[loop] = client
    return client


class EventPublisher:
    """Appends a reply's events to its Redis Stream (used by the worker).

    Args:
        client: a blocking redis-py client; the process-wide one by default.

    Raises:
        redis.RedisError: from `publish` when Redis cannot be reached.
    """

    def __init__(self, client: redis.Redis | None = None) -> None:
        self.client = client or sync_redis()

    def publish(self, message_id: str, event: Event) -> str:
        """Append one event and return its stream entry id (`<ms>-<seq>`).

        The terminal event and the key's expiry go in one MULTI/EXEC, so a stream never lingers forever
        and never expires before its end is in.
        """
        key = stream_key(message_id)
        fields = {"type": event["type"], "data": encode(event)}
        if event["type"] not in TERMINAL_TYPES:
            return self.client.xadd(key, fields, maxlen=settings.CHATSITE_STREAM_MAXLEN, approximate=True)
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(key, fields, maxlen=settings.CHATSITE_STREAM_MAXLEN, approximate=True)
        pipe.expire(key, settings.CHATSITE_STREAM_TTL_SECONDS)
        entry_id, _ = pipe.execute()
        return entry_id


async def read_events(
    message_id: str, last_id: str = "0-0", *, idle_seconds: float | None = None
) -> AsyncIterator[tuple[str, str, str] | None]:
    """Follow a reply's stream from after `last_id` until its terminal event.

    Yields `(entry_id, type, data_json)` for each event in order, and `None` each time `idle_seconds`
    (default `CHATSITE_SSE_PING_SECONDS`) pass with no event, so the caller can send a keep-alive.
    Returns after yielding the terminal event.

    Raises:
        redis.RedisError: when Redis cannot be reached.
    """
    idle = settings.CHATSITE_SSE_PING_SECONDS if idle_seconds is None else idle_seconds
    client = async_redis()
    key = stream_key(message_id)
    while True:
        response = await client.xread({key: last_id}, count=500, block=max(1, int(idle * 1000)))
        if not response:
            yield None
            continue
        for entry_id, fields in response[0][1]:
            last_id = entry_id
            yield entry_id, fields["type"], fields["data"]
            if fields["type"] in TERMINAL_TYPES:
                return
