"""The relay's multiplexed reader: every open stream of a web process followed through one Redis pub/sub
connection (`StreamMux`), one per event loop (`stream_mux()`).

Workers append each event with one script that XADDs it and PUBLISHes it on a channel named like the stream
(chats.bus). A new reader costs one SUBSCRIBE plus an XRANGE of what it missed (batched with other new
readers'); an event costs one pub/sub message. `chats.events.read_event_batches` is how callers use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import weakref

import redis
import redis.asyncio
from django.conf import settings
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff

from chats.bus import decode_entry, parse_entry_id

logger = logging.getLogger(__name__)


class _Subscriber:
    """One reader of one stream inside a `StreamMux`: entries after `after` are queued here for it.

    Until its backlog has been read (`ready`), entries that arrive live are held apart (`held`), and joined
    after the backlog, so that each entry reaches the reader once and in order.
    """

    __slots__ = ("after", "after_key", "entries", "error", "event", "held", "key", "ready")

    def __init__(self, key: str, after: str) -> None:
        self.key = key
        self.after = after
        self.after_key = parse_entry_id(after)
        self.entries: list[tuple[str, dict[str, str]]] = []
        self.held: list[tuple[str, dict[str, str]]] = []
        self.ready = False
        self.error: BaseException | None = None
        self.event = asyncio.Event()

    def push(self, found: list[tuple[str, dict[str, str]]]) -> None:
        """Queue the entries of `found` that are after this reader's last one (`found` is in id order)."""
        new = [e for e in found if parse_entry_id(e[0]) > self.after_key]
        if new:
            self.entries.extend(new)
            self.after = new[-1][0]
            self.after_key = parse_entry_id(self.after)
            self.event.set()

    def fail(self, error: BaseException) -> None:
        """Make the next `get()` raise: a `redis.ResponseError` when Redis refused this reader's own command
        (`error` is one), else a `redis.ConnectionError`, each caused by `error`."""
        self.error = error
        self.event.set()

    async def get(self, timeout: float) -> list[tuple[str, dict[str, str]]]:
        """The entries that arrived since the last call, waiting up to `timeout` seconds (maybe none).

        Raises:
            redis.ResponseError: Redis refused to read this reader's stream (reading again cannot help).
            redis.ConnectionError: the multiplexed reader lost Redis (reading again later may work).
        """
        if not self.entries and self.error is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()
        if self.error is not None:
            # A new exception for each reader: one object raised in many tasks would pile up their tracebacks.
            if isinstance(self.error, redis.ResponseError):
                raise redis.ResponseError(f"Redis refused to read {self.key}: {self.error}") from self.error
            raise redis.ConnectionError(f"the stream reader lost Redis: {self.error}") from self.error
        found, self.entries = self.entries, []
        return found


# TCP keepalive for the pub/sub connection (Linux names; elsewhere the system's defaults): first probe after 10 s
# of silence, then every 5 s, 3 unanswered probes and the connection is dead.
_KEEPALIVE = {
    option: value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if (option := getattr(socket, name, None)) is not None
}


