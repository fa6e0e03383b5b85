"""The transport of reply events (DESIGN.md section 4): the Redis Stream bus that carries them from worker to web.

What the events are (types, fields, constructors) is `chats.event_schema`.

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
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import NamedTuple

import redis
import redis.asyncio
from django.conf import settings
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from chats.bus import EventBus, MemoryBus, RedisBus, parse_entry_id

# The contract (types, fields, constructors) lives in chats.event_schema; its names are re-exported here for the
# transport's callers.
from chats.event_schema import (  # noqa: F401
    TERMINAL_TYPES,
    Event,
    content_event,
    end_event,
    error_event,
    queued_event,
    sources_event,
    start_event,
    step_event,
    tool_call_event,
    tool_result_event,
)
from chats.mux import stream_mux

logger = logging.getLogger(__name__)


def encode(event: Event) -> str:
    """Compact JSON for one event (UTF-8 kept as is, no spaces)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def stream_key(message_id: str) -> str:
    """The Redis key of a reply's event stream."""
    return f"{settings.CHATSITE_STREAM_KEY_PREFIX}{message_id}"


def cancel_key(message_id: str) -> str:
    """The Redis key whose presence asks the worker generating `message_id` to stop."""
    return f"{settings.CHATSITE_STREAM_KEY_PREFIX}{message_id}:cancel"


def heartbeat_key(message_id: str) -> str:
    """The Redis key a worker keeps alive (with a TTL) while it generates `message_id`."""
    return f"{settings.CHATSITE_STREAM_KEY_PREFIX}{message_id}:heartbeat"


# Seconds a command waits for a free connection of a full pool (CHATSITE_REDIS_MAX_CONNECTIONS) before it fails.
POOL_WAIT_SECONDS = 10.0

_sync_client: redis.Redis | None = None
_sync_lock = threading.Lock()


def sync_redis() -> redis.Redis:
    """The process-wide blocking Redis client (thread-safe pool of at most CHATSITE_REDIS_MAX_CONNECTIONS
    connections), created on first use.

    Commands that fail to connect are retried with exponential backoff for about
    `CHATSITE_REDIS_RETRY_SECONDS`, so a Redis restart delays the worker's writes instead of failing them.
    """
    global _sync_client
    with _sync_lock:
        if _sync_client is None:
            retries = max(1, int(settings.CHATSITE_REDIS_RETRY_SECONDS / 0.5))
            pool = redis.BlockingConnectionPool.from_url(
                settings.REDIS_URL,
                max_connections=settings.CHATSITE_REDIS_MAX_CONNECTIONS,
                timeout=POOL_WAIT_SECONDS,
                decode_responses=True,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
                retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            )
            _sync_client = redis.Redis(connection_pool=pool)
        return _sync_client


# One asyncio client per event loop: redis.asyncio connections belong to the loop that opened them.
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = weakref.WeakKeyDictionary()


