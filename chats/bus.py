"""The event bus under `chats.events`: append-only streams of entries, plus small flags with a lifetime.

Two backends behind one interface:
- `RedisBus` (full mode): Redis Streams (XADD, XRANGE, XREAD) and keys with a TTL, shared by every web and
  worker process;
- `MemoryBus` (embedded mode, `CHATSITE_EMBEDDED`): the same semantics inside one process, for a chatsite
  that runs with no Redis at all.

Entry ids are `"<ms>-<seq>"` strings, increasing within a stream, as in Redis. Each entry's fields are a
`dict[str, str]`.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import redis

Entry = tuple[str, dict[str, str]]


# The largest value of either part of a Redis stream entry id (each is an unsigned 64-bit integer).
MAX_ID_PART = 2**64 - 1
# Both parts in canonical decimal: ASCII digits, no sign, no leading zero, no space, at most 20 digits. A bare
# `<ms>` (which Redis reads as `<ms>-0` or `<ms>-<max>` depending on the command) and the special ids (`-`, `+`,
# `$`, `>`) are refused: chatsite only ever sends full ids, so anything else did not come from it.
_ENTRY_ID = re.compile(r"(0|[1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})", re.ASCII)


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """`"<ms>-<seq>"` -> `(ms, seq)`, for comparing stream entry ids.

    Both parts are canonical decimal numbers (ASCII digits, no sign or leading zero) of at most `MAX_ID_PART`,
    as Redis Streams allow (https://redis.io/docs/latest/develop/data-types/streams/#entry-ids).

    Raises:
        ValueError: when `entry_id` is not of that form, or a part is above `MAX_ID_PART`.
    """
    found = _ENTRY_ID.fullmatch(entry_id) if isinstance(entry_id, str) else None
    if found is None:
        raise ValueError(f"not a stream entry id: {entry_id!r}")
    ms, seq = int(found[1]), int(found[2])
    if ms > MAX_ID_PART or seq > MAX_ID_PART:
        raise ValueError(f"stream entry id out of range: {entry_id!r}")
    return ms, seq


class EventBus(ABC):
    """Streams and flags, shared by whoever publishes and reads a reply's events."""

    @abstractmethod
    def append(
        self,
        stream: str,
        fields: dict[str, str],
        *,
        entry_id: str | None = None,
        maxlen: int,
        expire_seconds: float | None = None,
        check_flag: str | None = None,
        fence: tuple[str, int] | None = None,
    ) -> tuple[str | None, bool]:
        """Append an entry to `stream` (ids chosen by the bus when `entry_id` is None).

        `expire_seconds` gives the whole stream a lifetime from now. `fence` is `(key, token)`: the entry is
        refused when the number stored at `key` (see `raise_floor`) is at least `token`, in the same atomic
        step; an entry written with the token `CLOSED` sets that number to `CLOSED` (chats.fencing: a stream's
        terminal event, so a second one is refused). Returns `(entry_id, flag_set)`: the id is None when the
        entry was refused (an `entry_id` not above the stream's last entry, or the fence); `flag_set` tells
        whether the flag `check_flag` exists (checked in the same round trip).
        """

    @abstractmethod
    def entries(self, stream: str, start: str = "-", end: str = "+") -> list[Entry]:
        """The entries from `start` to `end` (ids, inclusive; `-` and `+` for the ends), oldest first."""

    @abstractmethod
    def newest(self, stream: str) -> Entry | None:
        """The last entry of `stream`, or None when the stream does not exist."""

    @abstractmethod
    def delete(self, *keys: str) -> None:
        """Remove streams or flags."""

    @abstractmethod
    def set_flag(self, key: str, value: str, seconds: float, *, only_if_absent: bool = False) -> bool:
        """Set a flag that disappears after `seconds`; with `only_if_absent`, only if it is not set.

        Returns whether the flag was set.
        """

    def set_flags(self, keys: list[str], value: str, seconds: float) -> None:
        """Set each flag of `keys` to `value`, disappearing after `seconds` (one round trip where the bus can)."""
        for key in keys:
            self.set_flag(key, value, seconds)

    @abstractmethod
    def flag(self, key: str) -> str | None:
        """The flag's value, or None when it is not set (or has expired)."""

    @abstractmethod
    def raise_floor(self, key: str, value: int, seconds: float) -> int:
        """Set the number at `key` to `value` unless it is already at least that (atomically); it disappears
        `seconds` after its last rise. Returns the number now stored."""

    async def aflag(self, key: str) -> str | None:
        """`flag`, for the event loop (the relay); the default runs the blocking call."""
        return self.flag(key)

    @abstractmethod
    async def read(self, stream: str, after: str, *, count: int, block_seconds: float) -> list[Entry]:
        """Wait up to `block_seconds` for entries after the id `after`; return up to `count` (maybe none)."""


# The fence token of a stream's terminal event (chats.fencing): above every writer's, so that once a terminal
# event is in, nothing more is appended, not even a second terminal event.
CLOSED = 2**52

# XADD, and in the same atomic step PUBLISH the new entry on the channel named like the stream, so that readers
# that follow many streams (chats.mux.StreamMux) learn of each entry without polling or re-issuing a
# blocking XREAD over every stream they follow. The message is the entry id, then the fields' names and values,
# joined by NUL characters (see `decode_entry`). KEYS: the stream, then optionally a flag key whose existence
# is reported (or '' for none), then optionally a fence key. ARGV: the entry id (or `*`), MAXLEN (approximate),
# the expiry in seconds (or ''), the writer's fence token (or ''), then field names and values. Returns
# {entry id, flag}; the id is nil when the id asked for is not above the stream's last, or when the number at
# the fence key is at least the token (chats.fencing). An entry written with the token CLOSED sets the fence
# key to CLOSED (with the stream's expiry).
APPEND_SCRIPT = """
local xadd = {'XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], ARGV[1]}
local message = {}
for i = 5, #ARGV do
  xadd[#xadd + 1] = ARGV[i]
  message[#message + 1] = ARGV[i]
end
local flag = 0
if #KEYS > 1 and KEYS[2] ~= '' then flag = redis.call('EXISTS', KEYS[2]) end
if #KEYS > 2 and ARGV[4] ~= '' then
  local fence = tonumber(redis.call('GET', KEYS[3]) or '-1')
  if fence >= tonumber(ARGV[4]) then return {false, flag} end
end
local id = redis.pcall(unpack(xadd))
if type(id) == 'table' and id.err then
  if string.find(id.err, 'equal or smaller', 1, true) then return {false, flag} end
  return id
end
if ARGV[3] ~= '' then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
if #KEYS > 2 and ARGV[4] == 'CLOSED_TOKEN' then
  redis.call('SET', KEYS[3], ARGV[4])
  if ARGV[3] ~= '' then redis.call('EXPIRE', KEYS[3], ARGV[3]) end
end
redis.call('PUBLISH', KEYS[1], id .. '\\0' .. table.concat(message, '\\0'))
return {id, flag}
""".replace("CLOSED_TOKEN", str(CLOSED))

# SET the number at KEYS[1] to ARGV[1] unless it is already at least that; PEXPIRE it ARGV[2] ms. Returns the number.
RAISE_FLOOR_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
local wanted = tonumber(ARGV[1])
if wanted > current then current = wanted end
redis.call('SET', KEYS[1], current, 'PX', ARGV[2])
return current
"""


def decode_entry(message: str) -> Entry:
    """An entry as `APPEND_SCRIPT` publishes it (`id NUL name NUL value ...`) -> `(entry_id, fields)`.

    Field names and values must hold no NUL character (chatsite's are an event type and compact JSON, where
    control characters are always escaped).
    """
    parts = message.split("\x00")
    return parts[0], dict(zip(parts[1::2], parts[2::2], strict=True))


class RedisBus(EventBus):
    """The bus on Redis: streams are Redis Streams, flags are keys with a TTL.

    Args:
        client: a blocking client (with retries, for the worker's writes).
        async_client: returns the asyncio client of the running event loop.

    Every method may raise `redis.RedisError` when Redis cannot be reached.
    """

    def __init__(self, client: redis.Redis, async_client) -> None:
        self.client = client
        self.async_client = async_client
        self._append = client.register_script(APPEND_SCRIPT)
        self._raise_floor = client.register_script(RAISE_FLOOR_SCRIPT)

    def append(self, stream, fields, *, entry_id=None, maxlen, expire_seconds=None, check_flag=None, fence=None):
        keys = [stream, check_flag or ""] if (check_flag or fence) else [stream]
        if fence:
            keys.append(fence[0])
        args = [entry_id or "*", maxlen, int(expire_seconds) if expire_seconds is not None else ""]
        args.append(int(fence[1]) if fence else "")
        for name, value in fields.items():
            args += [name, value]
        new_id, flag_set = self._append(keys=keys, args=args)
        return new_id, bool(flag_set)

    def entries(self, stream, start="-", end="+"):
        return self.client.xrange(stream, start, end)

    def newest(self, stream):
        found = self.client.xrevrange(stream, count=1)
        return found[0] if found else None

    def delete(self, *keys):
        if keys:
            self.client.delete(*keys)

    def set_flag(self, key, value, seconds, *, only_if_absent=False):
        return bool(self.client.set(key, value, px=max(1, int(seconds * 1000)), nx=only_if_absent))

    def set_flags(self, keys, value, seconds):
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, value, px=max(1, int(seconds * 1000)))
        pipe.execute()

    def flag(self, key):
        return self.client.get(key)

    def raise_floor(self, key, value, seconds):
        return int(self._raise_floor(keys=[key], args=[int(value), max(1, int(seconds * 1000))]))

    async def aflag(self, key):
        return await self.async_client().get(key)

    async def read(self, stream, after, *, count, block_seconds):
        response = await self.async_client().xread(
            {stream: after}, count=count, block=max(1, int(block_seconds * 1000))
        )
        return response[0][1] if response else []


@dataclass
class _Stream:
    entries: list[tuple[tuple[int, int], str, dict[str, str]]] = field(default_factory=list)
    expires_at: float | None = None
    waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=set)

    @property
    def top(self) -> tuple[int, int]:
        return self.entries[-1][0] if self.entries else (0, 0)


class MemoryBus(EventBus):
    """The bus inside one process: for embedded mode, where web and generation share a process.

    Thread-safe: workers append from threads, readers wait on the event loop. Streams and flags expire like
    their Redis counterparts; expired ones are dropped when touched and by `purge()`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._flags: dict[str, tuple[str, float]] = {}

    def _stream(self, key: str, create: bool = False) -> _Stream | None:
        stream = self._streams.get(key)
        if stream is not None and stream.expires_at is not None and stream.expires_at <= time.monotonic():
            del self._streams[key]
            stream = None
        if stream is None and create:
            stream = self._streams[key] = _Stream()
        return stream

    def append(self, stream, fields, *, entry_id=None, maxlen, expire_seconds=None, check_flag=None, fence=None):
        with self._lock:
            flag_set = bool(check_flag and self._flag(check_flag) is not None)
            if fence is not None and int(self._flag(fence[0]) or -1) >= fence[1]:
                return None, flag_set
            target = self._stream(stream, create=True)
            top = target.top
            if entry_id is not None:
                wanted = parse_entry_id(entry_id)
                if wanted <= top:
                    return None, flag_set
            else:
                now = time.time_ns() // 1_000_000
                wanted = (now, 0) if now > top[0] else (top[0], top[1] + 1)
            new_id = f"{wanted[0]}-{wanted[1]}"
            target.entries.append((wanted, new_id, dict(fields)))
            if len(target.entries) > maxlen:
                del target.entries[: len(target.entries) - maxlen]
            if expire_seconds is not None:
                target.expires_at = time.monotonic() + expire_seconds
            if fence is not None and fence[1] == CLOSED:
                self._flags[fence[0]] = (str(CLOSED), time.monotonic() + (expire_seconds or 3600))
            for loop, event in list(target.waiters):
                loop.call_soon_threadsafe(event.set)
            return new_id, flag_set

    def _after(self, stream: _Stream | None, after: tuple[int, int], count: int) -> list[Entry]:
        if stream is None:
            return []
        found = [(entry_id, dict(fields)) for key, entry_id, fields in stream.entries if key > after]
        return found[:count]

    def entries(self, stream, start="-", end="+"):
        low = (0, 0) if start == "-" else parse_entry_id(start)
        high = (MAX_ID_PART, MAX_ID_PART) if end == "+" else parse_entry_id(end)
        with self._lock:
            target = self._stream(stream)
            if target is None:
                return []
            return [(entry_id, dict(fields)) for key, entry_id, fields in target.entries if low <= key <= high]

    def newest(self, stream):
        with self._lock:
            target = self._stream(stream)
            if target is None or not target.entries:
                return None
            _, entry_id, fields = target.entries[-1]
            return entry_id, dict(fields)

    def delete(self, *keys):
        with self._lock:
            for key in keys:
                self._streams.pop(key, None)
                self._flags.pop(key, None)

    def _flag(self, key: str) -> str | None:
        found = self._flags.get(key)
        if found is None:
            return None
        if found[1] <= time.monotonic():
            del self._flags[key]
            return None
        return found[0]

    def set_flag(self, key, value, seconds, *, only_if_absent=False):
        with self._lock:
            if only_if_absent and self._flag(key) is not None:
                return False
            self._flags[key] = (value, time.monotonic() + seconds)
            return True

    def flag(self, key):
        with self._lock:
            return self._flag(key)

    def raise_floor(self, key, value, seconds):
        with self._lock:
            current = max(int(self._flag(key) or -1), int(value))
            self._flags[key] = (str(current), time.monotonic() + seconds)
            return current

    async def read(self, stream, after, *, count, block_seconds):
        after_key = parse_entry_id(after)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_seconds
        while True:
            event = asyncio.Event()
            with self._lock:
                target = self._stream(stream, create=True)
                found = self._after(target, after_key, count)
                if found:
                    return found
                waiter = (loop, event)
                target.waiters.add(waiter)
            try:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    return []
            finally:
                with self._lock:
                    target.waiters.discard(waiter)

    def purge(self) -> None:
        """Drop expired streams and flags (the watchdog calls this in embedded mode)."""
        now = time.monotonic()
        with self._lock:
            for key, stream in list(self._streams.items()):
                expired = stream.expires_at is not None and stream.expires_at <= now
                if (expired or not stream.entries) and not stream.waiters:
                    del self._streams[key]
            for key in [k for k, (_, until) in self._flags.items() if until <= now]:
                del self._flags[key]
