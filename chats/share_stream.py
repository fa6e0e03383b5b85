"""A reply's event stream as a share link's viewer gets it (issue 18): the chat's own resume machinery
(`chats.streaming.reply_stream_response`, with its Last-Event-ID checks, live relay and replay from the
database), with each event cut down to what a viewer may see, and ended as soon as the link is revoked.

Revocation reaches open streams through a flag (`chats.sharing.mark_revoked`): the viewer's relay waits for its
next chunk at most CHATSITE_SHARE_CHECK_SECONDS at a time and looks for the flag (one Redis EXISTS) and the
link's expiry in between, so a revoked or expired link's streams end within about that long (plus the time for
the closing write). The SSE ids are kept, so a viewer resumes with Last-Event-ID as on the chat page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime

from django.conf import settings
from django.http import StreamingHttpResponse
from django.utils import timezone

from chats import events
from chats.exceptions import InvalidLastEventId
from chats.models import Message, Share
from chats.sharing import UNAVAILABLE, is_revoked, message_ref, result_text, viewer_source
from chats.streaming import LastEventIdError, reply_stream_response

# The `step` details a viewer does not need: what a connected database is called, the SQL run on it, the names of
# its columns and its rows.
HIDDEN_STEP_FIELDS = frozenset({"columns", "sql", "connector", "rows"})


def viewer_event(event: events.Event, ref: str) -> events.Event | None:
    """One reply event as a share's viewer gets it, or None when a viewer gets nothing of it.

    Still follows the contract (`chats.event_schema`): `start` names the reply by its share reference `ref` and
    leaves the chat, question, model and workflow out (null or empty); `end` names the reply by `ref` and has
    no quota; `sources` keep only number, title and snippet; `tool_call` has no arguments (null); a tool's
    result is text. Types the contract does not name are dropped.
    """
    kind = event.get("type")
    if kind == "start":
        return events.start_event(message_id=ref, chat_id=None, user_message_id=None, model="", workflow_id=None)
    if kind == "end":
        usage = event.get("usage") or {}
        return events.end_event(
            message_id=ref,
            finish_reason=event.get("finishReason", "stop"),
            prompt_tokens=usage.get("promptTokens", 0),
            completion_tokens=usage.get("completionTokens", 0),
        )
    if kind == "sources":
        return events.sources_event([viewer_source(s) for s in event.get("sources") or [] if isinstance(s, dict)])
    if kind == "tool_call":
        return events.tool_call_event(str(event.get("callId", "")), str(event.get("toolName", "")), None)
    if kind == "tool_result":
        shown = {k: v for k, v in event.items() if k != "result"}
        return {**shown, "result": None if "error" in event else result_text(event.get("result"))}
    if kind == "step":
        return {k: v for k, v in event.items() if k not in HIDDEN_STEP_FIELDS}
    if kind in ("queued", "content", "error"):
        return event
    return None


def viewer_chunk(chunk: bytes, ref: str) -> bytes:
    """A chunk of the relay's SSE bytes (whole events, as `chats.streaming.relay` writes them) with each event
    passed through `viewer_event`; comments (`: ping`) and ids are kept as they are."""
    out = []
    for block in chunk.decode().split("\n\n"):
        if not block:
            continue
        if block.startswith(":"):
            out.append(block + "\n\n")
            continue
        lines = block.split("\n")
        entry_id = next((line[4:] for line in lines if line.startswith("id: ")), None)
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        try:
            event = viewer_event(json.loads(data), ref)
        except (ValueError, AttributeError):
            event = None
        if event is None:
            continue
        head = f"id: {entry_id}\n" if entry_id is not None else ""
        out.append(f"{head}data: {events.encode(event)}\n\n")
    return "".join(out).encode()


def closed_chunk() -> bytes:
    """The event that ends a viewer's stream when its link is revoked or expires (the same for both)."""
    event = events.error_event(code="share_unavailable", message=UNAVAILABLE, retryable=False)
    return f"data: {events.encode(event)}\n\n".encode()


async def _link_closed(share_id: str, expires_at: datetime | None) -> bool:
    if expires_at is not None and timezone.now() >= expires_at:
        return True
    return await is_revoked(share_id)


async def watched(body: AsyncIterator[bytes], share_id: str, expires_at: datetime | None, ref: str):
    """`body` (a reply's SSE bytes) for a viewer: each chunk through `viewer_chunk`, and closed with
    `closed_chunk` within about CHATSITE_SHARE_CHECK_SECONDS of the link being revoked or expiring."""
    chunks = body.__aiter__()
    pending: asyncio.Future | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(chunks.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=settings.CHATSITE_SHARE_CHECK_SECONDS)
            if await _link_closed(share_id, expires_at):
                yield closed_chunk()
                return
            if not done:
                continue
            finished, pending = pending, None
            try:
                chunk = finished.result()
            except StopAsyncIteration:
                return
            if shown := viewer_chunk(chunk, ref):
                yield shown
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


def share_stream_response(share: Share, message: Message, last_id: str | None) -> StreamingHttpResponse:
    """A shared reply's events for a viewer, from after `last_id` (None: from the start), live or saved.

    Raises:
        InvalidLastEventId: 400 when `last_id` is not an id of this reply's stream (as the chat's resume).
    """
    try:
        response = reply_stream_response(message, last_id)
    except LastEventIdError as exc:
        raise InvalidLastEventId(str(exc)) from exc
    ref = message_ref(share, str(message.id))
    response.streaming_content = watched(response.streaming_content, str(share.id), share.expires_at, ref)
    return response