def async_redis() -> redis.asyncio.Redis:
    """The asyncio Redis client of the running event loop (a pool of at most CHATSITE_REDIS_MAX_CONNECTIONS
    connections), created on first use."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=settings.CHATSITE_REDIS_MAX_CONNECTIONS,
            timeout=POOL_WAIT_SECONDS,
            decode_responses=True,
            # A pooled connection that Redis closed (a restart) is opened again and the command sent again, a
            # few times in the first second, before the caller sees the error.
            retry=AsyncRetry(ExponentialBackoff(cap=0.5, base=0.05), 3),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            # The memory bus's reader aside, nothing blocks on this client; a reply comes within this or never.
            socket_timeout=settings.CHATSITE_SSE_PING_SECONDS + 10,
        )
        client = redis.asyncio.Redis(connection_pool=pool)
        _async_clients[loop] = client
    return client


def _bench_timestamps() -> bool:
    """Whether events carry `t` (the publisher's `time.time()` at XADD, seconds), for `bench/relay.py` only.

    Off by default: `CHATSITE_BENCH_TIMESTAMPS` (setting, or environment variable) set to 1 turns it on.
    """
    value = getattr(settings, "CHATSITE_BENCH_TIMESTAMPS", None)
    if value is None:
        value = os.environ.get("CHATSITE_BENCH_TIMESTAMPS", "0")
    return str(value).strip().lower() in ("1", "true", "yes", "on")


_bus: EventBus | None = None
_bus_lock = threading.Lock()


def bus() -> EventBus:
    """The process's event bus: Redis in full mode, memory in embedded mode (`CHATSITE_EMBEDDED`)."""
    global _bus
    with _bus_lock:
        if _bus is None:
            _bus = MemoryBus() if settings.CHATSITE_EMBEDDED else RedisBus(sync_redis(), async_redis)
        return _bus


class StreamClosed(Exception):
    """Someone else ended this reply's stream (a cancel that could not wait, or the watchdog)."""


class Published(NamedTuple):
    """What `EventPublisher.publish` did: the new entry's id, and whether a cancel was requested."""

    entry_id: str
    cancel_requested: bool


class EventPublisher:
    """Appends a reply's events to its Redis Stream (used by the worker).

    Entry ids are chosen here (`<ms>-<seq>`, increasing) rather than by Redis, so that a write retried
    after a lost answer cannot add the same event twice: Redis refuses an id that is not above the last.

    Args:
        event_bus: the process's bus by default.
    """

    def __init__(self, event_bus: EventBus | None = None) -> None:
        self.bus = event_bus or bus()
        self._last: dict[str, tuple[int, int]] = {}
        self._timestamps = _bench_timestamps()

    def continue_after(self, message_id: str, entry_id: str | None) -> None:
        """Make the next ids of `message_id` follow `entry_id` (when taking over another worker's reply)."""
        if entry_id:
            self._last[message_id] = max(self._last.get(message_id, (0, 0)), parse_entry_id(entry_id))

    def _next_id(self, message_id: str) -> str:
        now = time.time_ns() // 1_000_000
        last_ms, last_seq = self._last.get(message_id, (0, 0))
        next_id = (now, 0) if now > last_ms else (last_ms, last_seq + 1)
        self._last[message_id] = next_id
        return f"{next_id[0]}-{next_id[1]}"

    def publish(self, message_id: str, event: Event) -> Published:
        """Append one event; also report whether a cancel has been requested (same round trip).

        The terminal event gives the stream its expiry (CHATSITE_STREAM_TTL_SECONDS) in the same step, so a
        stream never lingers forever and never expires before its end is in.

        Raises:
            StreamClosed: another process already ended the stream (its entries are past ours).
            redis.RedisError: when Redis stays unreachable past the retry budget.
        """
        key = stream_key(message_id)
        entry_id = self._next_id(message_id)
        if self._timestamps:
            event = {**event, "t": time.time()}
        fields = {"type": event["type"], "data": encode(event)}
        terminal = event["type"] in TERMINAL_TYPES
        written, cancelled = self.bus.append(
            key,
            fields,
            entry_id=entry_id,
            maxlen=settings.CHATSITE_STREAM_MAXLEN,
            expire_seconds=settings.CHATSITE_STREAM_TTL_SECONDS if terminal else None,
            check_flag=cancel_key(message_id),
        )
        if written is None:
            # Either our own earlier attempt landed (its answer was lost), or another writer is past us.
            landed = self.bus.entries(key, entry_id, entry_id)
            if not (landed and landed[0][1] == fields):
                raise StreamClosed(f"the stream of {message_id} was ended elsewhere")
        return Published(entry_id, cancelled)


def publish_once(message_id: str, event: Event) -> str:
    """Append an event with an id chosen by the bus (for one-off writers: cancel, watchdog, recovery).

    Raises:
        redis.RedisError: when Redis cannot be reached.
    """
    terminal = event["type"] in TERMINAL_TYPES
    entry_id, _ = bus().append(
        stream_key(message_id),
        {"type": event["type"], "data": encode(event)},
        maxlen=settings.CHATSITE_STREAM_MAXLEN,
        expire_seconds=settings.CHATSITE_STREAM_TTL_SECONDS if terminal else None,
    )
    return entry_id


@dataclass
class StreamSnapshot:
    """What a reply's stream holds now: entry types in order, the text of its `content` events, last id."""

    types: list[str]
    text: str
    last_id: str | None

    @property
    def started(self) -> bool:
        return "start" in self.types

    @property
    def has_content(self) -> bool:
        return "content" in self.types

    @property
    def ended(self) -> bool:
        return any(t in TERMINAL_TYPES for t in self.types)

    @property
    def last_ms(self) -> int | None:
        """When the last event was written (ms since the epoch), from its entry id."""
        return parse_entry_id(self.last_id)[0] if self.last_id else None


def snapshot(message_id: str) -> StreamSnapshot:
    """Read a reply's whole stream (at most CHATSITE_STREAM_MAXLEN entries)."""
    entries = bus().entries(stream_key(message_id))
    types = [fields["type"] for _, fields in entries]
    text = "".join(json.loads(f["data"]).get("delta", "") for _, f in entries if f["type"] == "content")
    return StreamSnapshot(types, text, entries[-1][0] if entries else None)


def request_cancel(message_id: str) -> None:
    """Ask the worker generating `message_id` to stop at its next delta."""
    bus().set_flag(cancel_key(message_id), "1", settings.CHATSITE_STREAM_TTL_SECONDS)


def cancel_requested(message_id: str) -> bool:
    """Whether someone asked to stop `message_id`."""
    return bus().flag(cancel_key(message_id)) is not None


def mark_requeued(message_id: str, seconds: float) -> bool:
    """Note that `message_id` was sent to the queue again; False if that already happened in `seconds`."""
    key = f"{settings.CHATSITE_STREAM_KEY_PREFIX}{message_id}:requeued"
    return bus().set_flag(key, "1", seconds, only_if_absent=True)


def heartbeat_alive(message_id: str) -> bool:
    """Whether a live worker is generating `message_id` (its heartbeat key has not expired)."""
    return bus().flag(heartbeat_key(message_id)) is not None


async def heartbeat_alive_async(message_id: str) -> bool:
    """`heartbeat_alive`, on the event loop (one Redis GET, no thread).

    Raises:
        redis.RedisError: Redis cannot be reached.
    """
    return await bus().aflag(heartbeat_key(message_id)) is not None


class _Beater:
    """One thread per process that keeps every running reply's heartbeat key alive, all in one round trip per
    interval: a worker carrying a thousand replies beats a thousand keys with one pipelined write, not a
    thousand threads (or greenlets) each waking on its own."""

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, key: str) -> None:
        with self.lock:
            self.keys[key] = self.keys.get(key, 0) + 1
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="heartbeats", daemon=True)
                self.thread.start()

    def remove(self, key: str) -> None:
        with self.lock:
            left = self.keys.get(key, 1) - 1
            if left > 0:
                self.keys[key] = left
            else:
                self.keys.pop(key, None)

    def _run(self) -> None:
        while True:
            interval = settings.CHATSITE_HEARTBEAT_SECONDS
            time.sleep(interval)
            with self.lock:
                keys = list(self.keys)
            if not keys:
                continue
            try:
                bus().set_flags(keys, _worker_name(), interval * 3)
            except redis.RedisError:
                logger.warning("heartbeats of %d replies could not reach Redis", len(keys))


