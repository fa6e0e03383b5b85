"""Fencing a reply's stream, so that only the party that owns a reply writes to it.

A worker can look dead and not be: its heartbeat lapses while Redis is down (a restart takes seconds), or while
it is starved of CPU. Then a second worker may take the reply over, or the watchdog, a cancel or a redelivered
task may end it from its stream, while the first worker goes on. Unfenced, the stream would mix two workers'
texts, hold text that came after what was saved, or have its terminal event refused because another writer's
ids were past it (the bench/chaos.py failures of issue 13: `texts_differing_from_saved`, a stream with no
terminal event, and the relay's ending from the database read as a duplicate).

Each start of a reply is numbered: its attempt (`Message.attempts`, counted by the claim), the fencing token of
the worker running it. Every non-terminal event a worker appends carries a token, and the append script refuses
it, in the same atomic step, once the stream's fence has reached that token; the worker's final save is
conditional on its attempt still being the reply's. Tokens are half-steps, so that a reply that waits can be
written to too:

- the worker running attempt `n` writes with `2n`;
- the admission writes `queued` events for a reply still queued after `n` attempts with `2n + 1`;
- whoever takes a reply over from attempt `n` (a redelivered task, the watchdog) raises the fence to `2n` before
  it reads the stream, and a claim that makes attempt `m` raises it to `2m - 1`;
- whoever ends a reply from outside its worker raises it to what it saw (`2n` for a reply streaming at attempt
  `n`, `2n + 1` for one still queued) before it reads the stream, so no text lands between that read and its
  terminal event.

Terminal events pass every writer's fence: the database row decides who ends a reply (one conditional UPDATE
wins), and only the winner publishes one. A terminal event closes the fence (`CLOSED`) in the same atomic step, so
nothing is appended after it, and a second terminal event (a retry whose first try landed during a Redis restart,
or a recovery racing the winner) is refused: a stream holds at most one. A reply saved as ended whose terminal
event never made it to its stream (its worker stopped between the save and the publish) gets it from the saved
row (`chats.lifecycle.do_publish_saved_terminal`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from chats import events
from chats.bus import CLOSED


def fence_key(message_id: str) -> str:
    """The Redis key holding the fence of a reply's stream (the highest token that may no longer write)."""
    return f"{settings.CHATSITE_STREAM_KEY_PREFIX}{message_id}:fence"


def worker_token(attempt: int) -> int:
    """The token of the worker running attempt `attempt` of a reply."""
    return 2 * attempt


def waiting_token(attempts: int) -> int:
    """The token of whoever writes for a reply still queued after `attempts` attempts (its `queued` events)."""
    return 2 * attempts + 1


def raise_fence(message_id: str, token: int) -> int:
    """Refuse from now on the non-terminal events of every writer whose token is at most `token`.

    The fence only ever rises, and lives as long as a finished stream. Returns the fence now in place.

    Raises:
        redis.RedisError: when Redis cannot be reached.
    """
    return events.bus().raise_floor(fence_key(message_id), token, settings.CHATSITE_STREAM_TTL_SECONDS)


def fence_out(message_id: str, status: str, attempts: int) -> int:
    """Raise the fence past everyone who may write for a reply seen in `status` after `attempts` attempts: its
    worker (`streaming`), or the admission (`queued`). Returns the fence now in place."""
    from chats.models import Message

    token = worker_token(attempts) if status == Message.Status.STREAMING else waiting_token(attempts)
    return raise_fence(message_id, token)


def is_closed(message_id: str) -> bool:
    """Whether the reply's stream holds its terminal event (its fence is closed).

    Raises:
        redis.RedisError: when Redis cannot be reached.
    """
    value = events.bus().flag(fence_key(message_id))
    return value is not None and int(value) >= CLOSED


def publish_terminal(message_id: str, event: events.Event) -> str | None:
    """Append a reply's terminal event (ids chosen by the bus) unless its stream already has one; give the stream
    its expiry. Returns the entry id, or None when a terminal event was already there.

    Raises:
        redis.RedisError: when Redis cannot be reached.
    """
    return _append_past_fence(message_id, event, CLOSED, expire_seconds=settings.CHATSITE_STREAM_TTL_SECONDS)


def publish_before_terminal(message_id: str, event: events.Event) -> str | None:
    """Append a non-terminal event for whoever is about to end the reply (the `start` of a reply ended before it
    began): past every writer's fence, but never after a terminal event. Returns the entry id, or None.

    Raises:
        redis.RedisError: when Redis cannot be reached.
    """
    return _append_past_fence(message_id, event, CLOSED - 1)


def _append_past_fence(message_id: str, event: events.Event, token: int, **options: object) -> str | None:
    """Append `event` with fence `token` (see chats.bus's append script); the entry id, or None if refused."""
    entry_id, _ = events.bus().append(
        events.stream_key(message_id),
        {"type": event["type"], "data": events.encode(event)},
        maxlen=settings.CHATSITE_STREAM_MAXLEN,
        fence=(fence_key(message_id), token),
        **options,
    )
    return entry_id


class FencedBus:
    """An event bus through which one writer's appends carry its token, and its terminal event `CLOSED` (see the
    module's docstring).

    Wraps any `chats.bus.EventBus`; streams with no token registered are written as by the bus itself. Give it
    to `chats.events.EventPublisher` as its bus.
    """

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self._fences: dict[str, tuple[str, int]] = {}  # stream key -> (fence key, token)

    def write_as(self, message_id: str, token: int) -> None:
        """Append to `message_id`'s stream with `token` from now on."""
        self._fences[events.stream_key(message_id)] = (fence_key(message_id), token)

    def append(self, stream: str, fields: dict[str, str], **kwargs: Any) -> tuple[str | None, bool]:
        """`EventBus.append`, with this writer's fence."""
        fence = self._fences.get(stream)
        if fence is not None:
            terminal = fields.get("type") in events.TERMINAL_TYPES
            kwargs["fence"] = (fence[0], CLOSED) if terminal else fence
        return self.bus.append(stream, fields, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)


def fenced(publisher: events.EventPublisher) -> FencedBus:
    """Make `publisher` write through a `FencedBus` (once); return that bus."""
    if not isinstance(publisher.bus, FencedBus):
        publisher.bus = FencedBus(publisher.bus)
    return publisher.bus
