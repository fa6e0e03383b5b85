"""Models side by side (issue 18): one question answered by 2 to 4 models (or workflows) at once.

The replies are siblings (the same `parent`: the question), so each sees only its own branch, and the client's
`< n / m >` switcher shows them as versions of one answer. The question and its replies are written in one
transaction; each reply is enqueued once it commits, and streams on its own resume stream
(`GET .../messages/<id>/stream`), so every event keeps the seed 004 contract unchanged.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone
from rest_framework import serializers

from chats.actions import TITLE_FROM_MESSAGE_CHARS, enqueue_on_commit, new_reply, running_and_newest
from chats.exceptions import ReplyInProgress
from chats.fields import StrictCharField, StrictUUIDField
from chats.models import Chat, Message, User
from chats.serializers import WorkflowField, validate_model_id
from pipelines.models import ModelConfig, Workflow

MIN_TARGETS = 2
MAX_TARGETS = 4


class CompareTargetSerializer(serializers.Serializer):
    """One model (and optionally a workflow) to answer the question; both must be usable by the caller."""

    modelId = StrictCharField(max_length=100)
    workflowId = WorkflowField(required=False, allow_null=True)

    def validate_modelId(self, value: str) -> ModelConfig:
        return validate_model_id(value)


class CompareSerializer(serializers.Serializer):
    """The body of `POST /api/chats/<chatId>/messages/compare`: the question and its 2 to 4 targets."""

    content = StrictCharField(trim_whitespace=False, max_length=settings.CHATSITE_MAX_MESSAGE_CHARS)
    userId = StrictCharField(max_length=100, required=False)
    targets = CompareTargetSerializer(many=True, min_length=MIN_TARGETS, max_length=MAX_TARGETS)
    parentId = StrictUUIDField(
        required=False,
        allow_null=True,
        help_text="A message of this chat the question follows (the shown branch's last message); default: the newest.",
    )

    def validate_content(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("The message is empty.")
        return value


class CompareReplySerializer(serializers.Serializer):
    """One queued reply of a compare: stream it from `GET /api/chats/<chatId>/messages/<messageId>/stream`."""

    messageId = serializers.UUIDField(read_only=True)
    modelId = serializers.CharField(read_only=True)
    workflowId = serializers.UUIDField(read_only=True, allow_null=True)


class CompareResultSerializer(serializers.Serializer):
    """The answer of a compare (201): the saved question and its replies, in the order of the targets."""

    questionId = serializers.UUIDField(read_only=True)
    replies = CompareReplySerializer(many=True, read_only=True)


def compare_result(question: Message, replies: list[Message]) -> dict:
    """The 201 body (`CompareResultSerializer`'s shape) for a compare's question and replies."""
    return {
        "questionId": str(question.id),
        "replies": [
            {"messageId": str(r.id), "modelId": r.model_id, "workflowId": str(r.workflow_id) if r.workflow_id else None}
            for r in replies
        ],
    }


def do_compare(
    user: User,
    chat: Chat,
    *,
    content: str,
    targets: list[tuple[ModelConfig, Workflow | None]],
    parent_id: str | None = None,
) -> tuple[Message, list[Message]]:
    """Save a question and one `queued` reply per `(model, workflow)` target (siblings: each reply's parent is
    the question), in one transaction that locks the chat, as `chats.actions.do_send_message` does; each reply
    is enqueued once it commits. The question follows `parent_id` (checked by the caller with
    `chats.branches.parent_in_chat`) when given, else the chat's newest message.

    The chat's "one reply at a time" rule is checked once, before the replies are written together, so they
    run side by side; while any of them is queued or streaming, a later send, regenerate, edit or compare in
    the chat is 409.

    Returns:
        `(question, replies)`, replies in the order of `targets`.

    Raises:
        ReplyInProgress: 409 when the chat already has a reply queued or streaming.
    """
    title = " ".join(content.split())[:TITLE_FROM_MESSAGE_CHARS]
    first_model = targets[0][0]
    with transaction.atomic():
        now = timezone.now()
        # The chat's UPDATE takes its row lock, so that the read below sees any send that committed before.
        Chat.objects.filter(pk=chat.pk).update(
            model_id=first_model.model_id,
            updated_at=now,
            title=Case(When(title="", then=Value(title)), default=F("title")),
        )
        running, previous_id = running_and_newest(chat)
        if running is not None:
            raise ReplyInProgress(running.id)
        question = Message(
            chat=chat,
            role=Message.Role.USER,
            content=content,
            status=Message.Status.COMPLETED,
            model_id=first_model.model_id,
            parent_id=parent_id or previous_id,
            created_at=now,
        )
        replies = []
        for index, (model, workflow) in enumerate(targets):
            # Each a microsecond apart, so that the siblings' order (oldest first) is the targets' order.
            replies.append(new_reply(chat, question, model, workflow, now + index * timedelta(microseconds=1)))
        Message.objects.bulk_create([question, *replies])
        enqueue_on_commit(*replies)
    return question, replies
