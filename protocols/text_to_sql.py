"""Seed 001: streaming text to SQL (`../shared/seeds/001_*.txt`) over chatsite's replies.

- `POST /api/v1/stream/generate_sql` and `POST /api/v1/stream/ask` take `question` (required), `language`,
  `threadId` and, for ask, `sampleSize` (rows the summary reads); chatsite adds two optional fields:
  `connector` (a connector's name; default CHATSITE_TEXT_TO_SQL_CONNECTOR, the demo sales database) and
  `modelId` (default CHATSITE_TEXT_TO_SQL_MODEL). The question becomes a reply whose steps are the
  text-to-SQL pipeline (`pipelines.text_to_sql`): classify, retrieve_schema, generate_sql, and for ask
  execute_sql and summarize. A thread is a chat of the caller (`threadId` = chat id; a new one has
  `source: text_to_sql`), so it shows in the UI and its earlier questions and SQL inform the next.
- The stream is SSE `data:` lines: `{"state", "message"}` for UNDERSTANDING, SEARCHING, GENERATING (then
  EXECUTING and SUMMARIZING for ask), ending with `{"state": "FINISHED", "sql", "summary" (ask), "threadId"}`
  or `{"state": "FAILED", "error": {"code", "message"}, "threadId"}`. A question that is not about the data ends
  FAILED with code `NON_SQL_QUERY` and an `explanationQueryId` (the reply's id).
- `GET /api/v1/stream_explanation?queryId=<id>` streams that reply's text (the model's explanation) as
  `{"message": <fragment>}` lines, then `{"done": true}` (`{"error": {...}}` first when it failed).

Refusals before a stream are the API's `{"error", "message", "fields"?}` with its status codes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.views import APIView

from chats.access import access_chat, check_owner, parse_uuid
from chats.actions import do_send_message
from chats.fields import StrictCharField, StrictSlugField
from chats.limits import check_send_limits
from chats.models import Chat, Message
from chats.streaming import PING, sse_response
from pipelines.access import usable_connectors, usable_models
from pipelines.text_to_sql import definitions as kinds
from protocols.actions import do_start_conversation
from protocols.replies import reply_events

STATES = {
    kinds.CLASSIFY: ("UNDERSTANDING", "Analyzing your question..."),
    kinds.RETRIEVE_SCHEMA: ("SEARCHING", "Searching the semantic model..."),
    kinds.GENERATE_SQL: ("GENERATING", "Building SQL query..."),
    kinds.EXECUTE_SQL: ("EXECUTING", "Running the query..."),
    kinds.SUMMARIZE: ("SUMMARIZING", "Summarizing the results..."),
}
NON_SQL_QUERY = "NON_SQL_QUERY"
NON_SQL_MESSAGE = (
    "This question is not about the data this assistant can query. Read the explanation with "
    "GET /api/v1/stream_explanation?queryId=<explanationQueryId>."
)


class GenerateSqlRequest(serializers.Serializer):
    question = StrictCharField(max_length=settings.CHATSITE_MAX_MESSAGE_CHARS)
    language = StrictCharField(max_length=40, required=False)
    threadId = StrictCharField(max_length=100, required=False, allow_null=True)
    connector = StrictSlugField(max_length=100, required=False)
    modelId = StrictCharField(max_length=100, required=False)


class AskRequest(GenerateSqlRequest):
    sampleSize = serializers.IntegerField(min_value=1, max_value=500, required=False)


def data_line(body: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(body)}\n\n".encode()


def reply_steps(user, body: dict[str, Any], *, ask: bool) -> list[dict[str, Any]]:
    """The reply's text-to-SQL steps for this request, validated as a workflow of the caller's.

    Raises:
        ValidationError: 400 naming `connector` when it is not one the caller may use (missing, inactive or
            not granted: the same words), or `modelId` when it is not configured.
    """
    from pipelines.steps import validate_steps

    name = body.get("connector") or settings.CHATSITE_TEXT_TO_SQL_CONNECTOR
    if not usable_connectors(user).filter(name=name).exists():
        raise ValidationError({"connector": [f"No connector named '{name}' that you may use."]})
    language = body.get("language") or kinds.DEFAULT_LANGUAGE
    steps: list[dict[str, Any]] = [
        {"type": kinds.CLASSIFY, "connector": name, "language": language},
        {"type": kinds.RETRIEVE_SCHEMA},
        {"type": kinds.GENERATE_SQL},
    ]
    if ask:
        summarize = {"type": kinds.SUMMARIZE, "language": language}
        if body.get("sampleSize"):
            summarize["sample_size"] = body["sampleSize"]
        steps += [{"type": kinds.EXECUTE_SQL}, summarize]
    return validate_steps(steps, owner=user)


def _model(body: dict[str, Any]):
    name = body.get("modelId") or settings.CHATSITE_TEXT_TO_SQL_MODEL
    model = usable_models().filter(model_id=name).first()
    if model is None:
        raise ValidationError({"modelId": [f"Unknown model '{name}'; GET /api/models lists the models."]})
    return model


async def encode_states(reply: Message, *, ask: bool) -> AsyncIterator[bytes]:
    """A text-to-SQL reply's events as seed 001's states: one `{"state", "message"}` line per phase as its step
    starts, then FINISHED (`sql`, `summary` for ask, `threadId`) or FAILED (`error` `{code, message}`,
    `threadId`; `explanationQueryId` for a non-SQL question, after which this stream ends)."""
    thread = str(reply.chat_id)
    said: set[str] = set()
    sql, summary = "", ""

    def state(name: str, message: str) -> bytes | None:
        if name in said:
            return None
        said.add(name)
        return data_line({"state": name, "message": message})

    async for event in reply_events(str(reply.id)):
        if event is None:
            yield PING
            continue
        kind = event["type"]
        if kind == "start":
            line = state(*STATES[kinds.CLASSIFY])
        elif kind == "step" and event["step"] in STATES and event["state"] == "started":
            line = state(*STATES[event["step"]])
        elif kind == "step" and event["state"] == "finished":
            line = None
            sql = event.get("sql") or sql
            summary = event.get("summary") or summary
            if event["step"] == kinds.CLASSIFY and event.get("outcome") == "non_sql":
                yield data_line(
                    {
                        "state": "FAILED",
                        "error": {"code": NON_SQL_QUERY, "message": NON_SQL_MESSAGE},
                        "explanationQueryId": str(reply.id),
                        "threadId": thread,
                    }
                )
                return
        elif kind == "end" and event.get("finishReason") != "cancelled":
            final = {"state": "FINISHED", "sql": sql, **({"summary": summary} if ask else {}), "threadId": thread}
            yield data_line(final)
            return
        elif kind == "end":
            error = {"code": "cancelled", "message": "The question was cancelled."}
            yield data_line({"state": "FAILED", "error": error, "threadId": thread})
            return
        elif kind == "error":
            error = {"code": event["error"], "message": event["message"]}
            yield data_line({"state": "FAILED", "error": error, "threadId": thread})
            return
        else:
            line = None
        if line is not None:
            yield line


async def encode_explanation(reply: Message) -> AsyncIterator[bytes]:
    """A reply's text as seed 001's explanation stream: `{"message": fragment}` per text event, then
    `{"done": true}` (after `{"error": {code, message}}` when the reply failed)."""
    async for event in reply_events(str(reply.id)):
        if event is None:
            yield PING
        elif event["type"] == "content":
            yield data_line({"message": event["delta"]})
        elif event["type"] == "error":
            yield data_line({"error": {"code": event["error"], "message": event["message"]}})
            yield data_line({"done": True})
            return
        elif event["type"] == "end":
            yield data_line({"done": True})
            return


STREAM_RESPONSES = {
    (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description="`data:` lines, see the module."),
    400: OpenApiTypes.OBJECT,
    401: OpenApiTypes.OBJECT,
    403: OpenApiTypes.OBJECT,
    404: OpenApiTypes.OBJECT,
    409: OpenApiTypes.OBJECT,
    429: OpenApiTypes.OBJECT,
}


class _TextToSqlStreamView(APIView):
    ask = False
    request_serializer: type[serializers.Serializer] = GenerateSqlRequest

    def post(self, request: Request) -> StreamingHttpResponse:
        parsed = self.request_serializer(data=request.data if isinstance(request.data, dict) else {})
        parsed.is_valid(raise_exception=True)
        body = parsed.validated_data
        chat = access_chat(request.user, body["threadId"]) if body.get("threadId") else None
        steps = reply_steps(request.user, body, ask=self.ask)
        model = _model(body)
        check_send_limits(request, self, chat)
        question, options = body["question"], {"steps": steps}
        if chat is not None:
            _, reply, _ = do_send_message(
                request.user, chat, content=question, model=model, workflow=None, options=options
            )
        else:
            _, reply = do_start_conversation(
                request.user,
                turns=[(Message.Role.USER, question)],
                model=model,
                workflow=None,
                options=options,
                source=Chat.Source.TEXT_TO_SQL,
            )
        return sse_response(encode_states(reply, ask=self.ask))


class StreamGenerateSqlView(_TextToSqlStreamView):
    """`POST /api/v1/stream/generate_sql` (seed 001): a question becomes checked SQL, with its progress streamed.

    Status codes: 401 no key or session; 403 a read-only key, a session without its CSRF token, or a `threadId`
    of someone else's; 404 an unknown `threadId`; 400 a bad body, a connector the caller may not use, an unknown
    model; 409 a reply already running in the thread; 429 over the caller's limits.
    """

    @extend_schema(request=GenerateSqlRequest, responses=STREAM_RESPONSES)
    def post(self, request: Request) -> StreamingHttpResponse:
        return super().post(request)


class StreamAskView(_TextToSqlStreamView):
    """`POST /api/v1/stream/ask` (seed 001): SQL generation, execution and a summary, with progress streamed.

    Status codes as `/api/v1/stream/generate_sql`.
    """

    ask = True
    request_serializer = AskRequest

    @extend_schema(request=AskRequest, responses=STREAM_RESPONSES)
    def post(self, request: Request) -> StreamingHttpResponse:
        return super().post(request)


def access_reply(user, query_id: str) -> Message:
    """The assistant reply `query_id` if it is in one of `user`'s chats.

    Raises:
        NotFound: 404 no reply has that id (or it is not a UUID).
        PermissionDenied: 403 it is in someone else's chat.
    """
    reply = (
        Message.objects.select_related("chat")
        .filter(id=parse_uuid(query_id, "Query"), role=Message.Role.ASSISTANT)
        .first()
    )
    if reply is None:
        raise NotFound(f"Query {query_id} does not exist.", code="not_found")
    check_owner(reply.chat, user, "Query")
    return reply


class StreamExplanationView(APIView):
    """`GET /api/v1/stream_explanation?queryId=` (seed 001): the explanation of a non-SQL question, streamed.

    Status codes: 401 no key or session; 400 no `queryId`; 404 an unknown one; 403 someone else's.
    """

    @extend_schema(
        parameters=[OpenApiParameter("queryId", str, required=True, description="explanationQueryId")],
        responses={**STREAM_RESPONSES},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        query_id = request.query_params.get("queryId", "").strip()
        if not query_id:
            raise ValidationError({"queryId": ["Give the explanationQueryId of a NON_SQL_QUERY error."]})
        return sse_response(encode_explanation(access_reply(request.user, query_id)))
