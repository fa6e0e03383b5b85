"""Seed 000's requests as chatsite actions: check a `StreamRequest` and start its reply, find a reply to cancel.

Synchronous (the ORM): `protocols.connect.service` runs these in a worker thread. Refusals are `ConnectError`s
with a code and a sentence; chatsite's own API errors (409 reply in progress, 429 limits) are mapped onto
Connect codes by `connect_error`.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from django.conf import settings
from rest_framework import exceptions

from chats.actions import do_send_message
from chats.auth import bearer_key, find_api_key
from chats.limits import check_send_limits
from chats.models import Chat, Message, User
from pipelines.access import usable_connectors, usable_models, usable_workflows
from pipelines.models import Connector, ModelConfig, Workflow
from protocols.actions import do_start_conversation
from protocols.connect.encoder import ReplyInfo
from protocols.connect.stream_pb import StreamRequest
from protocols.workflows import DEFAULT_MODEL_ID, workflow_model

UNSUPPORTED_TOOLS = {
    "web_search_enabled": "web search",
    "ontology_enabled": "ontology queries",
    "python_enabled": "Python execution",
    "streamlit_enabled": "Streamlit apps",
    "google_drive_enabled": "Google Drive",
    "powerbi_enabled": "Power BI",
}
"""ChatTools flags chatsite cannot honour: a request that sets one is refused (invalid_argument), never half-served."""

SQL_INSTRUCTIONS = (
    "You can read these databases with the sql_query tool (PostgreSQL: one SELECT per call). Query them to answer "
    "questions about their data, then answer in a few sentences with the numbers you used.\n"
)

_HTTP_CODES = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    409: Code.FAILED_PRECONDITION,
    413: Code.RESOURCE_EXHAUSTED,
    429: Code.RESOURCE_EXHAUSTED,
    503: Code.UNAVAILABLE,
}


def _sentence(detail: Any) -> str:
    if isinstance(detail, dict):
        return " ".join(f"{key}: {_sentence(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return " ".join(_sentence(item) for item in detail)
    return str(detail)


def connect_error(exc: exceptions.APIException) -> ConnectError:
    """A chatsite API error as the Connect error with the nearest code (409 is failed_precondition: the chat's
    state must change first; 429 resource_exhausted) and the same sentence."""
    return ConnectError(_HTTP_CODES.get(exc.status_code, Code.INTERNAL), _sentence(exc.detail))


def authenticate(authorization: str) -> User:
    """The user of an `Authorization: Bearer <API key>` header value, for a request that writes.

    Raises:
        ConnectError: unauthenticated (no key, or an unknown or revoked one); permission_denied (a read-only key:
            starting and stopping replies are writes).
    """
    key = bearer_key(authorization)
    if key is None:
        raise ConnectError(Code.UNAUTHENTICATED, "Send an API key (POST /api/keys) as 'Authorization: Bearer <key>'.")
    api_key = find_api_key(key)
    if api_key is None:
        raise ConnectError(Code.UNAUTHENTICATED, "This API key is unknown or has been revoked.")
    if api_key.read_only:
        raise ConnectError(Code.PERMISSION_DENIED, "This API key is read-only; starting or stopping a reply writes.")
    return api_key.owner


def _own_chat(user: User, chat_id: str) -> Chat:
    """The caller's chat `chat_id`. Someone else's is not_found as an unknown one (an RPC confirms no ids)."""
    try:
        chat = Chat.objects.filter(id=uuid.UUID(chat_id), owner=user).first()
    except ValueError:
        chat = None
    if chat is None:
        raise ConnectError(Code.NOT_FOUND, f"Chat {chat_id} does not exist.")
    return chat


def _workflow(user: User, workflow_id: str) -> Workflow | None:
    if not workflow_id:
        return None
    try:
        workflow = usable_workflows(user).select_related("model").filter(id=uuid.UUID(workflow_id)).first()
    except ValueError:
        workflow = None
    if workflow is None:
        raise ConnectError(Code.NOT_FOUND, f"Workflow {workflow_id} does not exist or is not yours to use.")
    return workflow


def _model(name: str, workflow: Workflow | None, chat: Chat | None) -> ModelConfig:
    if name:
        model = usable_models().filter(model_id=name).first()
        if model is None:
            raise ConnectError(Code.INVALID_ARGUMENT, f"model: unknown model '{name}'; GET /api/models lists them.")
        return model
    model = workflow_model(workflow) if workflow is not None else None
    if model is None and chat is not None and chat.model_id:
        model = usable_models().filter(model_id=chat.model_id).first()
    model = model or usable_models().filter(model_id=DEFAULT_MODEL_ID).first() or usable_models().first()
    if model is None:
        raise ConnectError(Code.UNAVAILABLE, "No model is configured here.")
    return model


def _connectors(user: User, body: StreamRequest) -> list[Connector]:
    """The connectors the reply may query: `connector_ids` (each one the caller may use), or all of the caller's."""
    tools = body.tools
    ids = list(tools.connector_ids) if tools is not None else []
    if not (tools is not None and tools.sql_enabled):
        if ids:
            raise ConnectError(Code.INVALID_ARGUMENT, "tools.connector_ids needs tools.sql_enabled.")
        return []
    usable = usable_connectors(user)
    if not ids:
        found = list(usable)
        if not found:
            raise ConnectError(
                Code.PERMISSION_DENIED, "tools.sql_enabled: no database connector is granted to you; ask staff."
            )
        return found
    found = list(usable.filter(id__in=ids))
    # Missing, inactive and not granted read the same: ids of others' connectors are not confirmed.
    if missing := sorted(set(ids) - {c.id for c in found}):
        listed = ", ".join(str(i) for i in missing)
        raise ConnectError(Code.NOT_FOUND, f"tools.connector_ids: no connector {listed} that you may use.")
    return found


