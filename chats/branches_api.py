"""The API of a chat's branches (issue 18): edit a sent question, and compare models side by side. Thin views,
as in `chats.api`; the branch listing and `siblingIds` live in `chats.api.MessageListView`, the writes and tree
walks in `chats.branches` and `chats.compare`."""

from django.http import StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chats import branches, compare
from chats.access import access_message
from chats.api import ERROR_SHAPE, SSE_RESPONSE, access_sender_chat, stream_reply
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


class CompareView(APIView):
    """`POST /api/chats/<chatId>/messages/compare` (issue 18): one question answered by 2 to 4 models at once.

    Body: `{content, userId?, parentId?, targets: [{modelId, workflowId?}, ...]}`. Saves the question and one
    queued reply per target (siblings: the same parent, the question) and answers 201 with their ids; the
    client streams each reply from its resume stream, `GET .../messages/<messageId>/stream` (one stream per
    reply, each event as in seed 004: not one multiplexed response, so that the event contract stays unchanged
    and each reply resumes and is cancelled like any other). Checks, in this order: 401, 404, 403 (as a send);
    400 a bad body (1 or more than 4 targets, an unknown model, a workflow the caller may not use: the target
    is named in `fields`); 409 a reply already in progress in the chat; 429 when the replies would not all fit the
    caller's cap on replies in progress (CHATSITE_MAX_CONCURRENT_REPLIES), or over the quota or send rate.
    Nothing is written unless every check passes.
    """

    @extend_schema(
        request=compare.CompareSerializer,
        responses={
            201: compare.CompareResultSerializer,
            400: ERROR_SHAPE,
            401: ERROR_SHAPE,
            403: ERROR_SHAPE,
            404: ERROR_SHAPE,
            409: ERROR_SHAPE,
            429: ERROR_SHAPE,
        },
    )
    def post(self, request: Request, chat_id: str) -> Response:
        chat = access_sender_chat(request, chat_id)
        body = compare.CompareSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        parent_id = branches.parent_in_chat(chat, body.validated_data.get("parentId"))
        targets = [(t["modelId"], t.get("workflowId")) for t in body.validated_data["targets"]]
        check_send_limits(request, self, chat, replies=len(targets))
        question, replies = compare.do_compare(
            request.user, chat, content=body.validated_data["content"], targets=targets, parent_id=parent_id
        )
        return Response(compare.compare_result(question, replies), status=status.HTTP_201_CREATED)
