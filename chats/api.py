"""The JSON API (DESIGN.md section 3): thin views that parse, check access, call one action, answer."""

from django.contrib.auth import authenticate, login, logout
from django.middleware.csrf import get_token
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ParseError, PermissionDenied
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chats import actions
from chats.access import access_chat
from chats.api_errors import error_body
from chats.auth import SessionAuthentication
from chats.models import Chat
from chats.serializers import (
    ChatSerializer,
    LoginSerializer,
    MessageSerializer,
    ModelSerializer,
    SendMessageSerializer,
    UserSerializer,
)
from chats.streaming import event_stream_response
from pipelines.access import usable_models

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
        user = authenticate(request, **body.validated_data)
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
    """`GET /api/chats` (the caller's chats, newest first, paginated) and `POST /api/chats`."""

    serializer_class = ChatSerializer

    def get_queryset(self):
        return Chat.objects.filter(owner=self.request.user).order_by("-updated_at", "-created_at")

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


class MessageListView(generics.ListAPIView):
    """`GET /api/chats/<chatId>/messages`: the chat's messages, oldest first, paginated."""

    serializer_class = MessageSerializer

    def get_queryset(self):
        chat = access_chat(self.request.user, self.kwargs["chat_id"])
        return chat.messages.order_by("created_at")


class MessageStreamView(APIView):
    """`POST /api/chats/<chatId>/messages/stream` (seed 004): send a message and stream the reply as SSE.

    Checks, in this order: 401 no session; 404 no such chat; 403 someone else's chat, or a `userId` that is
    not the caller; 400 bad body (malformed JSON, missing or empty `content`, `content` too long, unknown
    `modelId`, unknown or inaccessible `workflowId`). Nothing is written unless every check passes.
    """

    @extend_schema(
        request=SendMessageSerializer,
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                OpenApiTypes.STR, description="Server-Sent Events: start, content..., then end or error."
            ),
            400: ERROR_SHAPE,
            401: ERROR_SHAPE,
            403: ERROR_SHAPE,
            404: ERROR_SHAPE,
        },
    )
    def post(self, request: Request, chat_id: str) -> object:
        chat = access_chat(request.user, chat_id)
        if not isinstance(request.data, dict):
            raise ParseError("The body must be a JSON object.")
        user_id = request.data.get("userId")
        if user_id is not None and str(user_id) != str(request.user.id):
            raise PermissionDenied("userId is not the logged-in user.")
        body = SendMessageSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        _, reply = actions.do_send_message(
            request.user,
            chat,
            content=body.validated_data["content"],
            model=body.validated_data["modelId"],
            workflow=body.validated_workflow(),
        )
        return event_stream_response(str(reply.id))