def reply_steps(workflow: Workflow | None, connectors: list[Connector]) -> list[dict[str, Any]] | None:
    """The reply's steps when the request changes them: the workflow's (or a plain generate step) with the
    `sql_query` tool offered and the connectors described; None when they stay the workflow's own."""
    if not connectors:
        return None
    steps = [dict(step) for step in (workflow.steps if workflow is not None and workflow.steps else [])]
    if not steps:
        steps = [{"type": "generate"}]
    described = "\n".join(f"- {c.name}: {c.description or 'no description'}" for c in connectors)
    steps.insert(0, {"type": "system_prompt", "text": SQL_INSTRUCTIONS + described})
    generate = steps[-1]
    generate["tools"] = list(dict.fromkeys([*generate.get("tools", []), "sql_query"]))
    return steps


def _check_request(body: StreamRequest) -> str:
    question = body.question
    if not question.strip():
        raise ConnectError(Code.INVALID_ARGUMENT, "question: write a question.")
    if len(question) > settings.CHATSITE_MAX_MESSAGE_CHARS:
        raise ConnectError(
            Code.INVALID_ARGUMENT, f"question: at most {settings.CHATSITE_MAX_MESSAGE_CHARS} characters."
        )
    tools = body.tools
    refused = [name for name in UNSUPPORTED_TOOLS if tools is not None and getattr(tools, name)]
    if refused:
        what = ", ".join(UNSUPPORTED_TOOLS[name] for name in refused)
        raise ConnectError(
            Code.INVALID_ARGUMENT,
            f"tools: chatsite cannot honour {', '.join(refused)} (it has no {what}); send them as false.",
        )
    return question


def start_reply(authorization: str, body: StreamRequest) -> ReplyInfo:
    """Check a Stream request and start its reply: a new chat of the caller's (source `connect_rpc`), or the next
    question in `chat_id`. Checked in this order: the key, the body, the chat, the workflow, the model, the
    connectors, then the caller's limits; nothing is written before all pass.

    Returns:
        What the first metadata says about the reply.

    Raises:
        ConnectError: unauthenticated, permission_denied (read-only key; sql_enabled with no connector granted),
            invalid_argument (empty or long question, a flag chatsite cannot honour, connector_ids without
            sql_enabled, unknown model), not_found (a chat, workflow or connector the caller may not use, or
            that does not exist), failed_precondition (the chat already has a reply in progress),
            resource_exhausted (over the caller's rate, replies in progress or daily quota).
    """
    user = authenticate(authorization)
    question = _check_request(body)
    chat = _own_chat(user, body.chat_id) if body.chat_id else None
    workflow = _workflow(user, body.workflow_id)
    model = _model(body.model, workflow, chat)
    connectors = _connectors(user, body)
    steps = reply_steps(workflow, connectors)
    options: dict[str, Any] = {}
    if steps is not None:
        from pipelines.steps import validate_steps

        try:
            options["steps"] = validate_steps(steps, owner=workflow.owner if workflow is not None else user)
        except exceptions.ValidationError as exc:
            raise connect_error(exc) from exc
        options["connectors"] = [c.name for c in connectors]
    try:
        # The limits read only the user (DRF's throttle keys on its id).
        check_send_limits(SimpleNamespace(user=user, META={}), None, chat)
        if chat is not None:
            asked, reply, _ = do_send_message(
                user, chat, content=question, model=model, workflow=workflow, options=options
            )
        else:
            chat, reply = do_start_conversation(
                user,
                turns=[(Message.Role.USER, question)],
                model=model,
                workflow=workflow,
                options=options,
                source=Chat.Source.CONNECT_RPC,
            )
            asked = reply.parent
    except exceptions.APIException as exc:
        raise connect_error(exc) from exc
    return ReplyInfo(
        message_id=str(reply.id),
        created_at=reply.created_at,
        model=model.model_id,
        chat_id=str(chat.id),
        is_continuation=bool(body.chat_id),
        user_message_id=str(asked.id) if asked is not None else None,
        workflow_id=str(workflow.id) if workflow is not None else None,
    )


def reply_to_cancel(authorization: str, chat_id: str, message_id: str) -> Message:
    """The reply a Cancel request stops: `message_id` in the caller's chat `chat_id`, or the chat's reply in
    progress.

    Raises:
        ConnectError: unauthenticated, permission_denied (read-only key), invalid_argument (no chat_id),
            not_found (the chat is not the caller's, or has no such reply), failed_precondition (no reply in
            progress in the chat).
    """
    user = authenticate(authorization)
    if not chat_id:
        raise ConnectError(Code.INVALID_ARGUMENT, "chat_id: name the chat whose reply to stop.")
    chat = _own_chat(user, chat_id)
    replies = chat.messages.filter(role=Message.Role.ASSISTANT)
    if message_id:
        try:
            reply = replies.filter(id=uuid.UUID(message_id)).first()
        except ValueError:
            reply = None
        if reply is None:
            raise ConnectError(Code.NOT_FOUND, f"Reply {message_id} does not exist in this chat.")
        return reply
    reply = replies.filter(status__in=(Message.Status.QUEUED, Message.Status.STREAMING)).first()
    if reply is None:
        raise ConnectError(Code.FAILED_PRECONDITION, "This chat has no reply in progress.")
    return reply
