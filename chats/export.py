"""Chats as files: chatsite's own JSON (every branch, everything saved) and Markdown (the branch shown).

The JSON document (`EXPORT_FORMAT`, version `EXPORT_VERSION`) is what `POST /api/chats/import` reads back:

    {"format": "chatsite", "version": 1, "exportedAt": "<ISO 8601>",
     "chats": [{"id", "title", "pinned", "archived", "modelId", "createdAt", "updatedAt",
                "messages": [{"id", "parentId", "role", "content", "status", "modelId", "finishReason",
                              "usage": {"promptTokens", "completionTokens"} | null, "error", "toolCalls",
                              "sources", "attachments", "createdAt", "completedAt"}]}]}

Messages are in the order they were written (a parent before its children); `parentId` links them into the
chat's tree (regenerated replies are siblings; edits branch).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from datetime import datetime

from asgiref.sync import sync_to_async
from django.utils import timezone
from django.utils.text import slugify

from chats.models import Chat, Message, User

EXPORT_FORMAT = "chatsite"
EXPORT_VERSION = 1
# Chats loaded per query when every chat of a user is exported.
EXPORT_BATCH = 50


def iso(value: datetime | None) -> str | None:
    """A datetime as the API writes it (ISO 8601, `Z` for UTC), or None."""
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def message_dict(message: Message) -> dict:
    """One message as the export writes it (the fields of the module docstring)."""
    return {
        "id": str(message.id),
        "parentId": str(message.parent_id) if message.parent_id else None,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "modelId": message.model_id,
        "finishReason": message.finish_reason,
        "usage": message.usage,
        "error": message.error,
        "toolCalls": message.tool_calls or [],
        "sources": message.sources or [],
        "attachments": message.attachments or [],
        "createdAt": iso(message.created_at),
        "completedAt": iso(message.completed_at),
    }


def chat_dict(chat: Chat, messages: Iterable[Message]) -> dict:
    """One chat with all its messages (every branch), as the export writes it."""
    return {
        "id": str(chat.id),
        "title": chat.title,
        "pinned": chat.pinned,
        "archived": chat.archived,
        "modelId": chat.model_id,
        "createdAt": iso(chat.created_at),
        "updatedAt": iso(chat.updated_at),
        "messages": [message_dict(m) for m in messages],
    }


def chat_messages(chat: Chat) -> list[Message]:
    """The chat's messages, oldest first (ties broken by id, so the order is stable)."""
    return list(chat.messages.order_by("created_at", "id"))


def export_document(chats: list[dict]) -> dict:
    """The JSON document around `chats` (from `chat_dict`)."""
    return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "exportedAt": iso(timezone.now()), "chats": chats}


def export_filename(chat: Chat | None, extension: str) -> str:
    """A file name for a download: `chatsite-<title>-<date>.<extension>`, or `chatsite-chats-<date>...`."""
    day = timezone.now().strftime("%Y-%m-%d")
    name = (slugify(chat.title)[:60].strip("-") or f"chat-{str(chat.id)[:8]}") if chat is not None else "chats"
    return f"chatsite-{name}-{day}.{extension}"


async def stream_user_export(owner: User) -> AsyncIterator[bytes]:
    """Every chat of `owner`, with every message, as one JSON document (`export_document`'s shape), in pieces:
    chats are read `EXPORT_BATCH` at a time, so the export never holds all of them at once."""
    head = json.dumps(export_document([]))
    yield head[: head.rindex("[") + 1].encode()  # everything up to the chats' opening bracket
    chat_ids = await sync_to_async(
        lambda: list(Chat.objects.filter(owner=owner).order_by("created_at", "id").values_list("id", flat=True))
    )()
    first = True
    for start in range(0, len(chat_ids), EXPORT_BATCH):
        batch = await sync_to_async(_chat_batch)(owner, chat_ids[start : start + EXPORT_BATCH])
        for chat in batch:
            yield (b"" if first else b", ") + json.dumps(chat).encode()
            first = False
    yield b"]}"


def _chat_batch(owner: User, chat_ids: list) -> list[dict]:
    chats = Chat.objects.filter(owner=owner, id__in=chat_ids).order_by("created_at", "id")
    by_chat: dict = {chat_id: [] for chat_id in chat_ids}
    for message in Message.objects.filter(chat_id__in=chat_ids).order_by("created_at", "id"):
        by_chat[message.chat_id].append(message)
    return [chat_dict(chat, by_chat[chat.id]) for chat in chats]


# --- Markdown --------------------------------------------------------------------------------------------


def shown_branch(messages: list[Message]) -> list[Message]:
    """The branch the chat shows: from the root down to its latest leaf (the newest message with no replies).

    Regenerated replies and edits branch the tree; this keeps one path through it, oldest first.
    """
    if not messages:
        return []
    by_id = {m.id: m for m in messages}
    parents = {m.parent_id for m in messages if m.parent_id}
    leaves = [m for m in messages if m.id not in parents]
    current = max(leaves or messages, key=lambda m: (m.created_at, str(m.id)))
    branch: list[Message] = []
    while current is not None and len(branch) < len(messages):
        branch.append(current)
        current = by_id.get(current.parent_id)
    branch.reverse()
    return branch


ROLE_HEADINGS = {"user": "You", "assistant": "Assistant", "system": "System", "tool": "Tool"}


def chat_markdown(chat: Chat, messages: list[Message]) -> str:
    """The chat's shown branch (`shown_branch`) as Markdown: a heading per message, its text as written (it is
    Markdown already), its tool calls as fenced JSON, its sources as a numbered list."""
    branch = shown_branch(messages)
    lines = [f"# {_one_line(chat.title) or 'Untitled chat'}", ""]
    others = len(messages) - len(branch)
    note = f"; {others} message{'s' if others != 1 else ''} on other branches left out" if others else ""
    lines += [f"*Exported from chatsite on {timezone.now():%Y-%m-%d %H:%M} UTC{note}.*", ""]
    for message in branch:
        heading = ROLE_HEADINGS.get(message.role, message.role.title())
        if message.role == Message.Role.ASSISTANT and message.model_id:
            heading += f" ({_one_line(message.model_id)})"
        lines += [f"## {heading}", ""]
        for call in message.tool_calls or []:
            if not isinstance(call, dict):
                continue
            outcome = {k: call[k] for k in ("result", "error") if k in call}
            body = json.dumps({"arguments": call.get("toolArgs"), **outcome}, indent=2, ensure_ascii=False)
            lines += [f"Tool call `{_one_line(str(call.get('toolName', '')))}`:", "", "```json", body, "```", ""]
        if message.content:
            lines += [message.content.rstrip(), ""]
        if message.status == Message.Status.FAILED and isinstance(message.error, dict):
            lines += [f"*The reply failed: {_one_line(str(message.error.get('message', '')))}*", ""]
        elif message.status == Message.Status.CANCELLED:
            lines += ["*Stopped before the end.*", ""]
        sources = [s for s in message.sources or [] if isinstance(s, dict)]
        if sources:
            lines += ["Sources:", ""]
            for index, source in enumerate(sources, start=1):
                page = f", p. {source['page']}" if source.get("page") else ""
                title = _one_line(str(source.get("title") or "Untitled document"))
                lines.append(f"{source.get('number') or index}. {title}{page}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())
