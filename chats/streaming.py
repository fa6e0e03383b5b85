"""The SSE relay: turns a reply's Redis Stream into a `text/event-stream` response (DESIGN.md section 4).

The body is an async generator, so under daphne one web process holds many open streams without a thread
each. When the client goes away the generator is cancelled: only this reader stops, never the generation.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator

import redis
from asgiref.sync import SyncToAsync, sync_to_async
from django.db import connection
from django.http import StreamingHttpResponse

from chats import events
from chats.bus import MAX_ID_PART
from chats.events import parse_entry_id, read_event_batches
from chats.models import Message

logger = logging.getLogger(__name__)

PING = b": ping\n\n"
# Sent first, so that the status line and headers leave at once even when the reply waits in the queue.
CONNECTED = b": connected\n\n"
# How long the relay tries to get Redis back before it gives up on a stream, and how often: the pause between
# attempts doubles from the base to the cap, so a stream resumes within RECONNECT_MAX_DELAY of Redis's return.
RECONNECT_SECONDS = 20.0
RECONNECT_BASE_DELAY = 0.5  # seconds
RECONNECT_MAX_DELAY = 2.0  # seconds


def release_request_thread() -> None:
    """Let go of the thread that asgiref keeps for the current request's sync code, if it has one.

    Django serves each ASGI request inside an asgiref `ThreadSensitiveContext`, whose one-thread executor runs
    the request's sync code (middleware, sync views, ORM calls) and lives until the response has been sent
    in full. For a stream that can be an hour: an idle OS thread (and its memory) per open stream. Called
    once the view has returned its stream, when nothing runs in that thread any more; a later thread-sensitive
    call in the same request gets a new thread, which asgiref shuts down at the end as usual.
    """
    # asgiref's own bookkeeping (asgiref 3.x); without it (another version), streams keep their thread as before.
    current = getattr(SyncToAsync, "thread_sensitive_context", None)
    executors = getattr(SyncToAsync, "context_to_thread_executor", None)
    context = current.get(None) if current is not None else None
    executor = executors.pop(context, None) if context is not None and executors is not None else None
    if executor is not None:
        executor.shutdown(wait=False)


async def _without_request_thread(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # Runs when Django starts sending the body: the view and the middleware have returned.
    release_request_thread()
    async for chunk in body:
        yield chunk


def format_sse(entry_id: str, data: str) -> bytes:
    """One SSE event: `id: <entry id>` and `data: <json>` lines, then a blank line (WHATWG HTML, 9.2)."""
    return f"id: {entry_id}\ndata: {data}\n\n".encode()


async def reply_event_batches(
    message_id: str, last_id: str = "0-0"
) -> AsyncIterator[list[tuple[str | None, str, str]]]:
    """Follow a reply's events from after `last_id` until its terminal event: the one wire-independent view of a
    reply that every protocol encodes (seed 004's SSE here, the others in `protocols/`).

    Yields lists of `(entry_id, type, data_json)` in order, each holding the events that arrived together, and
    an empty list whenever `CHATSITE_SSE_PING_SECONDS` pass with no event (time for a keep-alive). After an
    idle spell, unless a worker's heartbeat shows the reply is being generated, it ends with the saved terminal
    event if the reply ended in the database but its stream never got one. If Redis goes away, it reconnects and
    carries on from the last event it yielded; when it has not got Redis back within `RECONNECT_SECONDS` it
    yields an `error` event (`stream_unavailable`, retryable) and ends, so the client can resume later. If Redis
    refuses to read the stream (a command error, which reading again cannot cure) it yields an `error` event
    (`stream_read_failed`, not retryable) and ends at once. Events it makes up itself have no entry id (None).
    Each outage is logged once when it starts and once when it ends, not at every attempt. When the client
    leaves, the server cancels the consumer, and with it this generator: no attempt follows.
    """
    failures = 0
    lost_at = 0.0
    while True:
        try:
            async for batch in read_event_batches(message_id, last_id):
                if failures:
                    logger.info("relay of %s has Redis back after %d attempts", message_id, failures)
                    failures = 0
                if not batch:
                    yield []
                    if await events.heartbeat_alive_async(message_id):
                        # A worker is generating it and its events reach the stream: no need to ask the
                        # database (thousands of idle streams would each query it every ping interval).
                        continue
                    if (terminal := await _saved_terminal(message_id)) is not None:
                        # Ended in the database but not in the stream (its publisher lost Redis): end here.
                        yield [(None, terminal["type"], events.encode(terminal))]
                        return
                    continue
                last_id = batch[-1][0]
                yield batch
                if batch[-1][1] in events.TERMINAL_TYPES:
                    return
        except redis.ResponseError as exc:
            logger.warning("relay of %s: Redis refused to read the stream after %s: %s", message_id, last_id, exc)
            error = events.error_event(
                code="stream_read_failed",
                message="This reply's event stream could not be read. Reload the chat to see the reply.",
                retryable=False,
            )
            yield [(None, "error", events.encode(error))]
            return
        except redis.RedisError as exc:
            failures += 1
            if failures == 1:
                lost_at = time.monotonic()
                logger.warning("relay of %s lost Redis (%s); retrying for %.0f s", message_id, exc, RECONNECT_SECONDS)
            if time.monotonic() - lost_at > RECONNECT_SECONDS:
                logger.warning("relay of %s gave up after %d attempts: %s", message_id, failures, exc)
                error = events.error_event(
                    code="stream_unavailable",
                    message="The event stream is unavailable right now. Resume it in a moment.",
                    retryable=True,
                )
                yield [(None, "error", events.encode(error))]
                return
            await asyncio.sleep(min(RECONNECT_MAX_DELAY, RECONNECT_BASE_DELAY * 2 ** (failures - 1)))


async def relay(message_id: str, last_id: str = "0-0") -> AsyncIterator[bytes]:
    """Seed 004's encoder: a reply's events as SSE bytes from after `last_id` until its terminal event.

    Starts with a `: connected` comment, sends `: ping` for each idle spell, and writes the events that arrived
    together in one write, each with its entry id as the SSE `id:` (events the relay makes up have none). See
    `reply_event_batches` for what it follows and how it survives Redis outages.
    """
    yield CONNECTED
    async for batch in reply_event_batches(message_id, last_id):
        if not batch:
            yield PING
            continue
        yield b"".join(
            format_sse(entry_id, data) if entry_id is not None else f"data: {data}\n\n".encode()
            for entry_id, _, data in batch
        )


def _saved_terminal_sync(message_id: str) -> events.Event | None:
    try:
        message = Message.objects.filter(id=message_id).first()
    finally:
        # This runs on a pool thread shared by every open stream: give the connection back at once.
        connection.close()
    if message is None or message.status not in Message.TERMINAL_STATUSES:
        return None
    return terminal_event_from_db(message)


async def _saved_terminal(message_id: str) -> events.Event | None:
    # Not thread-sensitive: the request's thread was let go (`release_request_thread`), and this closes its
    # own connection.
    return await sync_to_async(_saved_terminal_sync, thread_sensitive=False)(message_id)


def terminal_event_from_db(message: Message) -> events.Event:
    """The `end` or `error` event that matches a finished reply's saved row."""
    if message.status == Message.Status.FAILED:
        error = message.error or {}
        return events.error_event(
            code=error.get("code", "failed"),
            message=error.get("message", "The reply failed."),
            retryable=error.get("retryable", True),
        )
    return events.end_event(
        message_id=str(message.id),
        finish_reason=message.finish_reason or ("cancelled" if message.status == Message.Status.CANCELLED else "stop"),
        prompt_tokens=message.prompt_tokens or 0,
        completion_tokens=message.completion_tokens or 0,
    )


def replay_from_database(message: Message) -> list[tuple[str, events.Event]]:
    """A finished reply as events, for when its Redis Stream has expired: `start` (id `0-1`), the whole text
    as one `content` event (`0-2`) and the terminal event (`0-3`). A reply with sources has its `sources`
    event first after `start`, and the ids are then `0-1` start, `0-2` sources, `0-3` text, `0-4` terminal."""
    from chats.lifecycle import start_event_for

    body: list[events.Event | None] = [events.sources_event(message.sources)] if message.sources else []
    body.append(events.content_event(message.content) if message.content else None)
    replay = [("0-1", start_event_for(message))]
    replay += [(f"0-{i}", event) for i, event in enumerate(body, start=2) if event is not None]
    replay.append((f"0-{len(body) + 2}", terminal_event_from_db(message)))
    return replay


# An id in the right form whose parts may be too large (then it is out of range rather than malformed).
_CANONICAL_ID = re.compile(r"(0|[1-9][0-9]*)-(0|[1-9][0-9]*)", re.ASCII)


class LastEventIdError(ValueError):
    """The client's Last-Event-ID is malformed, out of range, or outside the reply's stream (the message says
    which, in a sentence for the client)."""


def parse_last_event_id(value: str) -> tuple[int, int]:
    """A client's Last-Event-ID -> `(ms, seq)`, checked against Redis's limits (see `chats.bus.parse_entry_id`).

    Raises:
        LastEventIdError: `value` is not `<ms>-<seq>` in canonical decimal, or a part is above 2**64 - 1.
    """
    try:
        return parse_entry_id(value)
    except ValueError:
        pass
    shown = value if len(value) <= 40 else f"{value[:40]}..."
    if _CANONICAL_ID.fullmatch(value):
        raise LastEventIdError(
            f"Last-Event-ID {shown!r} is out of range: each part of an event id is a whole number from 0 to "
            f"{MAX_ID_PART}, without leading zeros."
        )
    raise LastEventIdError(
        f"Last-Event-ID {shown!r} is not an event id: send the `id` of the last event you received (<ms>-<seq>)."
    )


def reply_stream_response(message: Message, last_id: str | None = None) -> StreamingHttpResponse:
    """Stream a reply to a client from after `last_id` (None: from the start), live or from the database.

    Raises:
        LastEventIdError: `last_id` is not `<ms>-<seq>` within Redis's limits, is beyond the stream's last
            entry (or the saved reply's last event, once its stream has expired), or points into a stream
            that has expired.
    """
    wanted = parse_last_event_id(last_id) if last_id is not None else None
    if wanted is None and message.status not in Message.TERMINAL_STATUSES:
        # A reply in progress, followed from its start: nothing to check against the stream.
        return event_stream_response(str(message.id))
    newest = events.bus().newest(events.stream_key(str(message.id)))
    if newest:
        if wanted is not None and wanted > parse_entry_id(newest[0]):
            raise LastEventIdError(
                f"Last-Event-ID {last_id} is beyond this reply's last event ({newest[0]}). "
                "Resume with the id of an event you received, or without one to start again."
            )
        return event_stream_response(str(message.id), last_id or "0-0")
    if message.status not in Message.TERMINAL_STATUSES:
        # Nothing published yet (or Redis lost the stream): follow it as it comes, from its start.
        if wanted not in (None, (0, 0)):
            raise LastEventIdError(
                f"Last-Event-ID {last_id} is beyond this reply's events: it has none yet. Resume without it."
            )
        return event_stream_response(str(message.id))
    replay = replay_from_database(message)
    if wanted is not None and wanted[0] != 0:
        raise LastEventIdError(
            f"Last-Event-ID {last_id} is from a live stream that has expired. Fetch the reply again without it."
        )
    if wanted is not None and wanted > parse_entry_id(replay[-1][0]):
        raise LastEventIdError(
            f"Last-Event-ID {last_id} is beyond this reply's last event ({replay[-1][0]}). "
            "Fetch the reply again without it."
        )
    chunks = [
        format_sse(entry_id, events.encode(event))
        for entry_id, event in replay
        if wanted is None or parse_entry_id(entry_id) > wanted
    ]
    return sse_response(_iterate(chunks))


async def _iterate(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def event_stream_response(message_id: str, last_id: str = "0-0") -> StreamingHttpResponse:
    """A streaming response relaying the reply `message_id` as Server-Sent Events."""
    return sse_response(relay(message_id, last_id))


def sse_response(body: AsyncIterator[bytes]) -> StreamingHttpResponse:
    """A `text/event-stream` response over `body` (SSE bytes): unbuffered, uncached, and holding neither the
    request's database connection nor its thread while it streams."""
    # The request's database connection would otherwise stay open until the stream closes (Django closes it
    # at request_finished): give it back now, as the relay needs none. (Not inside a transaction: tests.)
    if not connection.in_atomic_block:
        connection.close()
    response = StreamingHttpResponse(_without_request_thread(body), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # Tells nginx (and proxies that honour it) not to buffer the stream.
    response["X-Accel-Buffering"] = "no"
    return response
