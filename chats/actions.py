"""Every write to chats and messages. Views, tasks and the runner call these; nothing else saves rows.

Each reply is written a bounded number of times, never per token: created (`queued`) with its question,
claimed (`streaming`), and finished (content, usage, finish reason and status in one UPDATE).
"""

import asyncio
import logging
import secrets
from datetime import datetime, timedelta

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Subquery, Value, When
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from chats import events, fencing
from chats.auth import KEY_PREFIX, hash_key
from chats.exceptions import IdempotencyKeyReused, ReplyFinished, ReplyInProgress
from chats.models import ApiKey, Chat, Message, User
from pipelines.models import ModelConfig, Workflow

logger = logging.getLogger(__name__)

TITLE_FROM_MESSAGE_CHARS = 80


def do_create_chat(
    owner: User, *, title: str = "", model_id: str = "", workflow: Workflow | None = None, source: str = Chat.Source.WEB
) -> Chat:
    """Create an empty chat for `owner`; `source` names the protocol that asked for it (`Chat.Source`)."""
    return Chat.objects.create(owner=owner, title=title, model_id=model_id, workflow=workflow, source=source)


def do_update_chat(chat: Chat, **changes: object) -> Chat:
    """Change a chat's `title`, `model_id`, `workflow`, `pinned` or `archived` (only the keys given).

    Pinning and archiving are not activity: a change of those alone leaves `updated_at` (the chat's place in
    the list) as it was.
    """
    for field, value in changes.items():
        setattr(chat, field, value)
    fields = list(changes)
    if set(changes) - {"pinned", "archived"}:
        fields.append("updated_at")
    chat.save(update_fields=fields)
    return chat


def do_delete_chat(chat: Chat) -> None:
    """Delete a chat and all its messages."""
    chat.delete()


def enqueue_reply(message_id: str) -> None:
    """Send a reply to the Celery queue (in embedded mode, to the web process's thread pool); if the broker
    is unreachable, end the reply as failed."""
    if settings.CHATSITE_EMBEDDED:
        from pipelines import embedded

        embedded.submit(message_id)
        return
    # Imported here: pipelines.tasks imports the runner, which imports these actions.
    from pipelines.tasks import generate_reply

    try:
        generate_reply.delay(message_id)
    except Exception:
        # The broker is down: fail the reply now rather than leave it queued forever.
        logger.exception("could not enqueue reply %s", message_id)
        from pipelines.runner import fail_unstarted_reply

        fail_unstarted_reply(
            message_id,
            code="queue_unavailable",
            message="The reply could not be queued: the job queue is unreachable. Try again shortly.",
        )


def running_reply(chat: Chat) -> Message | None:
    """The chat's reply that is queued or streaming, if any."""
    return chat.messages.filter(status__in=(Message.Status.QUEUED, Message.Status.STREAMING)).first()


def _running_and_newest(chat: Chat) -> tuple[Message | None, str | None]:
    """`chat`'s running reply (or None) and the id of its newest message (or None), in one query.

    Call it with the chat's row locked, in a statement after the lock's: under READ COMMITTED each statement
    sees what committed before it began, so a send that waited for the lock sees the reply that the send
    before it created.
    """
    newest = chat.messages.order_by("-created_at").values("id")[:1]
    rows = list(
        chat.messages.filter(
            Q(status__in=(Message.Status.QUEUED, Message.Status.STREAMING)) | Q(id=Subquery(newest))
        ).only("id", "status", "created_at")
    )
    running = next((m for m in rows if m.status in (Message.Status.QUEUED, Message.Status.STREAMING)), None)
    previous = max(rows, key=lambda m: m.created_at, default=None)
    return running, str(previous.id) if previous else None


