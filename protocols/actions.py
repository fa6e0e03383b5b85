"""Writes for the protocols: a whole conversation sent in one request becomes a chat with a queued reply."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from chats.actions import TITLE_FROM_MESSAGE_CHARS, enqueue_on_commit, new_reply
from chats.models import Chat, Message, User
from pipelines.models import ModelConfig, Workflow


def do_start_conversation(
    user: User,
    *,
    turns: list[tuple[str, str]],
    model: ModelConfig,
    workflow: Workflow | None,
    options: dict[str, Any],
    source: str,
    attachments: list[str] | None = None,
) -> tuple[Chat, Message]:
    """Save a conversation a client sent whole (OpenAI's `messages`) as a new chat of `user`, and queue a reply.

    Every turn is saved as a completed message, each the parent of the next (one branch), the last one being
    the user's question; then a `queued` assistant reply answers it. All in one transaction; the reply is
    enqueued once it has committed, exactly as a seed 004 send, so the reply is owned, counted, resumable and
    cancellable the same way.

    Args:
        turns: `(role, content)` pairs, oldest first; roles `system`, `user`, `assistant`; the last is `user`.
        model: the model that answers.
        workflow: the workflow that produces the reply, or None.
        options: the reply's generation settings (`Message.options`: temperature, max_tokens, stop).
        source: `Chat.Source` value naming the protocol.
        attachments: ids of documents (already checked readable) attached to the question.

    Returns:
        `(chat, reply)`.

    Raises:
        ValueError: when `turns` is empty or does not end with a user turn (the serializer refuses those first).
    """
    if not turns or turns[-1][0] != Message.Role.USER:
        raise ValueError("A conversation must end with a user message.")
    question = turns[-1][1]
    title = " ".join(question.split())[:TITLE_FROM_MESSAGE_CHARS]
    now = timezone.now()
    with transaction.atomic():
        chat = Chat.objects.create(owner=user, title=title, model_id=model.model_id, workflow=workflow, source=source)
        rows: list[Message] = []
        parent: Message | None = None
        for number, (role, content) in enumerate(turns):
            last = number == len(turns) - 1
            parent = Message(
                attachments=(attachments or []) if last else [],
                chat=chat,
                role=role,
                content=content,
                status=Message.Status.COMPLETED,
                model_id=model.model_id,
                workflow=workflow,
                parent=parent,
                # Microseconds apart, so that ordering by time keeps the conversation's order.
                created_at=now + timedelta(microseconds=number),
            )
            rows.append(parent)
        reply = new_reply(chat, parent, model, workflow, parent.created_at, options=options)
        rows.append(reply)
        Message.objects.bulk_create(rows)
        enqueue_on_commit(reply)
    return chat, reply
