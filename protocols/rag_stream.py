"""Seed 002: `POST /api/v1/chat/stream`, the RAG chat stream, over chatsite's replies.

The request is the seed's `ChatCompletionRequest`, validated by pydantic models written from the seed
(`../shared/seeds/002_*.txt`), so that refusals are FastAPI's 422 `{"detail": [{"loc", "msg", "type", "input",
"ctx"}]}`. It maps onto chatsite as follows (README, "Other protocols"):
- `query` is the question; `history` the turns before it, saved in a new chat of the caller
  (`source: rag_stream`), or `conversation_id` names one of the caller's chats to continue (its own branch is
  then the history, and `history` must be empty);
- `context_mode`: `rag` runs a retrieve step, `attachment` and `document` use the attached documents only,
  `hybrid` both, `none` neither;
- `rag_config.sources[]`: `name` is one of the caller's searchable collections (by name), `model_name` must be
  that collection's embedding model; `limit`, `similarity_threshold`, `weight`, `metadata_filters`,
  `retrieval_strategy`, `max_total_results` are the retrieve step's own options. Without `rag_config`, every
  collection the caller may search, embedded with `embedding_model` when it is given (it must be configured);
- `attachment_config.attachments[].storage_key` and `document_paths` are document ids (`GET /api/documents`),
  used whole when they fit the prompt and searched otherwise; `title`, `max_tokens` and `include_full_content`
  are accepted and not used;
- `llm_model` is a model id (default: the embedded model); `system_prompt`, `temperature` and `max_tokens` set
  the reply's own (left out, the model's defaults apply rather than the seed's 0.7 and 1,024 tokens). A model
  or embedding model that is not configured answers 503.
The stream is named SSE events: `sources` (`{"sources": [...]}`, always first, empty when there are none),
`text` (`{"content": ...}`) per text event, then `done` (`{"completed": true, ...}`), or `error`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import pydantic
from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from pydantic import BaseModel, Field
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chats.access import access_chat
from chats.actions import do_send_message
from chats.api_errors import exception_handler
from chats.limits import check_send_limits
from chats.models import Chat, Message
from chats.streaming import PING, sse_response
from protocols.actions import do_start_conversation
from protocols.replies import reply_events
from protocols.workflows import DEFAULT_MODEL_ID


class ChatMessageModel(BaseModel):
    role: Literal["user", "assistant", "system"]
    content: Annotated[str, Field(min_length=1)]


class DataSourceConfigModel(BaseModel):
    name: str
    model_name: str
    limit: Annotated[int, Field(ge=1, le=50)] = 5
    similarity_threshold: Annotated[float, Field(ge=0, le=1)] = 0.7
    weight: Annotated[float, Field(ge=0, le=2)] = 1.0
    metadata_filters: dict[str, Any] | None = None


class RAGConfigModel(BaseModel):
    sources: list[DataSourceConfigModel] = Field(default_factory=list, max_length=20)
    retrieval_strategy: Literal["merge", "sequential", "ensemble"] = "merge"
    max_total_results: Annotated[int, Field(ge=1, le=50)] = 10


class AttachmentModel(BaseModel):
    storage_key: Annotated[str, Field(min_length=1)]
    title: str | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    include_full_content: bool = True


class AttachmentConfigModel(BaseModel):
    attachments: list[AttachmentModel] = Field(default_factory=list, max_length=20)
    document_paths: Annotated[list[str], Field(max_length=20)] | None = None


class ChatCompletionRequest(BaseModel):
    """The seed's request body, field for field."""

    query: Annotated[str, Field(min_length=1, max_length=10000)]
    history: list[ChatMessageModel] = Field(default_factory=list, max_length=50)
    context_mode: Literal["rag", "attachment", "hybrid", "document", "none"] = "rag"
    rag_config: RAGConfigModel | None = None
    attachment_config: AttachmentConfigModel | None = None
    embedding_model: str | None = None
    llm_model: str | None = None
    system_prompt: str | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.7
    max_tokens: Annotated[int, Field(ge=1, le=8192)] = 1024
    conversation_id: str | None = None


def _detail(loc: list[Any], msg: str, kind: str, value: Any = None) -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": kind, "input": value}


