"""Every write to chats and messages. Views, tasks and the runner call these; nothing else saves rows.

Each reply is written a bounded number of times, never per token: created (`queued`) with its question,
claimed (`streaming`), and finished (content, usage, finish reason and status in one UPDATE).
"""

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from chats.models import Chat, Message, User
from pipelines.models import ModelConfig, Workflow

logger = logging.getLogger(__name__)

TITLE_FROM_MESSAGE_CHARS = 80


def do_create_chat(owner: User, *, title: str = "", model_id: str = "", workflow: Workflow | None = None) -> Chat:
    """Create an empty chat for `owner`."""
    return Chat.objects.create(owner=owner, title=title, model_id=model_id, workflow=workflow)


def do_update_chat(chat: Chat, **changes: object) -> Chat:
    """Change a chat's `title`, `model_id` or `workflow` (only the keys given)."""
    for field, value in changes.items():
        setattr(chat, field, value)
    chat.save(update_fields=[*changes.keys(), "updated_at"])
    return chat


def do_delete_chat(chat: Chat) -> None:
    """Delete a chat and all its messages."""
    chat.delete()


def _enqueue_reply(message_id: str) -> None:
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


def do_send_message(
    user: User, chat: Chat, *, content: str, model: ModelConfig, workflow: Workflow | None
) -> tuple[Message, Message]:
    """Save a user's message and a `queued` assistant reply in one transaction; enqueue its generation.

    The Celery task is sent only once the transaction has committed, so the worker always finds the rows
    and no event is published for a row that might roll back.

    Returns:
        `(user_message, assistant_message)`.
    """
    with transaction.atomic():
        # Lock the chat row so that two sends to one chat line up and each sees the other's messages.
        chat = Chat.objects.select_for_update().get(pk=chat.pk)
        previous = chat.messages.order_by("-created_at").first()
        now = timezone.now()
        question = Message.objects.create(
            chat=chat,
            role=Message.Role.USER,
            content=content,
            status=Message.Status.COMPLETED,
            model_id=model.model_id,
            workflow=workflow,
            parent=previous,
            created_at=now,
        )
        reply = Message.objects.create(
            chat=chat,
            role=Message.Role.ASSISTANT,
            status=Message.Status.QUEUED,
            model_id=model.model_id,
            workflow=workflow,
            parent=question,
            # One microsecond later, so that ordering by time never puts the reply before its question.
            created_at=now + timedelta(microseconds=1),
        )
        changes: dict[str, object] = {"model_id": model.model_id}
        if not chat.title:
            changes["title"] = " ".join(content.split())[:TITLE_FROM_MESSAGE_CHARS]
        do_update_chat(chat, **changes)
        reply_id = str(reply.id)
        transaction.on_commit(lambda: _enqueue_reply(reply_id))
    return question, reply


def do_claim_reply(message_id: str) -> Message | None:
    """Move a reply from `queued` to `streaming`, exactly once.

    Returns:
        The claimed message, or None when it does not exist or someone already claimed it (a task that is
        delivered twice must not generate the reply twice).
    """
    claimed = Message.objects.filter(id=message_id, status=Message.Status.QUEUED).update(
        status=Message.Status.STREAMING, started_at=timezone.now()
    )
    if not claimed:
        return None
    return Message.objects.select_related("chat", "chat__owner", "workflow").get(id=message_id)


def do_finish_reply(
    message_id: str,
    *,
    status: str,
    content: str,
    finish_reason: str = "",
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    error: dict | None = None,
    from_statuses: tuple[str, ...] = (Message.Status.STREAMING,),
) -> bool:
    """Save a reply's outcome in one UPDATE: content, usage, finish reason, error, status, completion time.

    Only a reply still in one of `from_statuses` is changed, so a reply that was ended elsewhere (cancelled,
    or failed by a watchdog) keeps that outcome.

    Returns:
        True if this call ended the reply, False if it had already ended.
    """
    updated = Message.objects.filter(id=message_id, status__in=from_statuses).update(
        status=status,
        content=content,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        error=error,
        completed_at=timezone.now(),
    )
    return bool(updated)
