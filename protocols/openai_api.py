"""The OpenAI-compatible API under /v1/: `GET /v1/models` and `POST /v1/chat/completions`.

Follows OpenAI's Chat Completions API reference: streamed replies are `chat.completion.chunk` objects as SSE
`data:` lines ending with `data: [DONE]` (with `stream_options.include_usage`, a last chunk with empty
`choices` carries `usage`); non-streamed replies are one `chat.completion` object; errors are
`{"error": {"message", "type", "param", "code"}}` with OpenAI's status codes. Each request becomes a chat of the
caller (`source: openai`) with a queued reply, produced by the same workflow, worker and Redis stream as a
seed 004 send: it counts in limits and quotas, shows in the UI, and can be watched, resumed and cancelled over
seed 004 (the response's `X-Chatsite-Chat-Id` and `X-Chatsite-Message-Id` headers name it). A client that
disconnects only stops reading.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from adrf.views import APIView as AsyncAPIView
from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chats.api_errors import exception_handler
from chats.limits import check_send_limits
from chats.models import Chat, Message
from chats.streaming import PING, sse_response
from pipelines.access import usable_models, usable_workflows
from protocols.actions import do_start_conversation
from protocols.openai_serializers import (
    ChatCompletionRequestSerializer,
    openai_error,
    resolve_model,
    workflow_model_name,
)
from protocols.replies import finished_reply, reply_events

# Finish reasons as OpenAI names them: a cancelled reply simply stopped.
FINISH_REASONS = {"stop": "stop", "length": "length", "cancelled": "stop"}


def openai_exception_handler(exc: Exception, context: dict) -> Response | None:
    """The API's exception handler, its answers reshaped into OpenAI's error object."""
    response = exception_handler(exc, context)
    if response is None:
        return None
    body = response.data or {}
    fields = body.get("fields") or {}
    param = next(iter(fields), None)
    code = body.get("error", "error")
    if code == "invalid_request" and param == "model":
        code = "model_not_found"
    response.data = openai_error(response.status_code, code, body.get("message", ""), param)
    return response


class OpenAIErrorsMixin:
    """Views of this module answer errors in OpenAI's shape."""

    def get_exception_handler(self):
        return openai_exception_handler


ERROR = inline_serializer(
    "OpenAIError",
    {
        "error": inline_serializer(
            "OpenAIErrorBody",
            {
                "message": serializers.CharField(),
                "type": serializers.CharField(),
                "param": serializers.CharField(allow_null=True),
                "code": serializers.CharField(allow_null=True),
            },
        )
    },
)
MODEL_FIELDS = {
    "id": serializers.CharField(),
    "object": serializers.CharField(),
    "created": serializers.IntegerField(),
    "owned_by": serializers.CharField(),
}
MODEL = inline_serializer("OpenAIModel", MODEL_FIELDS)


def _model_objects(user) -> list[dict[str, Any]]:
    """`GET /v1/models` entries: the models `user` may use, then their usable workflows as `workflow/<slug>`."""
    items = [
        {"id": m.model_id, "object": "model", "created": int(m.created_at.timestamp()), "owned_by": "chatsite"}
        for m in usable_models().order_by("model_id")
    ]
    seen = {item["id"] for item in items}
    for workflow in usable_workflows(user).order_by("owner_id", "created_at"):
        name = workflow_model_name(workflow)
        if name not in seen:
            seen.add(name)
            owner = "chatsite" if workflow.owner_id is None else user.get_username()
            created = int(workflow.created_at.timestamp())
            items.append({"id": name, "object": "model", "created": created, "owned_by": owner})
    return items


def model_not_found(name: str, param: str | None) -> Response:
    """404 `model_not_found`, as OpenAI answers for a model the caller cannot use."""
    message = f"The model '{name}' does not exist or you do not have access to it."
    return Response(openai_error(404, "model_not_found", message, param), status=404)


class ModelsView(OpenAIErrorsMixin, APIView):
    """`GET /v1/models`: the models and workflows the caller may name as `model`."""

    @extend_schema(
        operation_id="v1_models_list",
        responses={
            200: inline_serializer(
                "OpenAIModelList",
                {
                    "object": serializers.CharField(),
                    "data": inline_serializer("OpenAIModelItem", MODEL_FIELDS, many=True),
                },
            ),
            401: ERROR,
        },
    )
    def get(self, request: Request) -> Response:
        return Response({"object": "list", "data": _model_objects(request.user)})


class ModelDetailView(OpenAIErrorsMixin, APIView):
    """`GET /v1/models/<model>`: one model or workflow the caller may name; 404 otherwise."""

    @extend_schema(responses={200: MODEL, 401: ERROR, 404: ERROR})
    def get(self, request: Request, model: str) -> Response:
        for item in _model_objects(request.user):
            if item["id"] == model:
                return Response(item)
        return model_not_found(model, None)


