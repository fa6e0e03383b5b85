"""The JSON API (DESIGN.md section 3): thin views that parse, check access, call one action, answer."""

from adrf.views import APIView as AsyncAPIView
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import authenticate, login, logout
from django.http import StreamingHttpResponse
from django.middleware.csrf import get_token
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ParseError, PermissionDenied, ValidationError
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chats import actions, branches, lifecycle
from chats.access import access_api_key, access_chat, access_message
from chats.api_errors import error_body
from chats.auth import SessionAuthentication
from chats.event_schema import sse_description
from chats.exceptions import InvalidLastEventId
from chats.fields import StrictCharField
from chats.library_api import ARCHIVED_PARAMETER, archived_filter
from chats.limits import check_send_limits
from chats.models import ApiKey, Chat, Message
from chats.serializers import (
    ApiKeySerializer,
    BranchMessageSerializer,
    ChatSerializer,
    LoginSerializer,
    MessageSerializer,
    ModelSerializer,
    SendMessageSerializer,
    UserSerializer,
    WorkflowField,
    validate_model_id,
)
from chats.streaming import LastEventIdError, reply_stream_response
from pipelines.access import usable_models, usable_workflows
from pipelines.models import ModelConfig, Workflow

ERROR_SHAPE = inline_serializer(
    "Error",
    {
        "error": serializers.CharField(),
        "message": serializers.CharField(),
        "fields": serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False),
    },
)


class CsrfView(APIView):
    """`GET /api/auth/csrf`: set the csrftoken cookie and return its value for the X-CSRFToken header."""

    permission_classes = [AllowAny]

    @extend_schema(responses=inline_serializer("CsrfToken", {"csrfToken": serializers.CharField()}))
    def get(self, request: Request) -> Response:
        return Response({"csrfToken": get_token(request)})


class LoginView(APIView):
    """`POST /api/auth/login`: start a session from a username and password (CSRF token required)."""

    permission_classes = [AllowAny]

    @extend_schema(request=LoginSerializer, responses={200: UserSerializer, 400: ERROR_SHAPE, 403: ERROR_SHAPE})
    def post(self, request: Request) -> Response:
        # DRF checks CSRF only for logged-in users; a login form is a classic CSRF target too.
        SessionAuthentication().enforce_csrf(request)
        body = LoginSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        # The Django request, not DRF's wrapper: django-axes marks a lockout on it for its middleware.
        user = authenticate(request._request, **body.validated_data)
        if user is None:
            return Response(
                error_body("invalid_credentials", "The username or password is wrong."),
                status=status.HTTP_400_BAD_REQUEST,
            )
        login(request, user)
        # login() rotates the CSRF token: hand the new one back so the client need not read the cookie.
        return Response({**UserSerializer(user).data, "csrfToken": get_token(request)})


class LogoutView(APIView):
    """`POST /api/auth/logout`: end the session."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request) -> Response:
        logout(request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    """`GET /api/auth/me`: the logged-in user; its `id` is the `userId` to send."""

    @extend_schema(responses={200: UserSerializer, 401: ERROR_SHAPE})
    def get(self, request: Request) -> Response:
        return Response(UserSerializer(request.user).data)


class ModelListView(generics.ListAPIView):
    """`GET /api/models`: the models the caller may use."""

    serializer_class = ModelSerializer

    def get_queryset(self):
        return usable_models()


class ChatListView(generics.ListCreateAPIView):
    """`GET /api/chats` (the caller's chats: pinned first, then newest first, paginated; `?archived=true` lists
    the archived ones instead, which are left out by default) and `POST /api/chats`."""

    serializer_class = ChatSerializer

    @extend_schema(parameters=[ARCHIVED_PARAMETER])
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        archived = archived_filter(self.request, default=False)
        return Chat.objects.filter(owner=self.request.user, archived=archived).order_by(
            "-pinned", "-updated_at", "-created_at"
        )

    def perform_create(self, serializer: ChatSerializer) -> None:
        data = serializer.validated_data
        serializer.instance = actions.do_create_chat(
            self.request.user,
            title=data.get("title", ""),
            model_id=data.get("model_id", ""),
            workflow=data.get("workflow"),
        )


class ChatDetailView(generics.RetrieveUpdateDestroyAPIView):
    """`GET, PATCH, DELETE /api/chats/<chatId>`: one of the caller's chats."""

    serializer_class = ChatSerializer
    http_method_names = ["get", "patch", "delete", "options"]

    def get_object(self) -> Chat:
        return access_chat(self.request.user, self.kwargs["chat_id"])

    def perform_update(self, serializer: ChatSerializer) -> None:
        actions.do_update_chat(serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance: Chat) -> None:
        actions.do_delete_chat(instance)


