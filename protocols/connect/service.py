"""Seed 000: the Connect-RPC `ChatService` (protocols/connect/stream.proto), served by Connect for Python
(`connectrpc`) beside Django in the same ASGI application (chatsite/asgi.py routes `CONNECT_ROUTES` here).

`Stream` starts a reply (protocols.connect.start), sends its metadata at once, then follows the reply's events
through the same wire-independent iterator as every protocol (`protocols.replies.reply_events`) and encodes them
(protocols.connect.encoder). A client that goes away only stops reading: the reply goes on and is saved, as on
every other protocol. `Cancel` stops a reply with seed 004's cancel (`chats.lifecycle.do_cancel_reply`).

Refusals are Connect errors (a code and a sentence); a bug is logged and answered as `internal`, never with its
text. For a streaming RPC, Connect sends an error in the stream's end message (HTTP 200).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from django.conf import settings
from django.db import close_old_connections
from rest_framework import exceptions

from chats.lifecycle import do_cancel_reply
from chats.models import Message
from protocols.connect.encoder import ReplyEncoder
from protocols.connect.start import connect_error, reply_to_cancel, start_reply
from protocols.connect.stream_connect import ChatServiceASGIApplication
from protocols.connect.stream_pb import CancelRequest, CancelResponse, ChatStatus, StreamRequest, StreamResponse
from protocols.replies import reply_events

logger = logging.getLogger(__name__)

SERVICE_PATH = "/chatsite.stream.v1.ChatService"
STREAM_PATH = f"{SERVICE_PATH}/Stream"
CANCEL_PATH = f"{SERVICE_PATH}/Cancel"
CONNECT_ROUTES = {STREAM_PATH: STREAM_PATH, CANCEL_PATH: CANCEL_PATH, "/v1/stream": STREAM_PATH}
"""Request path -> the procedure that serves it: the procedures' own paths, and the seed's `POST /v1/stream`."""

T = TypeVar("T")


def _in_thread(function: Callable[..., T]) -> Callable[..., Any]:
    """`function` (ORM code) run in a worker thread, as Django runs a request: database connections that are
    broken or past their age are let go before, and the connection goes back (to the pool) after."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> T:
        close_old_connections()
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(run, thread_sensitive=False)


@contextlib.asynccontextmanager
async def _request_scope() -> AsyncIterator[None]:
    """What Django gives each request, for code that calls `sync_to_async` itself (the relay's reads of a saved
    reply, the cancel): a thread of its own while it runs, whose database connection is let go at the end."""
    async with ThreadSensitiveContext():
        try:
            yield
        finally:
            await sync_to_async(close_old_connections)()


def _authorization(ctx: RequestContext) -> str:
    return ctx.request_headers.get("authorization", "") or ""


class _Internal(ConnectError):
    def __init__(self) -> None:
        super().__init__(Code.INTERNAL, "The request failed because of an error on our side.")


class ChatService:
    """The `chatsite.stream.v1.ChatService` implementation (see the module)."""

    async def stream(self, request: StreamRequest, ctx: RequestContext) -> AsyncIterator[StreamResponse]:
        """Start a reply and stream it: metadata, text deltas, SQL cells and previews, final metadata."""
        try:
            info = await _in_thread(start_reply)(_authorization(ctx), request)
        except ConnectError:
            raise
        except exceptions.APIException as exc:
            raise connect_error(exc) from exc
        except Exception as exc:
            logger.exception("Connect Stream failed before its reply started")
            raise _Internal() from exc
        encoder = ReplyEncoder(info)
        yield encoder.first()
        async with _request_scope():
            async for event in reply_events(info.message_id):
                if event is None:
                    continue  # an idle spell: Connect has no comment line to keep the connection busy with
                for response in encoder.encode(event):
                    yield response

    async def cancel(self, request: CancelRequest, ctx: RequestContext) -> CancelResponse:
        """Stop the reply (`message_id`, or the chat's reply in progress) and answer once it is saved cancelled."""
        try:
            reply: Message = await _in_thread(reply_to_cancel)(_authorization(ctx), request.chat_id, request.message_id)
            async with _request_scope():
                reply = await do_cancel_reply(reply)
        except ConnectError:
            raise
        except exceptions.APIException as exc:
            raise connect_error(exc) from exc
        except Exception as exc:
            logger.exception("Connect Cancel failed")
            raise _Internal() from exc
        return CancelResponse(
            chat_id=str(reply.chat_id), message_id=str(reply.id), status=ChatStatus.QUERY_STATUS_CANCELLED
        )


def connect_application() -> ChatServiceASGIApplication:
    """The Connect ASGI application of `ChatService`: the Connect protocol (and gRPC-Web), JSON and binary
    codecs, request messages up to CHATSITE_MAX_REQUEST_BYTES (resource_exhausted past that)."""
    return ChatServiceASGIApplication(ChatService(), read_max_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def route(application: Callable, connect: Callable) -> Callable:
    """An ASGI application that sends HTTP requests for `CONNECT_ROUTES` to `connect` (with the path of the
    procedure that serves them) and everything else to `application` (Django)."""

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        procedure = CONNECT_ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if procedure is None:
            await application(scope, receive, send)
            return
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"").lower()
        if content_type.startswith(b"application/grpc") and not content_type.startswith(b"application/grpc-web"):
            # gRPC needs HTTP trailers, which daphne does not send: say so rather than fail inside connectrpc.
            await _refuse(send, 415, b"gRPC needs HTTP/2 trailers; use the Connect protocol (or gRPC-Web).")
            return
        await connect(dict(scope, path=procedure, root_path=""), receive, send)

    return app


async def _refuse(send: Callable, status: int, text: bytes) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"accept-post", b"application/connect+json, application/connect+proto"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text, "more_body": False})