def _sse(body: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


def _chunk(reply: Message, model: str, delta: dict | None, finish_reason: str | None = None, **extra: Any) -> bytes:
    """One `chat.completion.chunk` SSE line; `delta` None gives empty `choices` (the usage chunk)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    return _sse(
        {
            "id": f"chatcmpl-{reply.id}",
            "object": "chat.completion.chunk",
            "created": int(reply.created_at.timestamp()),
            "model": model,
            "system_fingerprint": None,
            "choices": choices,
            **extra,
        }
    )


async def encode_chunks(reply: Message, model: str, include_usage: bool) -> AsyncIterator[bytes]:
    """A reply's events as OpenAI `chat.completion.chunk` SSE lines, ending with `data: [DONE]`.

    The first chunk carries the role; each `content` event one chunk; `end` a chunk with the finish reason
    (then, with `include_usage`, one with empty `choices` and `usage`); `error` an `{"error": ...}` line (what
    the OpenAI SDKs raise as an APIError). Other event types (steps, sources, tool calls) have no place in
    this protocol and are skipped. `: ping` comments keep an idle line open.
    """
    usage_field = {"usage": None} if include_usage else {}
    yield _chunk(reply, model, {"role": "assistant", "content": ""}, **usage_field)
    async for event in reply_events(str(reply.id)):
        if event is None:
            yield PING
        elif event["type"] == "content":
            yield _chunk(reply, model, {"content": event["delta"]}, **usage_field)
        elif event["type"] == "end":
            yield _chunk(reply, model, {}, FINISH_REASONS.get(event.get("finishReason"), "stop"), **usage_field)
            if include_usage:
                used = event.get("usage") or {}
                usage = usage_object(used.get("promptTokens"), used.get("completionTokens"))
                yield _chunk(reply, model, None, usage=usage)
            yield b"data: [DONE]\n\n"
        elif event["type"] == "error":
            yield _sse(openai_error(503 if event.get("retryable") else 500, event["error"], event["message"]))


class ChatCompletionsView(OpenAIErrorsMixin, AsyncAPIView):
    """`POST /v1/chat/completions`: OpenAI's Chat Completions, streamed (`stream: true`) or not.

    Status codes: 401 no key or session; 403 a read-only key, or no CSRF token with a session; 400 a body
    OpenAI's API would refuse, or a parameter chatsite cannot honour (named in `param`); 404 `model_not_found`
    for a model or workflow the caller may not use; 429 over the caller's rate, replies in progress or daily
    token quota (`insufficient_quota`). A non-streamed reply that fails answers 503 (retryable) or 500 with its
    error code and message.
    """

    @extend_schema(
        request=ChatCompletionRequestSerializer,
        responses={
            (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="A `chat.completion`."),
            (200, "text/event-stream"): OpenApiResponse(
                OpenApiTypes.STR, description="`chat.completion.chunk` objects as SSE `data:` lines, then `[DONE]`."
            ),
            400: ERROR,
            401: ERROR,
            403: ERROR,
            404: ERROR,
            429: ERROR,
        },
    )
    async def post(self, request: Request) -> Response | StreamingHttpResponse:
        # Validation and the writes are sync (the ORM); only the wait for a non-streamed reply is async, so
        # that it holds no thread.
        started = await sync_to_async(self._start)(request)
        if not isinstance(started, tuple):
            return started
        reply, model, headers = started
        reply, terminal = await finished_reply(str(reply.id))
        if terminal.get("type") == "error" and reply.status not in Message.TERMINAL_STATUSES:
            # The reply goes on, but its progress cannot be followed from here right now.
            body = openai_error(503, terminal["error"], terminal["message"])
            return Response(body, status=503, headers={**headers, "Retry-After": "5"})
        if reply.status == Message.Status.FAILED:
            error = reply.error or {}
            status = 503 if error.get("retryable", True) else 500
            body = openai_error(status, error.get("code", "failed"), error.get("message", "The reply failed."))
            return Response(body, status=status, headers=headers)
        return Response(completion_object(reply, model), headers=headers)

    def _start(self, request: Request) -> Response | StreamingHttpResponse | tuple[Message, str, dict[str, str]]:
        """Check the request, start the reply; return a refusal, the stream, or what a non-streamed answer
        waits for: `(reply, model name, headers)`."""
        if not isinstance(request.data, dict):
            raise ParseError("The body must be a JSON object.")
        body = ChatCompletionRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        name = body.validated_data["model"]
        resolved = resolve_model(request.user, name)
        if resolved is None:
            return model_not_found(name, "model")
        model, workflow = resolved
        check_send_limits(request, self, None)
        chat, reply = do_start_conversation(
            request.user,
            turns=body.turns(),
            model=model,
            workflow=workflow,
            options=body.reply_options(),
            source=Chat.Source.OPENAI,
        )
        headers = {"X-Chatsite-Chat-Id": str(chat.id), "X-Chatsite-Message-Id": str(reply.id)}
        if not body.validated_data["stream"]:
            return reply, name, headers
        include_usage = bool((body.validated_data.get("stream_options") or {}).get("include_usage"))
        response = sse_response(encode_chunks(reply, name, include_usage))
        for header, value in headers.items():
            response[header] = value
        return response


def completion_object(reply: Message, model: str) -> dict[str, Any]:
    """A finished reply as OpenAI's `chat.completion` object (its saved text, finish reason and usage)."""
    return {
        "id": f"chatcmpl-{reply.id}",
        "object": "chat.completion",
        "created": int(reply.created_at.timestamp()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.content, "refusal": None},
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(reply.finish_reason, "stop"),
            }
        ],
        "usage": usage_object(reply.prompt_tokens, reply.completion_tokens),
    }


def usage_object(prompt_tokens: int | None, completion_tokens: int | None) -> dict[str, int]:
    """OpenAI's `usage`: `{"prompt_tokens", "completion_tokens", "total_tokens"}` (tokens)."""
    prompt, completion = prompt_tokens or 0, completion_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