def do_send_message(
    user: User,
    chat: Chat,
    *,
    content: str,
    model: ModelConfig,
    workflow: Workflow | None,
    idempotency_key: str = "",
    attachments: list[str] | None = None,
    options: dict | None = None,
    parent_id: str | None = None,
) -> tuple[Message, Message, bool]:
    """Save a user's message (with the ids of its `attachments`, documents already checked readable) and a
    `queued` assistant reply (with the generation `options` a client asked for: `Message.options`) in one
    transaction; enqueue its generation.

    The Celery task is sent only once the transaction has committed, so the worker always finds the rows
    and no event is published for a row that might roll back. A send that repeats an `idempotency_key`
    already used on this chat returns that earlier reply and enqueues nothing. Without a key, the transaction
    makes three statements: the chat's UPDATE (which locks its row), one read of its running reply and newest
    message, and one INSERT of both messages. The question follows `parent_id` (a message of this chat, checked
    by the caller: `chats.branches.parent_in_chat`) when given, else the chat's newest message.

    Returns:
        `(user_message, assistant_message, created)`; `created` is False for a repeated idempotency key.

    Raises:
        IdempotencyKeyReused: 409 when the key was used for a different message.
        ReplyInProgress: 409 when the chat already has a reply queued or streaming.
    """
    title = " ".join(content.split())[:TITLE_FROM_MESSAGE_CHARS]
    with transaction.atomic():
        # The chat's row is locked first, so that sends to one chat line up: each sees the other's messages
        # and keys. Without a key to look up, the chat's UPDATE (model, time, a title if it has none) is
        # what takes the lock.
        if idempotency_key:
            Chat.objects.select_for_update().filter(pk=chat.pk).values_list("pk").get()
            earlier = chat.messages.filter(idempotency_key=idempotency_key).select_related("parent").first()
            if earlier is not None:
                if earlier.parent is None or earlier.parent.content != content:
                    raise IdempotencyKeyReused()
                return earlier.parent, earlier, False
        now = timezone.now()
        Chat.objects.filter(pk=chat.pk).update(
            model_id=model.model_id,
            updated_at=now,
            title=Case(When(title="", then=Value(title)), default=F("title")),
        )
        running, previous_id = _running_and_newest(chat)
        if running is not None:
            raise ReplyInProgress(running.id)  # the chat's UPDATE is rolled back with the rest
        question = Message(
            chat=chat,
            role=Message.Role.USER,
            content=content,
            status=Message.Status.COMPLETED,
            model_id=model.model_id,
            workflow=workflow,
            parent_id=parent_id or previous_id,
            attachments=attachments or [],
            created_at=now,
        )
        reply = new_reply(chat, question, model, workflow, now, idempotency_key)
        reply.options = options or {}
        Message.objects.bulk_create([question, reply])
        _enqueue_on_commit(reply)
    chat.model_id, chat.updated_at, chat.title = model.model_id, now, chat.title or title
    return question, reply, True


def new_reply(
    chat: Chat, question: Message, model: ModelConfig, workflow: Workflow | None, after, idempotency_key: str = ""
) -> Message:
    """An unsaved `queued` reply to `question`, created one microsecond `after` (a datetime) it."""
    return Message(
        chat=chat,
        role=Message.Role.ASSISTANT,
        status=Message.Status.QUEUED,
        model_id=model.model_id,
        workflow=workflow,
        parent=question,
        idempotency_key=idempotency_key,
        # One microsecond later, so that ordering by time never puts the reply before its question.
        created_at=after + timedelta(microseconds=1),
    )


def _enqueue_on_commit(reply: Message) -> None:
    reply_id = str(reply.id)
    transaction.on_commit(lambda: enqueue_reply(reply_id))


def do_regenerate_reply(chat: Chat, message: Message, *, model: ModelConfig, workflow: Workflow | None) -> Message:
    """Make a new reply to the question behind `message` (a question, or an earlier reply to it).

    The new reply is a sibling of the earlier ones (same `parent`), so it sees only its own branch.

    Raises:
        ReplyInProgress: 409 when the chat already has a reply queued or streaming.
        ValidationError: 400 when `message` answers no question.
    """
    question = message if message.role == Message.Role.USER else message.parent
    if question is None or question.role != Message.Role.USER:
        raise ValidationError({"messageId": ["This message answers no question, so there is nothing to regenerate."]})
    with transaction.atomic():
        chat = Chat.objects.select_for_update().get(pk=chat.pk)
        running = running_reply(chat)
        if running is not None:
            raise ReplyInProgress(running.id)
        reply = new_reply(chat, question, model, workflow, timezone.now())
        reply.save(force_insert=True)
        _enqueue_on_commit(reply)
        do_update_chat(chat, model_id=model.model_id)
    return reply


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
    updated = rows.update(
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
    return bool(updated)


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
        from pipelines.runner import start_event_for

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


def do_create_api_key(owner: User, *, name: str, read_only: bool = False) -> tuple[ApiKey, str]:
    """Create an API key for `owner`; returns the row and the key itself, which is never stored or shown again."""
    key = f"{KEY_PREFIX}{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        owner=owner, name=name, prefix=key[: len(KEY_PREFIX) + 6], key_hash=hash_key(key), read_only=read_only
    )
    return api_key, key


def do_revoke_api_key(api_key: ApiKey) -> ApiKey:
    """Revoke a key (it stops working at once); revoking twice keeps the first time."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key
