"""Seed 003: deepset-style search sessions and `chat-stream` over chatsite's replies.

- `GET, POST /api/v1/workspaces/<workspace>/search_sessions`: a search session is a chat of the caller
  (`source: search_session`); its earlier questions and answers are the history the next query sees.
- `POST /api/v1/workspaces/<workspace>/pipelines/<pipeline>/chat-stream` with `query`, `search_session_id` and
  `include_result`: a pipeline is a workflow the caller may use, named by the slug of its name. The answer
  streams as SSE `data:` lines, each `{"query_id", "type": "delta" | "result" | "error", "delta", "result",
  "error"}` with exactly one of the last three set (`../shared/seeds/003_*.txt`); `query_id` is the reply's id.

A workspace is the caller's own space: chatsite has one per user, named `default`. Refusals before the stream
answer `{"errors": ["<sentence>"]}` (what the seed's example client prints), with the API's status codes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chats import actions
from chats.access import access_chat
from chats.api_errors import exception_handler
from chats.fields import StrictCharField, StrictUUIDField
from chats.limits import check_send_limits
from chats.models import Chat, Message
from chats.streaming import PING, sse_response
from protocols.replies import finished_reply, reply_events
from protocols.workflows import find_workflow, workflow_model

WORKSPACE = "default"
"""The one workspace name chatsite answers to: each user's own space."""


def errors_exception_handler(exc: Exception, context: dict) -> Response | None:
    """The API's exception handler, its answers reshaped into seed 003's `{"errors": [...]}`."""
    response = exception_handler(exc, context)
    if response is not None:
        body = response.data or {}
        response.data = {"errors": [body.get("message", "The request failed.")], "code": body.get("error")}
    return response


class SearchSessionView(APIView):
    """Base of this module's views: seed 003's error shape, and the workspace check."""

    def get_exception_handler(self):
        return errors_exception_handler

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if kwargs.get("workspace") != WORKSPACE:
            raise NotFound(f"There is no workspace '{kwargs.get('workspace')}'; yours is '{WORKSPACE}'.")


ERRORS = inline_serializer("SeedErrors", {"errors": serializers.ListField(child=serializers.CharField())})
SESSION = inline_serializer(
    "SearchSession",
    {
        "search_session_id": serializers.UUIDField(),
        "name": serializers.CharField(),
        "pipeline_name": serializers.CharField(allow_null=True),
        "created_at": serializers.DateTimeField(),
    },
)


class CreateSessionSerializer(serializers.Serializer):
    """Optional: the pipeline (workflow slug) the session is for, and a name."""

    pipeline_name = StrictCharField(required=False, allow_null=True, max_length=200)
    name = StrictCharField(required=False, allow_blank=True, max_length=200)


def session_object(chat: Chat, pipeline: str | None = None) -> dict[str, Any]:
    return {
        "search_session_id": str(chat.id),
        "name": chat.title,
        "pipeline_name": pipeline,
        "created_at": chat.created_at.isoformat(),
    }


class SearchSessionsView(SearchSessionView):
    """`GET` the caller's search sessions (their chats, newest first, `?limit=` up to 100, default 10), `POST` a
    new one."""

    @extend_schema(
        responses={
            200: inline_serializer(
                "SearchSessionList",
                {"data": SESSION, "has_more": serializers.BooleanField(), "total": serializers.IntegerField()},
            ),
            401: ERRORS,
            404: ERRORS,
        }
    )
    def get(self, request: Request, workspace: str) -> Response:
        try:
            limit = min(100, max(1, int(request.query_params.get("limit", 10))))
        except ValueError:
            raise ParseError("limit must be a whole number.") from None
        chats = Chat.objects.filter(owner=request.user).order_by("-updated_at")
        total = chats.count()
        data = [session_object(chat) for chat in chats[:limit]]
        return Response({"data": data, "has_more": total > limit, "total": total})

    @extend_schema(request=CreateSessionSerializer, responses={201: SESSION, 400: ERRORS, 401: ERRORS, 404: ERRORS})
    def post(self, request: Request, workspace: str) -> Response:
        body = CreateSessionSerializer(data=request.data if isinstance(request.data, dict) else {})
        body.is_valid(raise_exception=True)
        pipeline = body.validated_data.get("pipeline_name")
        workflow = find_workflow(request.user, pipeline) if pipeline else None
        if pipeline and workflow is None:
            raise NotFound(f"There is no pipeline '{pipeline}' you may use.")
        chat = actions.do_create_chat(
            request.user,
            title=body.validated_data.get("name", ""),
            workflow=workflow,
            source=Chat.Source.SEARCH_SESSION,
        )
        return Response(session_object(chat, pipeline), status=status.HTTP_201_CREATED)


