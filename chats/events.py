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
import contextlib
import json
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis
import redis.asyncio
from django.conf import settings
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from chats.bus import EventBus, MemoryBus, RedisBus, parse_entry_id

logger = logging.getLogger(__name__)

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


def sources_event(sources: list[dict[str, Any]]) -> Event:
    """The passages an answer draws on, sent once, before the first `content` event (seed 002).

    Each item: `{id, number, title, snippet, score, documentId, collectionId, page, start, end}`: `number` is
    how the answer cites it ([1]); `score` is the similarity in [0, 1]; `page` (PDF, from 1) or null;
    `start`/`end` are character offsets into the document's text.
    """
    return {"type": SOURCES, "sources": sources}


def content_event(delta: str) -> Event:
    """A piece of the reply's text; clients append the deltas in order."""
    return {"type": CONTENT, "delta": delta}


def end_event(
    *, message_id: str, finish_reason: str, prompt_tokens: int, completion_tokens: int, quota_left: int | None = None
) -> Event:
    """The terminal event of a reply that finished: `finishReason` is `stop`, `length` or `cancelled`.

    `quotaLeft` (tokens the user may still use today) is there only for users with a daily quota.
    """
    event = {
        "type": END,
        "messageId": message_id,
        "finishReason": finish_reason,
        "usage": {"promptTokens": prompt_tokens, "completionTokens": completion_tokens},
    }
    if quota_left is not None:
        event["quotaLeft"] = quota_left
    return event


def error_event(*, code: str, message: str, retryable: bool) -> Event:
    """The terminal event of a reply that failed: a machine `error` code and a `message` for people."""
    return {"type": ERROR, "error": code, "message": message, "retryable": retryable}


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


_sync_client: redis.Redis | None = None
_sync_lock = threading.Lock()


def sync_redis() -> redis.Redis:
    """The process-wide blocking Redis client (thread-safe connection pool), created on first use.

    Commands that fail to connect are retried with exponential backoff for about
    `CHATSITE_REDIS_RETRY_SECONDS`, so a Redis restart delays the worker's writes instead of failing them.
    """
    global _sync_client
    with _sync_lock:
        if _sync_client is None:
            retries = max(1, int(settings.CHATSITE_REDIS_RETRY_SECONDS / 0.5))
            _sync_client = redis.Redis.from_url(
                settings.REDIS_URL,
                decode_responses=True,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
                retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            )
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
        return START in self.types

    @property
    def has_content(self) -> bool:
        return CONTENT in self.types

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
    text = "".join(json.loads(f["data"]).get("delta", "") for _, f in entries if f["type"] == CONTENT)
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


class Heartbeat:
    """Keeps `heartbeat_key(message_id)` alive from a background thread while a reply is generated.

    The key expires `3 * CHATSITE_HEARTBEAT_SECONDS` after the last beat, so a worker that dies (even by
    SIGKILL) is noticed within that time. Use as a context manager.
    """

    def __init__(self, message_id: str) -> None:
        self.key = heartbeat_key(message_id)
        self.interval = settings.CHATSITE_HEARTBEAT_SECONDS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{message_id}", daemon=True)

    def _beat(self) -> None:
        # The value says who generates the reply (`host:pid`), for operators and tests.
        bus().set_flag(self.key, f"{socket.gethostname()}:{os.getpid()}", self.interval * 3)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except redis.RedisError:
                logger.warning("heartbeat %s could not reach Redis", self.key)

    def __enter__(self) -> Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            bus().delete(self.key)
        except redis.RedisError:
            logger.warning("could not clear heartbeat %s", self.key)


class _Subscriber:
    """One reader of one stream inside a `StreamMux`: entries after `after` are queued here for it."""

    __slots__ = ("after", "after_key", "entries", "error", "event", "key")

    def __init__(self, key: str, after: str) -> None:
        self.key = key
        self.after = after
        self.after_key = parse_entry_id(after)
        self.entries: list[tuple[str, dict[str, str]]] = []
        self.error: BaseException | None = None
        self.event = asyncio.Event()

    async def get(self, timeout: float) -> list[tuple[str, dict[str, str]]]:
        """The entries that arrived since the last call, waiting up to `timeout` seconds (maybe none).

        Raises:
            redis.RedisError: the multiplexed reader lost Redis.
        """
        if not self.entries and self.error is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()
        if self.error is not None:
            raise self.error
        found, self.entries = self.entries, []
        return found


