"""Request parsing and response shapes of the chats API (camelCase fields, as seed 004)."""

import uuid

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from chats.fields import StrictCharField, StrictModelSerializer, StrictUUIDField
from chats.models import ApiKey, Chat, Message, User
from pipelines.access import usable_models, usable_workflows
from pipelines.models import ModelConfig, Workflow


class UserSerializer(StrictModelSerializer):
    """The current user; `id` is the `userId` clients send."""

    isStaff = serializers.BooleanField(source="is_staff", read_only=True)
    email = StrictCharField(read_only=True, help_text="May be empty.")

    class Meta:
        model = User
        fields = ["id", "username", "email", "isStaff"]
        read_only_fields = fields


class LoginSerializer(serializers.Serializer):
    username = StrictCharField(max_length=150)
    password = StrictCharField(max_length=1024, trim_whitespace=False, style={"input_type": "password"})


class ModelSerializer(StrictModelSerializer):
    """A model users can pick; `id` is the `modelId` to send."""

    id = StrictCharField(source="model_id")
    name = StrictCharField(source="display_name")
    contextWindow = serializers.IntegerField(source="context_window")
    defaultMaxTokens = serializers.IntegerField(source="default_max_tokens")

    class Meta:
        model = ModelConfig
        fields = ["id", "name", "provider", "contextWindow", "defaultMaxTokens"]
        read_only_fields = fields


@extend_schema_field(OpenApiTypes.UUID)
class WorkflowField(serializers.PrimaryKeyRelatedField):
    """A workflow id the requesting user may use (own or shared, active); unknown ones are 400."""

    default_error_messages = {
        "does_not_exist": "Workflow {pk_value} does not exist or is not available to you.",
        "incorrect_type": "Workflow ids are UUIDs.",
    }

    def get_queryset(self):
        return usable_workflows(self.context["request"].user)

    def run_validation(self, data=serializers.empty):
        # DRF turns "" into null for related fields; an empty string is not a UUID, so say so.
        if data == "":
            self.fail("incorrect_type")
        return super().run_validation(data)

    def to_internal_value(self, data):
        # Check the UUID first: Django's UUIDField raises its own ValidationError, which DRF would not catch.
        try:
            uuid.UUID(str(data))
        except ValueError:
            self.fail("incorrect_type")
        return super().to_internal_value(data)


def validate_model_id(value: str) -> ModelConfig:
    model = usable_models().filter(model_id=value).first()
    if model is None:
        raise serializers.ValidationError(f"Unknown model '{value}'. GET /api/models lists the models you may use.")
    return model


class ChatSerializer(StrictModelSerializer):
    """A chat as the API shows it; `title`, `modelId`, `workflowId`, `pinned` and `archived` are writable."""

    modelId = StrictCharField(source="model_id", required=False, allow_blank=True, max_length=100)
    workflowId = WorkflowField(source="workflow", required=False, allow_null=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)
    source = serializers.CharField(read_only=True, help_text="How the chat was started: web, or openai (the /v1 API).")

    class Meta:
        model = Chat
        fields = ["id", "title", "modelId", "workflowId", "source", "createdAt", "updatedAt", "pinned", "archived"]
        read_only_fields = ["id"]
        extra_kwargs = {"title": {"required": False, "allow_blank": True}}

    def validate_modelId(self, value: str) -> str:
        if value:
            validate_model_id(value)
        return value