_beater = _Beater()


def _worker_name() -> str:
    # The value says who generates the reply (`host:pid`), for operators and tests.
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """Keeps `heartbeat_key(message_id)` alive while a reply is generated (a context manager).

    The key expires `3 * CHATSITE_HEARTBEAT_SECONDS` after the last beat, so a worker that dies (even by
    SIGKILL) is noticed within that time. The beats of all the process's replies are written together by one
    background thread (`_Beater`).
    """

    def __init__(self, message_id: str) -> None:
        self.key = heartbeat_key(message_id)
        self.interval = settings.CHATSITE_HEARTBEAT_SECONDS

    def __enter__(self) -> Heartbeat:
        bus().set_flag(self.key, _worker_name(), self.interval * 3)
        _beater.add(self.key)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _beater.remove(self.key)
        try:
            bus().delete(self.key)
        except redis.RedisError:
            logger.warning("could not clear heartbeat %s", self.key)


async def read_event_batches(
    message_id: str, last_id: str = "0-0", *, idle_seconds: float | None = None
) -> AsyncIterator[list[tuple[str, str, str]]]:
    """Follow a reply's stream from after `last_id` until its terminal event, in batches.

    Yields lists of `(entry_id, type, data_json)`, in order: each list holds every event that had arrived
    when the reader woke, so a busy stream is relayed in few writes. Yields an empty list each time
    `idle_seconds` (default `CHATSITE_SSE_PING_SECONDS`) pass with no event, so the caller can send a
    keep-alive. Returns after the batch that holds the terminal event (which ends that batch). With Redis,
    every reader of the event loop shares one `StreamMux` (one pub/sub connection); in embedded mode it
    reads the memory bus.

    Raises:
        redis.RedisError: when Redis cannot be reached.
    """
    idle = settings.CHATSITE_SSE_PING_SECONDS if idle_seconds is None else idle_seconds
    event_bus = bus()
    key = stream_key(message_id)
    if isinstance(event_bus, RedisBus):
        mux = stream_mux()
        sub = mux.subscribe(key, last_id)

        async def next_entries() -> list[tuple[str, dict[str, str]]]:
            return await sub.get(idle)
    else:
        sub = None

        async def next_entries() -> list[tuple[str, dict[str, str]]]:
            nonlocal last_id
            found = await event_bus.read(key, last_id, count=500, block_seconds=idle)
            if found:
                last_id = found[-1][0]
            return found

    try:
        while True:
            batch = []
            for entry_id, fields in await next_entries():
                batch.append((entry_id, fields["type"], fields["data"]))
                if fields["type"] in TERMINAL_TYPES:
                    yield batch
                    return
            yield batch
    finally:
        if sub is not None:
            mux.unsubscribe(sub)


async def read_events(
    message_id: str, last_id: str = "0-0", *, idle_seconds: float | None = None
) -> AsyncIterator[tuple[str, str, str] | None]:
    """Follow a reply's stream from after `last_id` until its terminal event, one event at a time.

    Yields `(entry_id, type, data_json)` for each event in order, and `None` each time `idle_seconds`
    (default `CHATSITE_SSE_PING_SECONDS`) pass with no event. Returns after yielding the terminal event.
    See `read_event_batches`.

    Raises:
        redis.RedisError: when Redis cannot be reached.
    """
    batches = read_event_batches(message_id, last_id, idle_seconds=idle_seconds)
    try:
        async for batch in batches:
            if not batch:
                yield None
            for item in batch:
                yield item
    finally:
        await batches.aclose()
