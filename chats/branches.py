"""Branches of a chat's message tree (issue 18): edit a sent question, list one branch, siblings, a send's parent.

Messages form a tree through `Message.parent` (a reply's parent is its question; a question's parent is the
reply before it). Regenerate makes sibling replies; an edit makes a sibling question. A *branch* is the chain
of parents from one message (its leaf) back to a root. Everything here reads a chat's messages in one query
and walks the links in memory, as `pipelines.generation.branch_history` does.
"""

import uuid
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone
from rest_framework.exceptions import NotFound, ValidationError

from chats.actions import enqueue_on_commit, new_reply, running_reply
from chats.exceptions import ReplyInProgress
from chats.models import Chat, Message
from pipelines.models import ModelConfig, Workflow

LATEST = "latest"


def sibling_ids(messages: Iterable[Message]) -> dict[str, list[str]]:
    """For each message (id as str), the ids of the messages with the same parent and role, oldest first,
    itself included: what a client shows as `< 2 / 3 >`. `messages` must be all of one chat's messages."""
    groups: dict[tuple, list[Message]] = {}
    for message in messages:
        groups.setdefault((message.parent_id, message.role), []).append(message)
    result: dict[str, list[str]] = {}
    for group in groups.values():
        ids = [str(m.id) for m in sorted(group, key=lambda m: (m.created_at, str(m.id)))]
        for message_id in ids:
            result[message_id] = ids
    return result


def branch_of(messages: list[Message], leaf_id: str) -> list[Message]:
    """The messages on the branch ending at `leaf_id` (its chain of parents, oldest first, the leaf included).

    `messages` is all of one chat's messages; `leaf_id` is a message id (str), or "latest" for the newest
    message (which always is a leaf: a message's children are created after it).

    Raises:
        NotFound: 404 when `leaf_id` is not a message of these messages (an empty chat has no "latest").
        ValidationError: 400 (`branch`) when `leaf_id` is neither "latest" nor a UUID.
    """
    rows = {m.id: m for m in messages}
    if leaf_id == LATEST:
        leaf = max(messages, key=lambda m: m.created_at, default=None)
        if leaf is None:
            return []
    else:
        try:
            leaf = rows.get(uuid.UUID(leaf_id))
        except ValueError:
            raise ValidationError({"branch": ["A message id (a UUID), or 'latest'."]}) from None
        if leaf is None:
            raise NotFound(f"Message {leaf_id} does not exist in this chat.", code="not_found")
    chain: list[Message] = []
    current = leaf
    while current is not None and len(chain) < len(rows):  # the bound guards against a cycle
        chain.append(current)
        current = rows.get(current.parent_id)
    chain.reverse()
    return chain


def parent_in_chat(chat: Chat, parent_id: uuid.UUID | None) -> str | None:
    """`parent_id` as a str if it names a message of `chat` (None stays None: the send's default parent).

    Raises:
        ValidationError: 400 (`parentId`) when it is no message of this chat.
    """
    if parent_id is None:
        return None
    if not chat.messages.filter(id=parent_id).exists():
        raise ValidationError({"parentId": [f"Message {parent_id} does not exist in this chat."]})
    return str(parent_id)


def check_editable(message: Message) -> None:
    """Raises ValidationError (400, `messageId`) unless `message` is a user's question, the only kind edited."""
    if message.role != Message.Role.USER:
        raise ValidationError({"messageId": ["Only your own messages can be edited; regenerate a reply instead."]})


def do_edit_message(
    chat: Chat, message: Message, *, content: str, model: ModelConfig, workflow: Workflow | None
) -> tuple[Message, Message]:
    """Edit a sent question: a sibling question (same parent as `message`, `content`, the same attachments)
    and a `queued` reply to it, in one transaction; the reply is enqueued once it commits. The old branch
    stays as it was, and the new reply's prompt holds only its own branch.

    Returns:
        `(question, reply)`, both saved.

    Raises:
        ValidationError: 400 (`messageId`) when `message` is not a user's message.
        ReplyInProgress: 409 when the chat already has a reply queued or streaming.
    """
    check_editable(message)
    with transaction.atomic():
        chat = Chat.objects.select_for_update().get(pk=chat.pk)
        running = running_reply(chat)
        if running is not None:
            raise ReplyInProgress(running.id)
        now = timezone.now()
        question = Message(
            chat=chat,
            role=Message.Role.USER,
            content=content,
            status=Message.Status.COMPLETED,
            model_id=model.model_id,
            workflow=workflow,
            parent_id=message.parent_id,
            attachments=list(message.attachments or []),
            created_at=now,
        )
        reply = new_reply(chat, question, model, workflow, now)
        Message.objects.bulk_create([question, reply])
        enqueue_on_commit(reply)
        Chat.objects.filter(pk=chat.pk).update(model_id=model.model_id, updated_at=now)
    return question, reply