class Unprocessable(exceptions.APIException):
    """422 in FastAPI's shape: `detail` is a list of `{loc, msg, type, input, ctx?}`."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__()
        self.items = detail


class NotConfigured(exceptions.APIException):
    """503: the named model or embedding model is not configured here (the seed's 503)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "not_configured"


def fastapi_exception_handler(exc: Exception, context: dict) -> Response | None:
    """The API's exception handler in FastAPI's shapes: 422 `{"detail": [...]}`, otherwise `{"detail": str}`."""
    if isinstance(exc, exceptions.ParseError):
        exc = Unprocessable([_detail([], f"JSON decode error: {exc.detail}", "json_invalid")])
    if isinstance(exc, Unprocessable):
        return Response({"detail": exc.items}, status=exc.status_code)
    response = exception_handler(exc, context)
    if response is not None:
        body = response.data or {}
        response.data = {"detail": body.get("message", "The request failed."), "code": body.get("error")}
    return response


def parse_request(data: Any) -> ChatCompletionRequest:
    """The body as the seed's request model.

    Raises:
        Unprocessable: 422 with pydantic's errors (locations under `body`, as FastAPI reports them).
    """
    try:
        return ChatCompletionRequest.model_validate(data)
    except pydantic.ValidationError as exc:
        # pydantic's own JSON keeps `ctx` serialisable (an exception in it becomes its message).
        items = json.loads(exc.json(include_url=False))
        for item in items:
            item["loc"] = ["body", *item["loc"]]
        raise Unprocessable(items) from exc


def _models(body: ChatCompletionRequest):
    """The answering model and, when named, the embedding model; 503 when either is not configured."""
    from knowledge.models import EmbeddingModel
    from pipelines.access import usable_models

    name = body.llm_model or DEFAULT_MODEL_ID
    model = usable_models().filter(model_id=name).first()
    if model is None:
        raise NotConfigured(f"The model '{name}' is not configured here; GET /api/models lists the models.")
    embedding = None
    if body.embedding_model:
        embedding = EmbeddingModel.objects.filter(name=body.embedding_model, is_active=True).first()
        if embedding is None:
            raise NotConfigured(f"The embedding model '{body.embedding_model}' is not configured here.")
    return model, embedding


def _retrieve_step(user, body: ChatCompletionRequest, embedding) -> dict[str, Any]:
    """The retrieve step for `rag_config` (collections by name), or for every collection the user may search."""
    from knowledge.access import visible_collections

    collections = visible_collections(user).select_related("embedding_model")
    config = body.rag_config or RAGConfigModel()
    problems, sources = [], []
    for index, source in enumerate(config.sources):
        found = [c for c in collections if c.name == source.name]
        if not found:
            problems.append(
                _detail(["rag_config", "sources", index, "name"], "No such collection.", "not_found", source.name)
            )
            continue
        if found[0].embedding_model.name != source.model_name:
            problems.append(
                _detail(
                    ["rag_config", "sources", index, "model_name"],
                    f"This collection is embedded with '{found[0].embedding_model.name}'.",
                    "value_error",
                    source.model_name,
                )
            )
            continue
        sources.append(
            {
                "collection": str(found[0].id),
                "limit": source.limit,
                "similarity_threshold": source.similarity_threshold,
                "weight": source.weight,
                "metadata_filters": source.metadata_filters or {},
            }
        )
    if problems:
        raise Unprocessable(problems)
    if not config.sources and embedding is not None:
        # "Embedding model for query (when no rag_config specified)": the collections embedded with it.
        sources = [{"collection": str(c.id)} for c in collections if c.embedding_model_id == embedding.id]
        if not sources:
            return {}
    return {
        "type": "retrieve",
        "sources": sources,
        "retrieval_strategy": config.retrieval_strategy,
        "max_total_results": config.max_total_results,
    }


def _attachment_ids(user, body: ChatCompletionRequest) -> list[str]:
    """The documents the request attaches, checked readable by the caller (422 otherwise)."""
    from knowledge.access import visible_documents

    config = body.attachment_config or AttachmentConfigModel()
    keys = [
        (["attachment_config", "attachments", i, "storage_key"], a.storage_key)
        for i, a in enumerate(config.attachments)
    ]
    keys += [(["attachment_config", "document_paths", i], p) for i, p in enumerate(config.document_paths or [])]
    readable = {str(d) for d in visible_documents(user).filter(status="ready").values_list("id", flat=True)}
    problems = [
        _detail(loc, "No ready document you may read has this id.", "not_found", key)
        for loc, key in keys
        if key not in readable
    ]
    if problems:
        raise Unprocessable(problems)
    return list(dict.fromkeys(key for _, key in keys))[: settings.CHATSITE_MAX_ATTACHMENTS]


def reply_plan(user, body: ChatCompletionRequest) -> tuple[list[dict[str, Any]], list[str]]:
    """The reply's steps (validated as a workflow's) and its attachments, from the request's context options."""
    from pipelines.steps import validate_steps

    _, embedding = _models(body)
    steps: list[dict[str, Any]] = []
    if body.system_prompt:
        steps.append({"type": "system_prompt", "text": body.system_prompt})
    if body.context_mode in ("rag", "hybrid") and (step := _retrieve_step(user, body, embedding)):
        steps.append(step)
    attachments = _attachment_ids(user, body) if body.context_mode in ("attachment", "hybrid", "document") else []
    steps.append({"type": "generate"})
    return validate_steps(steps, owner=user), attachments


def _named(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def encode_rag_stream(reply: Message) -> AsyncIterator[bytes]:
    """A reply's events as seed 002's named events: `sources` first (empty when the reply cites none), `text`
    per text event, then `done`; a failure ends with `error` (`{"error", "message", "retryable"}`)."""
    sources_sent = False
    async for event in reply_events(str(reply.id)):
        if event is None:
            yield PING
            continue
        kind = event["type"]
        if kind == "sources" and not sources_sent:
            sources_sent = True
            yield _named("sources", {"sources": event["sources"]})
        elif kind in ("content", "end") and not sources_sent:
            sources_sent = True
            yield _named("sources", {"sources": []})
        if kind == "content":
            yield _named("text", {"content": event["delta"]})
        elif kind == "end":
            yield _named(
                "done",
                {
                    "completed": event.get("finishReason") != "cancelled",
                    "finish_reason": event.get("finishReason"),
                    "usage": event.get("usage"),
                    "message_id": str(reply.id),
                    "conversation_id": str(reply.chat_id),
                },
            )
        elif kind == "error":
            yield _named("error", {k: event[k] for k in ("error", "message", "retryable")})


class RagChatStreamView(APIView):
    """`POST /api/v1/chat/stream` (seed 002): a RAG answer as named SSE events: sources, text..., done.

    Status codes: 401 no key or session; 403 a read-only key, or a session without its CSRF token; 404/403 a
    `conversation_id` that is unknown or someone else's; 422 a body the seed's model refuses, unknown
    collections or documents; 409 a reply already running in the conversation; 429 over the caller's limits;
    503 a model or embedding model that is not configured.
    """

    def get_exception_handler(self):
        return fastapi_exception_handler

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses={
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description="Named events, see the module."),
            401: OpenApiTypes.OBJECT,
            403: OpenApiTypes.OBJECT,
            404: OpenApiTypes.OBJECT,
            409: OpenApiTypes.OBJECT,
            422: OpenApiTypes.OBJECT,
            429: OpenApiTypes.OBJECT,
            503: OpenApiTypes.OBJECT,
        },
    )
    def post(self, request: Request) -> StreamingHttpResponse:
        body = parse_request(request.data)
        chat = access_chat(request.user, body.conversation_id) if body.conversation_id else None
        if chat is not None and body.history:
            raise Unprocessable(
                [_detail(["history"], "Leave history empty when continuing a conversation.", "value_error")]
            )
        model, _ = _models(body)
        steps, attachments = reply_plan(request.user, body)
        check_send_limits(request, self, chat)
        # The seed's defaults (0.7, 1024 tokens) stand for "not asked": the model's own settings apply then, as
        # 1,024 tokens can be more than a small model's whole context window.
        options = {
            "steps": steps,
            **{f: getattr(body, f) for f in ("temperature", "max_tokens") if f in body.model_fields_set},
        }
        if chat is not None:
            _, reply, _ = do_send_message(
                request.user,
                chat,
                content=body.query,
                model=model,
                workflow=None,
                attachments=attachments,
                options=options,
            )
        else:
            _, reply = do_start_conversation(
                request.user,
                turns=[*((m.role, m.content) for m in body.history), (Message.Role.USER, body.query)],
                model=model,
                workflow=None,
                options=options,
                source=Chat.Source.RAG_STREAM,
                attachments=attachments,
            )
        return sse_response(encode_rag_stream(reply))
