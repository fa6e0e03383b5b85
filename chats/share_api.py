"""The share-link API (issue 18): a chat's owner makes, lists and revokes links; anyone with a link (in its
audience) reads the chat's current branch and watches its replies stream. Thin views over `chats.sharing`."""

from datetime import timedelta

from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chats.access import access_chat, parse_uuid
from chats.api import ERROR_SHAPE, SSE_RESPONSE, requested_last_event_id
from chats.fields import StrictCharField, StrictChoiceField, StrictModelSerializer
from chats.models import Message, Share
from chats.share_stream import share_stream_response
from chats.sharing import access_share, do_create_share, do_revoke_share, live_shares, shared_message, shared_view

MAX_SHARE_SECONDS = 366 * 24 * 3600


class ShareSerializer(StrictModelSerializer):
    """A share link as listed: never its token (shown once, when the link is made)."""

    expiresAt = serializers.DateTimeField(source="expires_at", read_only=True, allow_null=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = Share
        fields = ["id", "audience", "expiresAt", "createdAt"]
        read_only_fields = fields


class NewShareSerializer(ShareSerializer):
    """A share link just made: with its `token` and `url` (`/s/<token>`), which are shown this once."""

    token = serializers.CharField(read_only=True)
    url = serializers.CharField(read_only=True)

    class Meta(ShareSerializer.Meta):
        fields = [*ShareSerializer.Meta.fields, "token", "url"]
        read_only_fields = fields


class CreateShareSerializer(serializers.Serializer):
    """The body of `POST /api/chats/<chatId>/shares`: every field optional (default: anyone, never expires).

    `expiresAt` (ISO 8601, in the future) or `expiresInSeconds` (1 to 366 days), not both.
    """

    audience = StrictChoiceField(choices=Share.Audience.choices, required=False, default=Share.Audience.ANYONE)
    expiresAt = serializers.DateTimeField(required=False, allow_null=True)
    expiresInSeconds = serializers.IntegerField(required=False, min_value=1, max_value=MAX_SHARE_SECONDS)

    def validate_expiresAt(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("The expiry time has passed: give one in the future.")
        return value

    def validate(self, attrs: dict) -> dict:
        if attrs.get("expiresAt") is not None and "expiresInSeconds" in attrs:
            raise serializers.ValidationError({"expiresAt": ["Give expiresAt or expiresInSeconds, not both."]})
        return attrs

    def expires_at(self):
        """When the link stops working (None: never)."""
        seconds = self.validated_data.get("expiresInSeconds")
        if seconds is not None:
            return timezone.now() + timedelta(seconds=seconds)
        return self.validated_data.get("expiresAt")


class SharedSourceSerializer(serializers.Serializer):
    number = serializers.IntegerField(allow_null=True)
    title = StrictCharField()
    snippet = StrictCharField()


class SharedToolCallSerializer(serializers.Serializer):
    toolName = StrictCharField()
    result = StrictCharField(help_text="The tool's result as text.")


class SharedMessageSerializer(serializers.Serializer):
    """A message of a shared chat; `ref` names it within this share only (for its stream)."""

    ref = StrictCharField()
    role = StrictCharField()
    content = StrictCharField()
    status = StrictCharField()
    createdAt = serializers.DateTimeField()
    finishReason = StrictCharField()
    sources = SharedSourceSerializer(many=True)
    toolCalls = SharedToolCallSerializer(many=True)


class SharedChatSerializer(serializers.Serializer):
    """What a share link shows: the chat's title and its current branch, oldest first."""

    title = StrictCharField()
    messages = SharedMessageSerializer(many=True)


class ChatShareListView(generics.ListCreateAPIView):
    """`GET /api/chats/<chatId>/shares` (the chat's links that still work, newest first, paginated) and
    `POST /api/chats/<chatId>/shares` (make one; 201 with its token and url, shown this once). Owner only."""

    serializer_class = ShareSerializer

    def get_queryset(self):
        return live_shares(access_chat(self.request.user, self.kwargs["chat_id"]))

    @extend_schema(
        request=CreateShareSerializer,
        responses={201: NewShareSerializer, 400: ERROR_SHAPE, 401: ERROR_SHAPE, 403: ERROR_SHAPE, 404: ERROR_SHAPE},
    )
    def post(self, request: Request, chat_id: str) -> Response:
        chat = access_chat(request.user, chat_id)
        body = CreateShareSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        share, token = do_create_share(chat, audience=body.validated_data["audience"], expires_at=body.expires_at())
        url = request.build_absolute_uri(f"/s/{token}")
        return Response({**ShareSerializer(share).data, "token": token, "url": url}, status=status.HTTP_201_CREATED)


class ChatShareDetailView(APIView):
    """`DELETE /api/chats/<chatId>/shares/<shareId>`: revoke a link (owner only); its viewers' streams end."""

    @extend_schema(request=None, responses={204: None, 401: ERROR_SHAPE, 403: ERROR_SHAPE, 404: ERROR_SHAPE})
    def delete(self, request: Request, chat_id: str, share_id: str) -> Response:
        chat = access_chat(request.user, chat_id)
        share = chat.shares.filter(id=parse_uuid(share_id, "Share"), revoked_at__isnull=True).first()
        if share is None:
            raise NotFound(f"Share {share_id} does not exist.", code="not_found")
        do_revoke_share(share)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SharedChatView(APIView):
    """`GET /api/shares/<token>`: the shared chat's title and current branch. 404 for an unknown, revoked or
    expired link (alike); 401 for a link for logged-in users only, without a session."""

    permission_classes = [AllowAny]

    @extend_schema(responses={200: SharedChatSerializer, 401: ERROR_SHAPE, 404: ERROR_SHAPE})
    def get(self, request: Request, token: str) -> Response:
        return Response(shared_view(access_share(token, request.user)))


class SharedReplyStreamView(APIView):
    """`GET /api/shares/<token>/messages/<ref>/stream`: watch a shared reply, live or finished, as SSE.

    `ref` is a reply's `ref` from `GET /api/shares/<token>` (or a `start` event's `messageId`), which must be in
    the chat's current branch (404 otherwise). Resumes after `Last-Event-ID` as the chat's own resume endpoint
    (400 `invalid_last_event_id`). Events name no chat, question, model or workflow; sources carry only their
    number, title and snippet. Revoking or expiry ends the stream at once with an `error` event
    (`share_unavailable`).
    """

    permission_classes = [AllowAny]

    @extend_schema(
        parameters=[
            OpenApiParameter("lastEventId", str, OpenApiParameter.QUERY, required=False),
            OpenApiParameter("Last-Event-ID", str, OpenApiParameter.HEADER, required=False),
        ],
        responses={(200, "text/event-stream"): SSE_RESPONSE, 400: ERROR_SHAPE, 401: ERROR_SHAPE, 404: ERROR_SHAPE},
    )
    def get(self, request: Request, token: str, message_ref: str) -> StreamingHttpResponse:
        share = access_share(token, request.user)
        message = shared_message(share, message_ref)
        if message.role != Message.Role.ASSISTANT:
            raise NotFound("This shared chat has no such reply.", code="not_found")
        return share_stream_response(share, message, requested_last_event_id(request))