class StreamMux:
    """Every stream an event loop's readers follow, on two Redis connections, whatever their number.

    Writers append through `chats.bus.APPEND_SCRIPT`, which publishes each new entry on a pub/sub channel
    named like its stream, in the same atomic step as the XADD. The mux holds one pub/sub connection,
    subscribed to the channel of every followed stream, and hands each message to that stream's readers: an
    entry costs one message, and a new reader costs one SUBSCRIBE, not a new blocking XREAD over every
    stream. A new reader's backlog (the entries after its `after` id, written before its subscription took
    effect) is read with XRANGE once Redis has confirmed the subscription, on a second, pooled connection,
    batched with other new readers' in one pipeline; entries arriving live meanwhile are held and joined after
    it, so each entry is delivered once and in order.

    A stream nobody follows any more is unsubscribed. The connection stays open while nothing is followed
    (it costs Redis nothing, and the next reply's reader need not connect again). If Redis fails, every
    current reader gets the error from `get()` (they resume from their last id: pub/sub alone would lose
    what was published meanwhile) and the next subscription starts again on a new connection.

    Args:
        url: the Redis URL.
        count: the most entries one backlog read takes per stream (more are read in further rounds).
    """

    def __init__(self, url: str, *, count: int = 500) -> None:
        self.url = url
        self.count = count
        self._subs: dict[str, set[_Subscriber]] = {}
        # Each followed channel: "subscribing" (SUBSCRIBE sent), "live" (confirmed), "leaving" (UNSUBSCRIBE sent).
        self._channels: dict[str, str] = {}
        self._pubsub: redis.asyncio.client.PubSub | None = None
        self._reader: asyncio.Task | None = None
        self._commands: list[tuple[str, str]] = []  # (SUBSCRIBE or UNSUBSCRIBE, channel), in order
        self._sender: asyncio.Task | None = None
        self._backlog: dict[_Subscriber, None] = {}  # readers whose backlog is to be read, in arrival order
        self._fetcher: asyncio.Task | None = None
        # Since when Redis has been lost (monotonic seconds), or None: an outage is logged when it starts and
        # when it ends, not at each of the readers' attempts in between.
        self._lost_since: float | None = None

    def subscribe(self, key: str, after: str) -> _Subscriber:
        """Follow `key` from after the entry id `after`; call `unsubscribe` when done."""
        sub = _Subscriber(key, after)
        self._subs.setdefault(key, set()).add(sub)
        state = self._channels.get(key)
        if state == "live":
            self._read_backlog(sub)
        elif state is None:
            self._channels[key] = "subscribing"
            self._command("SUBSCRIBE", key)
        # "subscribing": its confirmation starts the backlog read; "leaving": subscribed again once confirmed.
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        """Stop following for `sub` (its channel is left when nobody else follows it)."""
        self._backlog.pop(sub, None)
        subs = self._subs.get(sub.key)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[sub.key]
            if self._channels.get(sub.key) == "live":
                self._channels[sub.key] = "leaving"
                self._command("UNSUBSCRIBE", sub.key)
            # "subscribing": left once its confirmation comes.

    # --- the pub/sub connection ---

    def _command(self, name: str, channel: str) -> None:
        self._commands.append((name, channel))
        if self._pubsub is None:
            self._pubsub = redis.asyncio.Redis.from_url(
                self.url,
                decode_responses=True,
                # A pub/sub connection waits as long as nothing is published; a dead one must fail, not be
                # silently reconnected (what was published meanwhile would be lost): no timeout, no retry. TCP
                # keepalives find a peer that vanished without closing the connection within about 25 s.
                socket_timeout=None,
                socket_keepalive=True,
                socket_keepalive_options=_KEEPALIVE,
                retry=AsyncRetry(ExponentialBackoff(), 0),
            ).pubsub()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send(self._pubsub))

    async def _send(self, pubsub) -> None:
        # Consecutive commands of one kind go out as one SUBSCRIBE (or UNSUBSCRIBE) naming all their channels.
        try:
            while self._commands and pubsub is self._pubsub:
                name = self._commands[0][0]
                run = 0
                while run < len(self._commands) and self._commands[run][0] == name and run < 1000:
                    run += 1
                channels = [c for _, c in self._commands[:run]]
                del self._commands[:run]
                if name == "SUBSCRIBE":
                    await pubsub.subscribe(*channels)
                else:
                    await pubsub.unsubscribe(*channels)
                if self._reader is None or self._reader.done():
                    self._reader = asyncio.get_running_loop().create_task(self._read(pubsub))
        except (redis.RedisError, OSError) as exc:
            self._lost(pubsub, exc)

    async def _read(self, pubsub) -> None:
        try:
            while pubsub is self._pubsub:
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind, channel = message["type"], message["channel"]
                if kind == "message":
                    subs = self._subs.get(channel)
                    if subs:
                        entry = decode_entry(message["data"])
                        for sub in subs:
                            if sub.ready:
                                sub.push([entry])
                            else:
                                sub.held.append(entry)
                elif kind == "subscribe":
                    self._subscribed(channel)
                elif kind == "unsubscribe":
                    self._unsubscribed(channel)
        except (redis.RedisError, OSError) as exc:
            self._lost(pubsub, exc)

    def _subscribed(self, channel: str) -> None:
        if self._lost_since is not None:
            logger.info("stream reader has Redis back after %.1f s", time.monotonic() - self._lost_since)
            self._lost_since = None
        if self._channels.get(channel) != "subscribing":
            return
        if channel in self._subs:
            self._channels[channel] = "live"
            for sub in self._subs[channel]:
                if not sub.ready:
                    self._read_backlog(sub)
        else:  # everyone left while the SUBSCRIBE was on its way
            self._channels[channel] = "leaving"
            self._command("UNSUBSCRIBE", channel)

    def _unsubscribed(self, channel: str) -> None:
        if self._channels.get(channel) != "leaving":
            return
        if channel in self._subs:  # followed again while the UNSUBSCRIBE was on its way
            self._channels[channel] = "subscribing"
            self._command("SUBSCRIBE", channel)
        else:
            del self._channels[channel]

    def _lost(self, pubsub, exc: BaseException) -> None:
        if pubsub is not self._pubsub:
            return
        if self._lost_since is None:
            self._lost_since = time.monotonic()
            logger.warning("stream reader lost Redis: %s", exc)
        for subs in self._subs.values():
            for sub in subs:
                sub.fail(exc)
        self._subs.clear()
        self._channels.clear()
        self._commands.clear()
        self._backlog.clear()
        self._pubsub = None
        asyncio.get_running_loop().create_task(_close_quietly(pubsub))

    # --- backlogs ---

    def _read_backlog(self, sub: _Subscriber) -> None:
        self._backlog[sub] = None
        if self._fetcher is None or self._fetcher.done():
            self._fetcher = asyncio.get_running_loop().create_task(self._fetch())

    async def _fetch(self) -> None:
        client = _async_redis()
        while self._backlog:
            batch = list(self._backlog)
            self._backlog.clear()
            try:
                pipe = client.pipeline(transaction=False)
                for sub in batch:
                    pipe.xrange(sub.key, min=f"({sub.after}", count=self.count)
                # Each reader gets its own command's answer or error: one reader's refused XRANGE (a bad id, a
                # key of the wrong type) must not fail the others batched with it.
                results = await pipe.execute(raise_on_error=False)
            except (redis.RedisError, OSError) as exc:
                # The connection itself failed: no reader got an answer.
                for sub in batch:
                    sub.fail(exc)
                continue
            for sub, found in zip(batch, results, strict=True):
                if sub not in self._subs.get(sub.key, ()):
                    continue  # it left meanwhile
                if isinstance(found, Exception):
                    sub.fail(found)
                    continue
                sub.push(found)
                if len(found) >= self.count:
                    self._backlog[sub] = None  # more to read
                    continue
                held, sub.held = sub.held, []
                sub.ready = True
                sub.push(held)


async def _close_quietly(pubsub) -> None:
    with contextlib.suppress(Exception):
        await pubsub.aclose()


_muxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamMux] = weakref.WeakKeyDictionary()


def stream_mux() -> StreamMux:
    """The `StreamMux` of the running event loop, created on first use (full mode only)."""
    loop = asyncio.get_running_loop()
    mux = _muxes.get(loop)
    if mux is None:
        mux = _muxes[loop] = StreamMux(settings.REDIS_URL)
    return mux


def _async_redis() -> redis.asyncio.Redis:
    from chats.events import async_redis  # the process's shared pool (chats.events imports this module)

    return async_redis()
