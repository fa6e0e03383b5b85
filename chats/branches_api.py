"""The API of a chat's branches (issue 18): edit a sent question. Thin views, as in `chats.api`; the branch
listing and `siblingIds` live in `chats.api.MessageListView`, the writes and tree walks in `chats.branches`."""

from django.http import StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.views import APIView

from chats import branches
from chats.access import access_message
from chats.api import ERROR_SHAPE, SSE_RESPONSE, stream_reply
from chats.limits import check_send_limits
from chats.serializers import EditMessageSerializer
from pipelines.access import usable_models


class EditMessageView(APIView):
    """`POST /api/chats/<chatId>/messages/<messageId>/edit` (issue 18): edit a sent question.

    Makes a sibling question (the same parent and attachments, the new `content`) and a reply to it, and streams
    the reply like a send; the old branch stays. 400 for an assistant's message or a bad body (as a send's), 409
    when a reply is already in progress in the chat, 429 over the send limits.
    """

    @extend_schema(
        request=EditMessageSerializer,
        responses={
            (200, "text/event-stream"): SSE_RESPONSE,
            400: ERROR_SHAPE,
            401: ERROR_SHAPE,
            403: ERROR_SHAPE,
            404: ERROR_SHAPE,
            409: ERROR_SHAPE,
        },
    )
    def post(self, request: Request, chat_id: str, message_id: str) -> StreamingHttpResponse:
        chat, message = access_message(request.user, chat_id, message_id)
        branches.check_editable(message)
        body = EditMessageSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        model_id = message.model_id or chat.model_id
        model = body.validated_data.get("modelId") or usable_models().filter(model_id=model_id).first()
        if model is None:
            raise ValidationError({"modelId": [f"The model '{model_id}' is no longer available; name another."]})
        workflow = body.validated_data.get("workflowId", message.workflow)
        check_send_limits(request, self, chat)
        _, reply = branches.do_edit_message(
            chat, message, content=body.validated_data["content"], model=model, workflow=workflow
        )
        return stream_reply(reply)