class MessageSerializer(StrictModelSerializer):
    """A message with its status, usage, tool calls and sources."""

    chatId = StrictUUIDField(source="chat_id", read_only=True)
    modelId = StrictCharField(source="model_id", read_only=True)
    workflowId = StrictUUIDField(source="workflow_id", read_only=True)
    parentId = StrictUUIDField(source="parent_id", read_only=True)
    finishReason = StrictCharField(source="finish_reason", read_only=True)
    usage = serializers.DictField(read_only=True, allow_null=True)
    toolCalls = serializers.JSONField(source="tool_calls", read_only=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    completedAt = serializers.DateTimeField(source="completed_at", read_only=True)

    class Meta:
        model = Message
        fields = [
            "id",
            "chatId",
            "role",
            "content",
            "status",
            "modelId",
            "workflowId",
            "parentId",
            "finishReason",
            "usage",
            "error",
            "toolCalls",
            "sources",
            "attachments",
            "createdAt",
            "completedAt",
        ]
        read_only_fields = fields


class SendMessageSerializer(serializers.Serializer):
    """The body of `POST /api/chats/<chatId>/messages/stream` (seed 004)."""

    content = StrictCharField(trim_whitespace=False, max_length=settings.CHATSITE_MAX_MESSAGE_CHARS)
    modelId = StrictCharField(max_length=100)
    userId = StrictCharField(max_length=100)
    workflowId = WorkflowField(required=False, allow_null=True)
    attachments = serializers.ListField(
        child=StrictUUIDField(),
        required=False,
        default=list,
        max_length=settings.CHATSITE_MAX_ATTACHMENTS,
        help_text="Documents (ids) to answer from: used whole when they fit the prompt, else searched (seed 002).",
    )
    # Branches (issue 18): the message the question follows, to continue a branch other than the newest.
    parentId = StrictUUIDField(
        required=False,
        allow_null=True,
        help_text="A message of this chat the question follows (the shown branch's last message); default: the newest.",
    )

    def validate_attachments(self, value: list) -> list[str]:
        from knowledge.access import visible_documents
        from knowledge.models import Document

        if not value:
            return []  # the common case: no query at all
        wanted = list(dict.fromkeys(str(v) for v in value))
        found = dict(visible_documents(self.context["request"].user).filter(id__in=wanted).values_list("id", "status"))
        found = {str(k): v for k, v in found.items()}
        missing = [d for d in wanted if d not in found]
        if missing:
            raise serializers.ValidationError(f"Document {missing[0]} does not exist or is not available to you.")
        waiting = [d for d in wanted if found[d] != Document.Status.READY]
        if waiting:
            raise serializers.ValidationError(
                f"Document {waiting[0]} is {found[waiting[0]]}, not ready: attach it once its status is ready."
            )
        return wanted

    def validate_content(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("The message is empty.")
        return value

    def validate_modelId(self, value: str) -> ModelConfig:
        return validate_model_id(value)

    def validated_workflow(self) -> Workflow | None:
        return self.validated_data.get("workflowId")


# --- Branches (issue 18) ---------------------------------------------------------------------------------------


class BranchMessageSerializer(MessageSerializer):
    """A message as the chat's message list shows it: with `siblingIds`, the ids of the messages with the same
    parent and role (oldest first, itself included), from the `siblings` context (`chats.branches.sibling_ids`)."""

    siblingIds = serializers.SerializerMethodField()

    class Meta(MessageSerializer.Meta):
        fields = [*MessageSerializer.Meta.fields, "siblingIds"]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.UUIDField()))
    def get_siblingIds(self, message: Message) -> list[str]:
        return self.context["siblings"].get(str(message.id), [str(message.id)])


class EditMessageSerializer(serializers.Serializer):
    """The body of `POST /api/chats/<chatId>/messages/<messageId>/edit`: the question's new text, and optional
    overrides of the model and workflow (defaults: those of the question edited)."""

    content = StrictCharField(trim_whitespace=False, max_length=settings.CHATSITE_MAX_MESSAGE_CHARS)
    modelId = StrictCharField(max_length=100, required=False)
    workflowId = WorkflowField(required=False, allow_null=True)

    def validate_content(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("The message is empty.")
        return value

    def validate_modelId(self, value: str) -> ModelConfig:
        return validate_model_id(value)


class ApiKeySerializer(StrictModelSerializer):
    """An API key as listed: never the key itself (only its first characters, `prefix`)."""

    readOnly = serializers.BooleanField(source="read_only", required=False, default=False)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    lastUsedAt = serializers.DateTimeField(source="last_used_at", read_only=True)
    revokedAt = serializers.DateTimeField(source="revoked_at", read_only=True)

    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "readOnly", "createdAt", "lastUsedAt", "revokedAt"]
        read_only_fields = ["id", "prefix"]
