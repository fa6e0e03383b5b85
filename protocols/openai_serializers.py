"""Request parsing for the OpenAI-compatible API (`POST /v1/chat/completions`), and its error shape.

Follows OpenAI's Chat Completions API reference (the request body of `POST /v1/chat/completions` and its error
object `{"error": {"message", "type", "param", "code"}}`). Parameters chatsite cannot honour are refused with a
400 naming them, rather than silently ignored; sampling knobs it does not have (`top_p`, penalties, `seed`,
`logit_bias`) and bookkeeping fields (`user`, `metadata`, `store`, `service_tier`) are accepted and ignored.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from chats.fields import StrictCharField, StrictChoiceField
from chats.models import Message, User
from pipelines.access import usable_models
from pipelines.models import ModelConfig, Workflow
from protocols.workflows import find_workflow, workflow_model, workflow_slug

WORKFLOW_MODEL_PREFIX = "workflow/"
"""`model` names a workflow as `workflow/<slug of its name>` (GET /v1/models lists them)."""

MAX_STOP_SEQUENCES = 4
"""OpenAI's limit on `stop`."""

# Roles as OpenAI names them -> chatsite's. `developer` is the newer name of `system`.
ROLES = {
    "system": Message.Role.SYSTEM,
    "developer": Message.Role.SYSTEM,
    "user": Message.Role.USER,
    "assistant": Message.Role.ASSISTANT,
}


def workflow_model_name(workflow: Workflow) -> str:
    """The `model` a client sends to use `workflow`: `workflow/<slug>`."""
    return f"{WORKFLOW_MODEL_PREFIX}{workflow_slug(workflow)}"


def resolve_model(user: User, name: str) -> tuple[ModelConfig, Workflow | None] | None:
    """The model and workflow that `model` names for `user`, or None when it names nothing they may use.

    A model id (GET /api/models) answers with that model and no workflow; `workflow/<slug>` one of the user's
    usable workflows (`protocols.workflows.find_workflow`) with the model its replies use.
    """
    if not name.startswith(WORKFLOW_MODEL_PREFIX):
        model = usable_models().filter(model_id=name).first()
        return (model, None) if model is not None else None
    workflow = find_workflow(user, name[len(WORKFLOW_MODEL_PREFIX) :])
    model = workflow_model(workflow) if workflow is not None else None
    return (model, workflow) if model is not None else None


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {
                "type": "array",
                "items": {"type": "object", "properties": {"type": {"type": "string"}, "text": {"type": "string"}}},
            },
        ]
    }
)
class ContentField(serializers.Field):
    """A message's `content`: a string, or a list of `{"type": "text", "text": ...}` parts (joined)."""

    default_error_messages = {
        "invalid": "content must be a string or a list of text parts.",
        "not_text": "Only text content parts are supported (type 'text'); images, audio and files are not.",
        "too_long": "content is longer than {limit} characters.",
    }

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, list):
            parts = []
            for part in data:
                if not isinstance(part, dict) or not isinstance(part.get("text"), str):
                    self.fail("not_text" if isinstance(part, dict) else "invalid")
                if part.get("type") != "text":
                    self.fail("not_text")
                parts.append(part["text"])
            data = "".join(parts)
        if not isinstance(data, str):
            self.fail("invalid")
        if len(data) > settings.CHATSITE_MAX_MESSAGE_CHARS:
            self.fail("too_long", limit=settings.CHATSITE_MAX_MESSAGE_CHARS)
        return data

    def to_representation(self, value: str) -> str:
        return value


class ChatMessageSerializer(serializers.Serializer):
    """One entry of `messages`: `role` (system, developer, user, assistant) and `content`; `name` is ignored."""

    role = StrictChoiceField(
        choices=list(ROLES),
        error_messages={
            "invalid_choice": "role '{input}' is not supported: use system, developer, user or assistant "
            "(chatsite runs its tools on the server, so tool messages have no place here)."
        },
    )
    content = ContentField(allow_null=True, required=False)
    name = StrictCharField(max_length=256, required=False)


class StreamOptionsSerializer(serializers.Serializer):
    include_usage = serializers.BooleanField(required=False, default=False)


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]})
class StopField(serializers.Field):
    """`stop`: one string or up to four; each at most 200 characters."""

    def to_internal_value(self, data: Any) -> list[str]:
        items = [data] if isinstance(data, str) else data
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise serializers.ValidationError("stop must be a string or a list of strings.")
        if len(items) > MAX_STOP_SEQUENCES or any(len(s) > 200 for s in items):
            raise serializers.ValidationError(f"stop takes at most {MAX_STOP_SEQUENCES} strings of 200 characters.")
        return [s for s in items if s]

    def to_representation(self, value: list[str]) -> list[str]:
        return value


class ChatCompletionRequestSerializer(serializers.Serializer):
    """The body of `POST /v1/chat/completions` (OpenAI's Chat Completions API)."""

    model = StrictCharField(max_length=200)
    messages = ChatMessageSerializer(many=True, allow_empty=False, max_length=200)
    stream = serializers.BooleanField(required=False, default=False)
    stream_options = StreamOptionsSerializer(required=False, allow_null=True)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0.0, max_value=2.0)
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=100000)
    max_completion_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=100000)
    stop = StopField(required=False, allow_null=True)
    n = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=1)
    user = StrictCharField(required=False, max_length=256, allow_blank=True)
    # Refused unless empty or off: chatsite cannot honour them (see `validate`).
    tools = serializers.ListField(required=False, allow_null=True)
    tool_choice = serializers.JSONField(required=False, allow_null=True)
    response_format = serializers.JSONField(required=False, allow_null=True)
    logprobs = serializers.BooleanField(required=False, allow_null=True)

    def validate_messages(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if value[-1]["role"] != "user" or not (value[-1].get("content") or "").strip():
            raise serializers.ValidationError("The last message must be the user's, with some text.")
        return value

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("tools"):
            raise serializers.ValidationError(
                {
                    "tools": "Client-side tools are not supported: name a workflow (workflow/<name>) whose tools "
                    "chatsite runs on the server."
                }
            )
        if data.get("tool_choice") not in (None, "none", "auto"):
            raise serializers.ValidationError({"tool_choice": "There are no client-side tools to choose."})
        response_format = data.get("response_format")
        if response_format not in (None, {"type": "text"}):
            raise serializers.ValidationError({"response_format": 'Only {"type": "text"} is supported.'})
        if data.get("logprobs"):
            raise serializers.ValidationError({"logprobs": "Log probabilities are not available."})
        return data

    def turns(self) -> list[tuple[str, str]]:
        """The conversation as `(role, content)` pairs for `do_start_conversation` (empty turns dropped,
        except the last)."""
        messages = self.validated_data["messages"]
        pairs = [(ROLES[m["role"]], m.get("content") or "") for m in messages]
        return [pair for pair in pairs[:-1] if pair[1]] + [pairs[-1]]

    def reply_options(self) -> dict[str, Any]:
        """`Message.options` for the reply: `temperature`, `max_tokens`, `stop`, where the client set them."""
        data = self.validated_data
        options: dict[str, Any] = {}
        if data.get("temperature") is not None:
            options["temperature"] = data["temperature"]
        if (limit := data.get("max_completion_tokens") or data.get("max_tokens")) is not None:
            options["max_tokens"] = limit
        if data.get("stop"):
            options["stop"] = data["stop"]
        return options


# OpenAI's error `type` by status code (the SDKs choose their exception class by status alone).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: `{"error": {"message", "type", "param", "code"}}`."""
    kind = "insufficient_quota" if code == "quota_exceeded" else ERROR_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
