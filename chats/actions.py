"""Writes to chats and messages from requests: chats, sends, regenerations, API keys. Views and the protocols
call these; a reply's writes once it is queued (claim, final save, endings, cancel) are in `chats.lifecycle`.

A send writes its question and its `queued` reply in one INSERT, inside the transaction that locks the chat.
"""

import logging
import secrets
from datetime import timedelta

from django.db import transaction
from django.db.models import Case, F, Q, Subquery, Value, When
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from chats import waiting
from chats.auth import KEY_PREFIX, hash_key
from chats.exceptions import IdempotencyKeyReused, ReplyInProgress
from chats.models import ApiKey, Chat, Message, User
from chatsite import jobs
from pipelines.models import ModelConfig, Workflow, reply_lane

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


def enqueue_reply(message_id: str, lane: str | None = None) -> None:
    """Hand the reply `message_id` to a worker of its lane (`Message.lane`, read when `lane` is not given) through
    the jobs interface (`chatsite.jobs`: Celery, or embedded mode's threads); tell its readers if it must wait
    for a slot (`chats.waiting.announce`). A job queue that cannot be reached ends the reply as failed."""
    if lane is None:
        lane = Message.objects.filter(id=message_id).values_list("lane", flat=True).first() or jobs.NETWORK
    jobs.submit("reply", message_id, lane=lane)
    waiting.announce(message_id, lane)


def enqueue_on_commit(*replies: Message) -> None:
    """Enqueue `replies` (just created in the caller's transaction) once it commits: a worker always finds the
    rows, and nothing is published for a row that might roll back."""
    queued = [(str(reply.id), reply.lane) for reply in replies]
    transaction.on_commit(lambda: [enqueue_reply(reply_id, lane) for reply_id, lane in queued])


def running_reply(chat: Chat) -> Message | None:
    """The chat's reply that is queued or streaming, if any."""
    return chat.messages.filter(status__in=(Message.Status.QUEUED, Message.Status.STREAMING)).first()


def running_and_newest(chat: Chat) -> tuple[Message | None, str | None]:
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
        running, previous_id = running_and_newest(chat)
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
        reply = new_reply(chat, question, model, workflow, now, idempotency_key, options)
        Message.objects.bulk_create([question, reply])
        enqueue_on_commit(reply)
    chat.model_id, chat.updated_at, chat.title = model.model_id, now, chat.title or title
    return question, reply, True


def new_reply(
    chat: Chat,
    question: Message,
    model: ModelConfig,
    workflow: Workflow | None,
    after,
    idempotency_key: str = "",
    options: dict | None = None,
) -> Message:
    """An unsaved `queued` reply to `question`, created one microsecond `after` (a datetime) it, with the
    generation `options` a client asked for (`Message.options`), in the lane its models need."""
    steps = (options or {}).get("steps") or (workflow.steps if workflow else None)
    return Message(
        lane=reply_lane(model, steps),
        options=options or {},
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
        enqueue_on_commit(reply)
        do_update_chat(chat, model_id=model.model_id)
    return reply


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
