"""Writes of a reply's lifecycle once it is queued: the worker's claim and final save, the take-overs of a worker
taken for dead, the watchdog's endings, and cancel. Each reply is written a bounded number of times, never per
token: claimed (`streaming`), then finished (content, usage, finish reason and status in one UPDATE); every
ending is fenced (chats.fencing) so that one terminal event, matching the saved row, reaches the stream.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import F
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from chats import events, fencing
from chats.exceptions import ReplyFinished
from chats.models import Message

T = TypeVar("T")

logger = logging.getLogger(__name__)


def start_event_for(message: Message) -> events.Event:
    """The `start` event of the reply `message`."""
    return events.start_event(
        message_id=str(message.id),
        chat_id=str(message.chat_id),
        user_message_id=str(message.parent_id) if message.parent_id else None,
        model=message.model_id,
        workflow_id=str(message.workflow_id) if message.workflow_id else None,
    )


def fail_unstarted_reply(
    message_id: str, *, code: str = "queue_unavailable", message: str = "", retryable: bool = True
) -> None:
    """End a reply that never reached a worker (still `queued`) with an `error` event: by default
    `queue_unavailable`, the jobs interface's answer when the job queue cannot be reached.

    Publishing is best effort: the saved `failed` status is what resuming clients will read.
    """
    text = message or "The reply could not be queued: the job queue is unreachable. Try again shortly."
    error = {"code": code, "message": text, "retryable": retryable}
    try:
        do_end_reply_from_stream(
            message_id, status=Message.Status.FAILED, error=error, from_statuses=(Message.Status.QUEUED,)
        )
    except redis.RedisError:
        logger.exception("could not publish the error event of reply %s", message_id)


def do_claim_reply(message_id: str) -> Message | None:
    """Move a reply from `queued` to `streaming`, exactly once per attempt, and count the attempt.

    A reply is claimed only while it has been attempted fewer than `CHATSITE_MAX_REPLY_ATTEMPTS` times. The
    claim that makes attempt `m` raises the stream's fence past whoever wrote for the waiting reply
    (`chats.fencing`): the caller then writes as `fencing.worker_token(m)`.

    Returns:
        The claimed message (its `attempts` is this attempt's number), or None when it does not exist, someone
        already claimed it (a task delivered twice must not generate the reply twice), it ended, or it has no
        attempt left (see `attempts_exhausted`).

    Raises:
        redis.RedisError: when the fence cannot be raised (Redis stays unreachable).
    """
    claimed = Message.objects.filter(
        id=message_id, status=Message.Status.QUEUED, attempts__lt=settings.CHATSITE_MAX_REPLY_ATTEMPTS
    ).update(status=Message.Status.STREAMING, started_at=timezone.now(), attempts=F("attempts") + 1)
    if not claimed:
        return None
    message = Message.objects.select_related("chat", "chat__owner", "workflow").get(id=message_id)
    fencing.raise_fence(message_id, fencing.waiting_token(message.attempts - 1))
    return message


def attempts_exhausted(message_id: str) -> bool:
    """Whether `message_id` is still queued or streaming but may not be attempted again."""
    return Message.objects.filter(
        id=message_id,
        status__in=(Message.Status.QUEUED, Message.Status.STREAMING),
        attempts__gte=settings.CHATSITE_MAX_REPLY_ATTEMPTS,
    ).exists()


def do_finish_reply(
    message_id: str,
    *,
    status: str,
    content: str,
    finish_reason: str = "",
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    error: dict | None = None,
    tool_calls: list[dict] | None = None,
    sources: list[dict] | None = None,
    from_statuses: tuple[str, ...] = (Message.Status.STREAMING,),
    attempt: int | None = None,
) -> bool:
    """Save a reply's outcome in one UPDATE: content, usage, finish reason, error, tool calls (with their
    results), sources (as the `sources` event gave them), status, completion time.

    Only a reply still in one of `from_statuses` is changed, so a reply that was ended elsewhere (cancelled,
    or failed by a watchdog) keeps that outcome; with `attempt`, only if that is still its attempt, so a worker
    whose reply was taken over cannot save it.

    Returns:
        True if this call ended the reply, False if it had already ended (or was taken over).
    """
    rows = Message.objects.filter(id=message_id, status__in=from_statuses)
    if attempt is not None:
        rows = rows.filter(attempts=attempt)
    updated = through_database_restart(
        lambda: rows.update(
            status=status,
            content=content,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            error=error,
            tool_calls=tool_calls or [],
            sources=sources or [],
            completed_at=timezone.now(),
        )
    )
    return bool(updated)


def through_database_restart(write: Callable[[], T]) -> T:
    """Run `write` (one statement, outside any transaction), trying it again on a new connection for up to
    CHATSITE_DB_RETRY_SECONDS while the database is restarting or refusing connections (django.db's
    OperationalError or InterfaceError).

    A worker holds its connection for a whole reply, so a PostgreSQL restart while it generates closes that
    connection under it; without this, its final save failed and the reply ended as `internal_error` although
    the database was back a second later. The closed connection is given back (the pool discards a broken one)
    and the next try takes a new one. Inside a transaction nothing is retried: the transaction is lost anyway.
    Raises the last error once the time is up.
    """
    from django.db import InterfaceError, OperationalError, connection

    deadline = time.monotonic() + settings.CHATSITE_DB_RETRY_SECONDS
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError):
            if connection.in_atomic_block or time.monotonic() >= deadline:
                raise
            logger.warning("database unavailable; trying the write again")
            connection.close()
            time.sleep(0.5)


def do_reclaim_reply(message_id: str, started_at: datetime, attempts: int) -> Message | None:
    """Take over a `streaming` reply whose worker died, if nobody else did since (`started_at`, `attempts`) and
    it has an attempt left; this counts as an attempt. The caller has fenced the dead worker out first.

    Returns the message (its `attempts` is this attempt's number), or None when another worker took it over
    (or it ended) first, or no attempt is left.

    Raises:
        redis.RedisError: when the fence cannot be raised.
    """
    claimed = Message.objects.filter(
        id=message_id,
        status=Message.Status.STREAMING,
        started_at=started_at,
        attempts=attempts,
        attempts__lt=settings.CHATSITE_MAX_REPLY_ATTEMPTS,
    ).update(started_at=timezone.now(), attempts=F("attempts") + 1)
    if not claimed:
        return None
    message = Message.objects.select_related("chat", "chat__owner", "workflow").get(id=message_id)
    fencing.raise_fence(message_id, fencing.waiting_token(message.attempts - 1))
    return message


def do_requeue_reply(message_id: str, started_at: datetime, attempts: int) -> bool:
    """Put a `streaming` reply whose worker died before it wrote any text back to `queued`.

    Only if nobody took it over since (`started_at`, `attempts`); the caller has fenced the dead worker out.
    Returns True if it is queued again (the caller enqueues it).
    """
    return bool(
        Message.objects.filter(
            id=message_id, status=Message.Status.STREAMING, started_at=started_at, attempts=attempts
        ).update(status=Message.Status.QUEUED, started_at=None)
    )


def do_end_reply_from_stream(
    message_id: str,
    *,
    status: str,
    finish_reason: str = "",
    error: dict | None = None,
    from_statuses: tuple[str, ...] = (Message.Status.STREAMING,),
    attempt: int | None = None,
) -> bool:
    """End a reply from outside its worker (cancel, watchdog, recovery), keeping the text already streamed.

    The reply's stream is fenced first (`chats.fencing.fence_out`), so its worker, if it still runs, can add
    nothing more; the saved content is then what the stream holds, which is what readers have seen. The row
    changes only if it is still in one of `from_statuses` at the attempt seen (and, given `attempt`, only at
    that attempt). Publishes the terminal event (after a `start`, if the stream has none yet) only if this call
    ended the reply.

    Returns:
        True if this call ended the reply.

    Raises:
        redis.RedisError: when Redis cannot be reached.
    """
    for _ in range(3):  # again if the reply moved on (claimed, taken over) between the read and the save
        row = Message.objects.filter(id=message_id).values("status", "attempts").first()
        if row is None or row["status"] not in from_statuses:
            return False
        if attempt is not None and row["attempts"] != attempt:
            return False
        fencing.fence_out(message_id, row["status"], row["attempts"])
        stream = events.snapshot(message_id)
        if do_finish_reply(
            message_id, status=status, content=stream.text, finish_reason=finish_reason, error=error,
            from_statuses=(row["status"],), attempt=row["attempts"],
        ):  # fmt: skip
            break
    else:
        return False
    reason = (error or {}).get("code", finish_reason)
    logger.info("reply %s: %s (%s), ended from its stream", message_id, status, reason)
    message = Message.objects.get(id=message_id)
    if not stream.started:
        fencing.publish_before_terminal(message_id, start_event_for(message))
    if error is not None:
        terminal = events.error_event(code=error["code"], message=error["message"], retryable=error["retryable"])
    else:
        terminal = events.end_event(
            message_id=message_id,
            finish_reason=finish_reason,
            prompt_tokens=message.prompt_tokens or 0,
            completion_tokens=message.completion_tokens or 0,
        )
    fencing.publish_terminal(message_id, terminal)
    return True


def do_publish_saved_terminal(message_id: str) -> bool:
    """Give a reply that ended in the database the terminal event its stream lacks (its writer stopped between
    the save and the publish: a SIGKILL, a time limit). Nothing when the stream already holds one (at most one
    ever lands, `chats.fencing`), when the reply has not ended, or when its stream is gone (readers then replay
    it from the database).

    Returns True if this call published it.

    Raises:
        redis.RedisError: when Redis cannot be reached.
    """
    if fencing.is_closed(message_id):
        return False
    message = Message.objects.filter(id=message_id).first()
    if message is None or message.status not in Message.TERMINAL_STATUSES:
        return False
    if events.bus().newest(events.stream_key(message_id)) is None:
        return False
    from chats.streaming import terminal_event_from_db

    if fencing.publish_terminal(message_id, terminal_event_from_db(message)) is None:
        return False
    logger.warning("reply %s: ended as %s, its terminal event published from the saved row", message_id, message.status)
    return True


WORKER_LOST_ERROR = {
    "code": "worker_lost",
    "message": "The server generating this reply stopped before it finished. Regenerate it to try again.",
    "retryable": True,
}


def do_end_lost_reply(message_id: str, attempt: int | None = None) -> bool:
    """End a `streaming` reply whose worker died (at `attempt`, if given): `error` `worker_lost`, partial text
    kept."""
    return do_end_reply_from_stream(message_id, status=Message.Status.FAILED, error=WORKER_LOST_ERROR, attempt=attempt)


def worker_failed_error() -> dict:
    """The error of a reply that used up its attempts (CHATSITE_MAX_REPLY_ATTEMPTS)."""
    attempts = settings.CHATSITE_MAX_REPLY_ATTEMPTS
    return {
        "code": "worker_failed",
        "message": (
            f"This reply could not be generated: the server stopped each of the {attempts} times it tried. "
            "Ask an administrator if it happens again."
        ),
        "retryable": False,
    }


def do_end_failed_reply(message_id: str, attempt: int | None = None) -> bool:
    """End a queued or streaming reply that has no attempt left: `error` `worker_failed` (not retryable),
    partial text kept."""
    return do_end_reply_from_stream(
        message_id,
        status=Message.Status.FAILED,
        error=worker_failed_error(),
        from_statuses=(Message.Status.QUEUED, Message.Status.STREAMING),
        attempt=attempt,
    )


async def _wait_for_terminal_event(message_id: str) -> None:
    """Return once the reply's stream holds its terminal event; a Redis outage meanwhile (a restart) is waited
    out, reading again from the last event seen. The caller bounds the wait."""
    last_id = "0-0"
    while True:
        try:
            async for item in events.read_events(message_id, last_id, idle_seconds=0.5):
                if item is None:
                    continue
                last_id = item[0]
                if item[1] in events.TERMINAL_TYPES:
                    return
            return
        except redis.RedisError:
            await asyncio.sleep(0.2)


async def do_cancel_reply(message: Message) -> Message:
    """Stop a reply and return it as saved: status `cancelled`, the text streamed so far, `end` published.

    A queued reply is ended here. A streaming one is asked to stop (its worker checks between deltas and
    saves and publishes the outcome); if its worker is gone or does not answer within
    `CHATSITE_CANCEL_WAIT_SECONDS`, it is ended here from its stream. Cancelling a cancelled reply is
    harmless and answers the same.

    Raises:
        ReplyFinished: 409 when the reply had already completed or failed.
    """
    message_id = str(message.id)
    if message.role != Message.Role.ASSISTANT:
        raise ValidationError({"messageId": ["Only assistant replies can be cancelled."]})
    if message.status in Message.TERMINAL_STATUSES:
        if message.status == Message.Status.CANCELLED:
            return message
        raise ReplyFinished(message.status)
    await sync_to_async(events.request_cancel)(message_id)
    cancelled = {"status": Message.Status.CANCELLED, "finish_reason": "cancelled"}
    # Not picked up yet: it ends here (the worker's claim will then find nothing to do).
    await sync_to_async(do_end_reply_from_stream)(message_id, **cancelled, from_statuses=(Message.Status.QUEUED,))
    if await sync_to_async(events.heartbeat_alive)(message_id):
        try:
            async with asyncio.timeout(settings.CHATSITE_CANCEL_WAIT_SECONDS):
                await _wait_for_terminal_event(message_id)
        except TimeoutError:
            logger.warning("reply %s did not stop within the cancel wait; ending it here", message_id)
    await sync_to_async(do_end_reply_from_stream)(
        message_id, **cancelled, from_statuses=(Message.Status.QUEUED, Message.Status.STREAMING)
    )
    message = await Message.objects.aget(id=message_id)
    if message.status != Message.Status.CANCELLED:
        raise ReplyFinished(message.status)
    return message