BRANCH_PARAMETER = OpenApiParameter(
    "branch",
    str,
    OpenApiParameter.QUERY,
    required=False,
    description="A message id: list only the branch ending at it (its chain of parents); 'latest': the newest's.",
)


class MessageListView(generics.ListAPIView):
    """`GET /api/chats/<chatId>/messages`: the chat's messages, oldest first, paginated, each with its
    `siblingIds`; `?branch=<messageId>` lists only the branch ending at that message, `?branch=latest` the
    newest message's (404 for a message not in the chat, 400 for an id that is not a UUID)."""

    serializer_class = BranchMessageSerializer

    @extend_schema(parameters=[BRANCH_PARAMETER])
    def get(self, request: Request, *args, **kwargs) -> Response:
        chat = access_chat(request.user, kwargs["chat_id"])
        # One query for the chat's messages; siblings and the branch are worked out in memory.
        messages = list(chat.messages.order_by("created_at", "id"))
        siblings = branches.sibling_ids(messages)
        leaf = request.query_params.get("branch")
        if leaf is not None:
            messages = branches.branch_of(messages, leaf)
        page = self.paginate_queryset(messages)
        return self.get_paginated_response(
            BranchMessageSerializer(page, many=True, context={"siblings": siblings}).data
        )


SSE_RESPONSE = OpenApiResponse(
    OpenApiTypes.STR,
    description=(
        "Server-Sent Events (`text/event-stream`). Each event is `id: <stream entry id>` and `data: <json>`; "
        "`: ping` comments keep the line alive; the response closes after `end` or `error`. Event types "
        f"(`type` field, camelCase fields; `?`: optional): {sse_description()}. Clients ignore unknown types; "
        "fields are only ever added."
    ),
)


def idempotency_key(request: Request) -> str:
    """The request's `Idempotency-Key` header ('' when absent).

    Raises:
        ValidationError: 400 when it is longer than CHATSITE_MAX_IDEMPOTENCY_KEY_CHARS.
    """
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > settings.CHATSITE_MAX_IDEMPOTENCY_KEY_CHARS:
        raise ValidationError(
            {"Idempotency-Key": [f"At most {settings.CHATSITE_MAX_IDEMPOTENCY_KEY_CHARS} characters."]}
        )
    return key


def requested_last_event_id(request: Request) -> str | None:
    """The id a client resumes after: the `Last-Event-ID` header, else the `lastEventId` query parameter.

    Spaces and tabs around it are dropped (HTTP's optional whitespace); empty means none (as an EventSource
    with no id yet sends nothing). The id itself is checked by `chats.streaming.reply_stream_response`.
    """
    for value in (request.headers.get("Last-Event-ID"), request.query_params.get("lastEventId")):
        value = (value or "").strip(" \t")
        if value:
            return value
    return None


def stream_reply(message: Message, last_id: str | None = None) -> StreamingHttpResponse:
    """`reply_stream_response`, with a bad Last-Event-ID turned into a 400 `invalid_last_event_id`."""
    try:
        return reply_stream_response(message, last_id)
    except LastEventIdError as exc:
        raise InvalidLastEventId(str(exc)) from exc