class ChatStreamSerializer(serializers.Serializer):
    query = StrictCharField(max_length=settings.CHATSITE_MAX_MESSAGE_CHARS)
    search_session_id = StrictUUIDField()
    include_result = serializers.BooleanField(required=False, default=False)


def _event(query_id: str, kind: str, value: Any) -> bytes:
    body = {"query_id": query_id, "type": kind, "delta": None, "result": None, "error": None, kind: value}
    return f"data: {json.dumps(body)}\n\n".encode()


def query_result(reply: Message, query: str) -> dict[str, Any]:
    """A finished reply as deepset's query response: the query, one generative answer citing its documents,
    and the documents (the reply's sources)."""
    documents = [
        {
            "id": str(source.get("id")),
            "content": source.get("snippet", ""),
            "content_type": "text",
            "score": source.get("score"),
            "meta": {
                key: source.get(key)
                for key in ("title", "number", "documentId", "collectionId", "page", "start", "end")
                if key in source
            },
        }
        for source in reply.sources or []
    ]
    answer = {
        "answer": reply.content,
        "type": "generative",
        "document_ids": [document["id"] for document in documents],
        "meta": {"finish_reason": reply.finish_reason, "usage": reply.usage, "message_id": str(reply.id)},
        "files": [],
    }
    query_id = str(reply.id)
    return {
        "query_id": query_id,
        "results": [{"query_id": query_id, "query": query, "answers": [answer], "documents": documents}],
    }


async def encode_chat_stream(reply: Message, query: str, include_result: bool) -> AsyncIterator[bytes]:
    """A reply's events as seed 003's stream: `delta` per text event; at the end `result` (when asked for) or,
    when the reply fails, `error`. Other event types are not part of this protocol."""
    query_id = str(reply.id)
    async for event in reply_events(query_id):
        if event is None:
            yield PING
        elif event["type"] == "content":
            yield _event(query_id, "delta", {"text": event["delta"]})
        elif event["type"] == "error":
            yield _event(query_id, "error", event["message"])
        elif event["type"] == "end" and include_result:
            saved, _ = await finished_reply(query_id)
            yield _event(query_id, "result", query_result(saved, query))


class ChatStreamView(SearchSessionView):
    """`POST .../pipelines/<pipeline>/chat-stream`: ask a question in a search session; stream the answer.

    Status codes: 401 no key or session; 404 unknown workspace, pipeline or search session; 403 someone
    else's search session, or a read-only key; 400 a bad body; 409 a reply is already running in the session;
    429 over the caller's limits.
    """

    @extend_schema(
        request=ChatStreamSerializer,
        responses={
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description="`data:` lines, see the module."),
            400: ERRORS,
            401: ERRORS,
            403: ERRORS,
            404: ERRORS,
            409: ERRORS,
            429: ERRORS,
        },
    )
    def post(self, request: Request, workspace: str, pipeline: str) -> StreamingHttpResponse:
        workflow = find_workflow(request.user, pipeline)
        if workflow is None:
            raise NotFound(f"There is no pipeline '{pipeline}' you may use.")
        body = ChatStreamSerializer(data=request.data if isinstance(request.data, dict) else {})
        body.is_valid(raise_exception=True)
        chat = access_chat(request.user, str(body.validated_data["search_session_id"]))
        model = workflow_model(workflow)
        if model is None:
            raise NotFound("No model is available to run this pipeline.")
        check_send_limits(request, self, chat)
        query = body.validated_data["query"]
        _, reply, _ = actions.do_send_message(request.user, chat, content=query, model=model, workflow=workflow)
        return sse_response(encode_chat_stream(reply, query, body.validated_data["include_result"]))