class StreamMux:
    """One blocking XREAD, on one Redis connection, for every stream an event loop's readers follow.

    A web process holds one of these per event loop (daphne runs one), so open streams cost no Redis
    connection each, and nothing wakes per stream: the single reader wakes when any followed stream gets
    entries (or every `block_ms` when all are idle) and hands each reader the entries after its own last id.
    A reader that subscribes while the XREAD blocks gets its stream added at once: the XREAD is cut short
    with CLIENT UNBLOCK from another connection, then issued again with the new key.

    If Redis fails, every current subscriber gets the error from `get()` and the reader stops; the next
    subscription starts it again on a new connection.

    Args:
        url: the Redis URL.
        block_ms: how long one XREAD blocks when nothing arrives, in milliseconds.
        count: the most entries one XREAD takes per stream.
    """

    def __init__(self, url: str, *, block_ms: int = 5000, count: int = 500) -> None:
        self.url = url
        self.block_ms = block_ms
        self.count = count
        self._subs: dict[str, set[_Subscriber]] = {}
        self._task: asyncio.Task | None = None
        self._client_id: int | None = None
        self._version = 0  # bumped when a key is added; the XREAD in flight knows the version it was built at
        self._in_flight: int | None = None
        self._kicking = False

    def subscribe(self, key: str, after: str) -> _Subscriber:
        """Follow `key` from after the entry id `after`; call `unsubscribe` when done."""
        sub = _Subscriber(key, after)
        subs = self._subs.get(key)
        if subs is None:
            self._subs[key] = {sub}
            self._version += 1
        else:
            subs.add(sub)
            self._version += 1  # its cursor may be older than the key's current one
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        elif not self._kicking and self._in_flight is not None:
            self._kicking = True
            asyncio.get_running_loop().create_task(self._kick())
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        """Stop following for `sub` (its key leaves the next XREAD when nobody else follows it)."""
        subs = self._subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.key]

    async def _kick(self) -> None:
        # CLIENT UNBLOCK only works once the XREAD is blocked in Redis: retry briefly while ours is in flight
        # but may not have reached Redis yet, and stop as soon as an XREAD with the new keys is issued.
        try:
            client = async_redis()
            for _ in range(200):
                if self._in_flight is None or self._in_flight >= self._version or self._client_id is None:
                    return
                if await client.client_unblock(self._client_id):
                    return
                await asyncio.sleep(0.001)
        except redis.RedisError:
            logger.warning("could not wake the stream reader; new streams wait for its next turn")
        finally:
            self._kicking = False

    async def _run(self) -> None:
        me = asyncio.current_task()
        connection = redis.asyncio.Redis.from_url(
            self.url,
            decode_responses=True,
            single_connection_client=True,
            socket_timeout=self.block_ms / 1000 + 10,
        )
        client_id = None
        try:
            client_id = self._client_id = await connection.client_id()
            while self._subs:
                streams = {}
                for key, subs in self._subs.items():
                    if len(subs) == 1:
                        streams[key] = next(iter(subs)).after
                    else:
                        streams[key] = min(subs, key=lambda s: s.after_key).after
                self._in_flight = self._version
                try:
                    response = await connection.xread(streams, count=self.count, block=self.block_ms)
                finally:
                    self._in_flight = None
                for key, found in response or ():
                    for sub in self._subs.get(key, ()):
                        new = [e for e in found if parse_entry_id(e[0]) > sub.after_key]
                        if new:
                            sub.entries.extend(new)
                            sub.after = new[-1][0]
                            sub.after_key = parse_entry_id(sub.after)
                            sub.event.set()
            # No await between the loop's last check and this: a subscriber that comes later starts a new run.
            if self._task is me:
                self._task = None
        except (redis.RedisError, OSError) as exc:
            if self._task is me:
                self._task = None
            error = exc if isinstance(exc, redis.RedisError) else redis.ConnectionError(str(exc))
            for subs in self._subs.values():
                for sub in subs:
                    sub.error = error
                    sub.event.set()
            self._subs.clear()
        finally:
            if self._client_id == client_id:
                self._client_id = None
            with contextlib.suppress(Exception):
                await connection.aclose()


_muxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamMux] = weakref.WeakKeyDictionary()


def stream_mux() -> StreamMux:
    """The `StreamMux` of the running event loop, created on first use (full mode only)."""
    loop = asyncio.get_running_loop()
    mux = _muxes.get(loop)
    if mux is None:
        mux = _muxes[loop] = StreamMux(settings.REDIS_URL)
    return mux


async def read_events(
    message_id: str, last_id: str = "0-0", *, idle_seconds: float | None = None
) -> AsyncIterator[tuple[str, str, str] | None]:
    """Follow a reply's stream from after `last_id` until its terminal event.

    Yields `(entry_id, type, data_json)` for each event in order, and `None` each time `idle_seconds`
    (default `CHATSITE_SSE_PING_SECONDS`) pass with no event, so the caller can send a keep-alive.
    Returns after yielding the terminal event. With Redis, every reader of the event loop shares one
    `StreamMux` (one connection, one XREAD); in embedded mode it reads the memory bus.

    Raises:
        redis.RedisError: when Redis cannot be reached.
    """
    idle = settings.CHATSITE_SSE_PING_SECONDS if idle_seconds is None else idle_seconds
    event_bus = bus()
    key = stream_key(message_id)
    if not isinstance(event_bus, RedisBus):
        while True:
            found = await event_bus.read(key, last_id, count=500, block_seconds=idle)
            if not found:
                yield None
                continue
            for entry_id, fields in found:
                last_id = entry_id
                yield entry_id, fields["type"], fields["data"]
                if fields["type"] in TERMINAL_TYPES:
                    return
    mux = stream_mux()
    sub = mux.subscribe(key, last_id)
    try:
        while True:
            found = await sub.get(idle)
            if not found:
                yield None
                continue
            for entry_id, fields in found:
                yield entry_id, fields["type"], fields["data"]
                if fields["type"] in TERMINAL_TYPES:
                    return
    finally:
        mux.unsubscribe(sub)