def access_sender_chat(request: Request, chat_id: str) -> Chat:
    """The chat a send (or compare) goes to, after the checks seed 004 makes before reading the body's fields.

    Raises:
        NotFound, PermissionDenied: 404 no such chat, 403 someone else's (`access_chat`).
        ParseError: 400 when the body is not a JSON object.
        PermissionDenied: 403 when the body's `userId` is not the caller.
    """
    chat = access_chat(request.user, chat_id)
    if not isinstance(request.data, dict):
        raise ParseError("The body must be a JSON object.")
    user_id = request.data.get("userId")
    if user_id is not None and str(user_id) != str(request.user.id):
        raise PermissionDenied("userId is not the logged-in user.")
    return chat


def usable_chat_workflow(chat: Chat) -> Workflow | None:
    """The chat's default workflow, if its owner may still run it."""
    if chat.workflow_id is None:
        return None
    return usable_workflows(chat.owner).filter(id=chat.workflow_id).first()


class MessageStreamView(APIView):
    """`POST /api/chats/<chatId>/messages/stream` (seed 004): send a message and stream the reply as SSE.

    Checks, in this order: 401 no session; 404 no such chat; 403 someone else's chat, or a `userId` that is
    not the caller; 400 bad body (malformed JSON, missing or empty `content`, `content` too long, unknown
    `modelId`, unknown or inaccessible `workflowId`); 409 a reply already in progress in this chat (its id in
    `messageId`); 429 over the caller's send rate, replies in progress, or daily token quota (`Retry-After`).
    Nothing is written unless every check passes. With an `Idempotency-Key` header already
    used on this chat, it streams the reply that key started, from the beginning, and enqueues nothing.
    """

    @extend_schema(
        request=SendMessageSerializer,
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)],
        responses={
            (200, "text/event-stream"): SSE_RESPONSE,
            400: ERROR_SHAPE,
            401: ERROR_SHAPE,
            403: ERROR_SHAPE,
            404: ERROR_SHAPE,
            409: ERROR_SHAPE,
        },
    )
    def post(self, request: Request, chat_id: str) -> StreamingHttpResponse:
        chat = access_sender_chat(request, chat_id)
        body = SendMessageSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        parent_id = branches.parent_in_chat(chat, body.validated_data.get("parentId"))
        key = idempotency_key(request)
        if not (key and chat.messages.filter(idempotency_key=key).exists()):
            # A repeated send is not a new one: only new sends meet the 409 and the limits (in that order).
            check_send_limits(request, self, chat)
        _, reply, _ = actions.do_send_message(
            request.user,
            chat,
            content=body.validated_data["content"],
            model=body.validated_data["modelId"],
            # No workflowId in the body: the chat's default workflow (if it is still usable).
            workflow=body.validated_workflow() if "workflowId" in request.data else usable_chat_workflow(chat),
            idempotency_key=key,
            attachments=body.validated_data["attachments"],
            parent_id=parent_id,
        )
        return stream_reply(reply)


class MessageStreamResumeView(APIView):
    """`GET /api/chats/<chatId>/messages/<messageId>/stream`: resume or watch a reply.

    Replays every event after `Last-Event-ID` (header, or `lastEventId` query parameter; none: from the
    start), then follows the reply live until its terminal event. A reply whose stream has expired is
    answered from the database. 400 `invalid_last_event_id` when the id is not `<ms>-<seq>` (two whole
    numbers up to 2**64 - 1), is beyond the reply's last event, or belongs to a stream that has expired.
    """

    @extend_schema(
        parameters=[
            OpenApiParameter("lastEventId", str, OpenApiParameter.QUERY, required=False),
            OpenApiParameter("Last-Event-ID", str, OpenApiParameter.HEADER, required=False),
        ],
        responses={(200, "text/event-stream"): SSE_RESPONSE, 400: ERROR_SHAPE, 401: ERROR_SHAPE, 403: ERROR_SHAPE},
    )
    def get(self, request: Request, chat_id: str, message_id: str) -> StreamingHttpResponse:
        _, message = access_message(request.user, chat_id, message_id)
        if message.role != Message.Role.ASSISTANT:
            raise ValidationError({"messageId": ["Only assistant replies have an event stream."]})
        return stream_reply(message, requested_last_event_id(request))


class CancelReplyView(AsyncAPIView):
    """`POST /api/chats/<chatId>/messages/<messageId>/cancel`: stop a reply.

    Answers once the reply is saved as `cancelled` (partial text kept) and its `end` event
    (`finishReason: "cancelled"`) is published: 200 with the saved message. 409 when it already finished.
    """

    @extend_schema(request=None, responses={200: MessageSerializer, 409: ERROR_SHAPE, 403: ERROR_SHAPE})
    async def post(self, request: Request, chat_id: str, message_id: str) -> Response:
        _, message = await sync_to_async(access_message)(request.user, chat_id, message_id)
        message = await lifecycle.do_cancel_reply(message)
        return Response(await sync_to_async(lambda: MessageSerializer(message).data)())


class RegenerateSerializer(serializers.Serializer):
    """Optional overrides for a regenerated reply (defaults: those of the reply or question given)."""

    modelId = StrictCharField(max_length=100, required=False)
    workflowId = WorkflowField(required=False, allow_null=True)

    def validate_modelId(self, value: str) -> ModelConfig:
        return validate_model_id(value)


class RegenerateView(APIView):
    """`POST /api/chats/<chatId>/messages/<messageId>/regenerate`: a new reply to the same question.

    `messageId` is a reply (or its question). The new reply is a sibling of the earlier ones, sees only its
    own branch, and is streamed like a send. 409 when a reply is already in progress in the chat.
    """

    @extend_schema(request=RegenerateSerializer, responses={(200, "text/event-stream"): SSE_RESPONSE, 409: ERROR_SHAPE})
    def post(self, request: Request, chat_id: str, message_id: str) -> StreamingHttpResponse:
        chat, message = access_message(request.user, chat_id, message_id)
        body = RegenerateSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        model = body.validated_data.get("modelId") or usable_models().filter(model_id=message.model_id).first()
        if model is None:
            raise ValidationError(
                {"modelId": [f"The model '{message.model_id}' is no longer available; name another."]}
            )
        workflow = body.validated_data.get("workflowId", message.workflow)
        check_send_limits(request, self, chat)
        reply = actions.do_regenerate_reply(chat, message, model=model, workflow=workflow)
        return stream_reply(reply)


class SessionOnly(BasePermission):
    """API keys are managed from a logged-in session: a leaked key must not be able to mint more keys."""

    message = "Manage API keys from a logged-in session, not with an API key."

    def has_permission(self, request: Request, view: object) -> bool:
        return bool(request.user and request.user.is_authenticated and not isinstance(request.auth, ApiKey))


class ApiKeyListView(generics.ListCreateAPIView):
    """`GET /api/keys` (the caller's keys, with their last use) and `POST /api/keys` (the key is shown once)."""

    serializer_class = ApiKeySerializer
    permission_classes = [SessionOnly]

    def get_queryset(self):
        return ApiKey.objects.filter(owner=self.request.user)

    @extend_schema(
        responses={201: inline_serializer("NewApiKey", {"id": serializers.UUIDField(), "key": serializers.CharField()})}
    )
    def post(self, request: Request) -> Response:
        body = ApiKeySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        api_key, key = actions.do_create_api_key(
            request.user, name=body.validated_data["name"], read_only=body.validated_data.get("read_only", False)
        )
        return Response({**ApiKeySerializer(api_key).data, "key": key}, status=status.HTTP_201_CREATED)


class ApiKeyDetailView(APIView):
    """`DELETE /api/keys/<id>`: revoke one of the caller's keys."""

    permission_classes = [SessionOnly]

    @extend_schema(request=None, responses={204: None, 403: ERROR_SHAPE, 404: ERROR_SHAPE})
    def delete(self, request: Request, key_id: str) -> Response:
        actions.do_revoke_api_key(access_api_key(request.user, key_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
