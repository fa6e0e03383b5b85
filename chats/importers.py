"""Reading chat files for import: chatsite's own JSON, ChatGPT's `conversations.json`, Open WebUI's export.

`read_import_file()` turns a file's bytes into `ImportedChat`s: plain data, checked and cleaned, nothing
written. Every id in a file is only a key that links messages to their parents; the database never sees it.
What a format holds that chatsite cannot keep is left out, and each leaving-out is noted with its reason
(`ImportedChat.notes`); a chat that cannot be imported at all carries a `problem` instead.

The shapes read, from the formats' own code and exports:

- chatsite: `chats.export` (`{"format": "chatsite", "version": 1, "chats": [...]}`).
- ChatGPT (Settings > Data controls > Export): a list of conversations `{title, create_time, update_time,
  mapping: {nodeId: {id, message: {author: {role}, content: {content_type, parts | text}, create_time,
  metadata: {model_slug, finish_details, is_visually_hidden_from_conversation}, recipient} | null, parent,
  children}}, current_node}`; times are Unix seconds. Text parts are kept; images, tool traffic, hidden
  system messages and reasoning summaries are left out, and their children hang from the nearest kept message.
- Open WebUI (Settings > Chats > Export, `GET /api/v1/chats/all`): a list of `{id, title, chat: {title, models,
  history: {messages: {id: {id, parentId, childrenIds, role, content, model, timestamp, usage?, files?}},
  currentId}, messages: [...]}, created_at, updated_at, pinned, archived}`; times are Unix seconds. A bare
  chat object (with `history` or a `messages` list) is read too.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import exceptions, status

from chats.models import Message

MAX_JSON_DEPTH = 32
MAX_TOOL_CALLS = 100
MAX_SOURCES = 100
MAX_POSITIVE_INT = 2_147_483_647  # PositiveIntegerField's largest value on PostgreSQL
ROLES = set(Message.Role.values)


class ImportFileError(exceptions.APIException):
    """400 with a code of its own: the file as a whole cannot be imported (nothing is written)."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "bad_import_file"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


@dataclass
class ImportedMessage:
    """One message to write: `key` and `parent_key` are the file's ids (links only, never database ids)."""

    key: str
    parent_key: str | None
    role: str
    content: str
    model_id: str = ""
    finish_reason: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: list = field(default_factory=list)
    sources: list = field(default_factory=list)
    created_at: datetime | None = None
    completed_at: datetime | None = None


@dataclass
class ImportedChat:
    """One chat of the file, ready to write (`problem` is None) or to skip whole (`problem` says why).

    `messages` are in tree order (every parent before its children); `notes` are `(message key or None,
    reason)` for what was left out of a chat that is imported.
    """

    index: int
    title: str
    messages: list[ImportedMessage] = field(default_factory=list)
    pinned: bool = False
    archived: bool = False
    model_id: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    notes: list[tuple[str | None, str]] = field(default_factory=list)
    problem: str | None = None


@dataclass
class ImportFile:
    """A file's chats and the format they were read from (`chatsite`, `chatgpt` or `open-webui`)."""

    format: str
    chats: list[ImportedChat]


def read_import_file(data: bytes) -> ImportFile:
    """Read an import file (UTF-8 JSON, any of the three formats) into chats to import or skip.

    Raises:
        ImportFileError: 400 `not_utf8`, `not_json`, `unknown_format`, `no_chats` or `too_many_chats` (over
            CHATSITE_IMPORT_MAX_CHATS): the whole file is refused.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportFileError("not_utf8", "The file is not UTF-8 text, so it cannot be a JSON export.") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFileError(
            "not_json", f"The file is not valid JSON (line {exc.lineno}, column {exc.colno})."
        ) from None
    except RecursionError:
        raise ImportFileError("not_json", "The file's JSON is nested too deeply to read.") from None
    fmt, items = _detect(document)
    if not items:
        raise ImportFileError("no_chats", "The file holds no chats.")
    limit = settings.CHATSITE_IMPORT_MAX_CHATS
    if len(items) > limit:
        raise ImportFileError(
            "too_many_chats", f"The file holds {len(items)} chats; at most {limit} can be imported at once."
        )
    read = {"chatsite": _chatsite_chat, "chatgpt": _chatgpt_chat, "open-webui": _openwebui_chat}[fmt]
    chats = []
    for index, item in enumerate(items):
        title = _title(item.get("title")) if isinstance(item, dict) else ""
        if not isinstance(item, dict):
            chats.append(ImportedChat(index, "", problem="This entry is not a chat (not a JSON object)."))
            continue
        try:
            chat = read(index, item)
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
            chat = ImportedChat(index, title, problem="This chat's data is malformed.")
        chats.append(_checked(chat) if chat.problem is None else chat)
    return ImportFile(fmt, chats)


def _detect(document: Any) -> tuple[str, list]:
    if isinstance(document, dict) and "format" in document:
        if document.get("format") != "chatsite" or document.get("version") != 1:
            raise ImportFileError(
                "unknown_format",
                f"This is a {str(document.get('format'))[:40]!r} file, version {str(document.get('version'))[:10]}; "
                "chatsite reads its own version 1 exports.",
            )
        chats = document.get("chats")
        if not isinstance(chats, list):
            raise ImportFileError("unknown_format", "This chatsite export has no list of chats.")
        return "chatsite", chats
    items = document if isinstance(document, list) else [document]
    first = next((item for item in items if isinstance(item, dict)), None)
    if first is None:
        if isinstance(document, list) and not document:
            return "chatsite", []
    elif "mapping" in first:
        return "chatgpt", items
    elif isinstance(first.get("chat"), dict) or "history" in first or isinstance(first.get("messages"), list):
        return "open-webui", items
    raise ImportFileError(
        "unknown_format",
        "This file is not a chatsite export, a ChatGPT conversations.json or an Open WebUI chat export.",
    )


# --- chatsite --------------------------------------------------------------------------------------------


def _chatsite_chat(index: int, item: dict) -> ImportedChat:
    chat = ImportedChat(
        index,
        _title(item.get("title")),
        pinned=item.get("pinned") is True,
        archived=item.get("archived") is True,
        model_id=_short(item.get("modelId"), 100),
        created_at=_iso_time(item.get("createdAt")),
        updated_at=_iso_time(item.get("updatedAt")),
    )
    rows = item.get("messages")
    if not isinstance(rows, list):
        chat.problem = "This chat has no list of messages."
        return chat
    for position, row in enumerate(rows):
        if not isinstance(row, dict):
            chat.notes.append((None, f"Entry {position} of the messages is not a message; left out."))
            continue
        key = str(row.get("id") or f"#{position}")
        role, content = row.get("role"), row.get("content")
        if role not in ROLES:
            chat.notes.append((key, f"Unknown role {str(role)[:20]!r}; left out."))
            continue
        if not isinstance(content, str):
            chat.notes.append((key, "The content is not text; left out."))
            continue
        usage = row.get("usage") if isinstance(row.get("usage"), dict) else {}
        if row.get("attachments"):
            chat.notes.append((key, "Attached documents left out (their ids belong to the exporting server)."))
        parent = row.get("parentId")
        chat.messages.append(
            ImportedMessage(
                key=key,
                parent_key=str(parent) if parent is not None else None,
                role=role,
                content=_text(content),
                model_id=_short(row.get("modelId"), 100),
                finish_reason=_short(row.get("finishReason"), 32),
                prompt_tokens=_count(usage.get("promptTokens")),
                completion_tokens=_count(usage.get("completionTokens")),
                tool_calls=_tool_calls(row.get("toolCalls")),
                sources=_sources(row.get("sources")),
                created_at=_iso_time(row.get("createdAt")),
                completed_at=_iso_time(row.get("completedAt")),
            )
        )
    return chat


# --- ChatGPT ---------------------------------------------------------------------------------------------

CHATGPT_FINISH = {"stop": "stop", "max_tokens": "length", "interrupted": "cancelled"}


def _chatgpt_chat(index: int, item: dict) -> ImportedChat:
    chat = ImportedChat(
        index,
        _title(item.get("title")),
        archived=item.get("is_archived") is True,
        model_id=_short(item.get("default_model_slug"), 100),
        created_at=_epoch_time(item.get("create_time")),
        updated_at=_epoch_time(item.get("update_time")),
    )
    mapping = item.get("mapping")
    if not isinstance(mapping, dict):
        chat.problem = "This conversation has no message mapping."
        return chat
    kept: dict[str, ImportedMessage] = {}
    for node_id, node in mapping.items():
        if not isinstance(node, dict):
            chat.notes.append((str(node_id), "Not a message node; left out."))
            continue
        if node.get("message") is None:
            continue  # the conversation's empty root
        message, reason = _chatgpt_message(str(node_id), node["message"])
        if message is None:
            chat.notes.append((str(node_id), reason))
            continue
        if reason:
            chat.notes.append((str(node_id), reason))
        kept[str(node_id)] = message
    for node_id, message in kept.items():
        message.parent_key = _nearest_kept(mapping, mapping[node_id].get("parent"), kept, "parent")
    chat.messages = list(kept.values())
    return chat


def _chatgpt_message(node_id: str, message: Any) -> tuple[ImportedMessage | None, str]:
    """A ChatGPT message as one to import, or None and why it is left out (or the message and a note)."""
    if not isinstance(message, dict):
        return None, "Not a message; left out."
    author = message.get("author") if isinstance(message.get("author"), dict) else {}
    role = author.get("role")
    metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
    content = message.get("content") if isinstance(message.get("content"), dict) else {}
    kind = content.get("content_type")
    if role == "tool":
        return None, f"Tool output ({_short(author.get('name'), 40) or 'a tool'}) left out."
    if role not in ("user", "assistant", "system"):
        return None, f"Unknown role {str(role)[:20]!r}; left out."
    if metadata.get("is_visually_hidden_from_conversation"):
        return None, f"Hidden {role} message left out."
    if role == "assistant" and message.get("recipient") not in (None, "all"):
        return None, f"Tool call to {_short(message.get('recipient'), 40)} left out."
    if kind not in ("text", "multimodal_text"):
        return None, f"Content of type {str(kind)[:40]!r} left out."
    parts = content.get("parts") if isinstance(content.get("parts"), list) else []
    texts = [p for p in parts if isinstance(p, str)]
    others = len(parts) - len(texts)
    text = _text("\n".join(texts)).strip()
    if not text:
        what = "Images or files only" if others else "No text"
        return None, f"{what}; left out."
    if role == "system":
        return None, "System message (instructions) left out."
    finish = metadata.get("finish_details") if isinstance(metadata.get("finish_details"), dict) else {}
    created = _epoch_time(message.get("create_time"))
    imported = ImportedMessage(
        key=node_id,
        parent_key=None,
        role=role,
        content=text,
        model_id=_short(metadata.get("model_slug"), 100),
        finish_reason=CHATGPT_FINISH.get(finish.get("type"), "") if role == "assistant" else "",
        created_at=created,
        completed_at=created if role == "assistant" else None,
    )
    note = f"{others} image(s) or file(s) left out; the text was imported." if others else ""
    return imported, note


# --- Open WebUI ------------------------------------------------------------------------------------------


def _openwebui_chat(index: int, item: dict) -> ImportedChat:
    body = item["chat"] if isinstance(item.get("chat"), dict) else item
    chat = ImportedChat(
        index,
        _title(item.get("title") or body.get("title")),
        pinned=item.get("pinned") is True,
        archived=item.get("archived") is True,
        model_id=_short((body.get("models") or [""])[0] if isinstance(body.get("models"), list) else "", 100),
        created_at=_epoch_time(item.get("created_at") or body.get("timestamp")),
        updated_at=_epoch_time(item.get("updated_at")),
    )
    history = body.get("history") if isinstance(body.get("history"), dict) else {}
    nodes = history.get("messages")
    if not isinstance(nodes, dict):
        listed = body.get("messages")
        if not isinstance(listed, list):
            chat.problem = "This chat has no messages."
            return chat
        # An older export without the history tree: the list is one branch, each message after the one before.
        nodes, previous = {}, None
        for position, row in enumerate(listed):
            if isinstance(row, dict):
                key = str(row.get("id") or f"#{position}")
                nodes[key] = {"parentId": previous, **row, "id": key}
                previous = key
    kept: dict[str, ImportedMessage] = {}
    for key, row in nodes.items():
        key = str(key)
        if not isinstance(row, dict):
            chat.notes.append((key, "Not a message; left out."))
            continue
        role = row.get("role")
        if role not in ("user", "assistant"):
            what = "System message" if role == "system" else f"Unknown role {str(role)[:20]!r}"
            chat.notes.append((key, f"{what}; left out."))
            continue
        text, images = _openwebui_content(row.get("content"))
        if not text.strip():
            what = "Images or files only" if images or row.get("files") else "No text"
            chat.notes.append((key, f"{what}; left out."))
            continue
        if images or row.get("files"):
            chat.notes.append((key, "Attached images or files left out; the text was imported."))
        usage = row.get("usage") if isinstance(row.get("usage"), dict) else {}
        created = _epoch_time(row.get("timestamp"))
        kept[key] = ImportedMessage(
            key=key,
            parent_key=None,
            role=role,
            content=text,
            model_id=_short(row.get("model"), 100),
            finish_reason="stop" if role == "assistant" and row.get("done", True) is True else "",
            prompt_tokens=_count(usage.get("prompt_tokens", usage.get("input_tokens"))),
            completion_tokens=_count(usage.get("completion_tokens", usage.get("output_tokens"))),
            created_at=created,
            completed_at=created if role == "assistant" else None,
        )
    for key, message in kept.items():
        message.parent_key = _nearest_kept(nodes, nodes[key].get("parentId"), kept, "parentId")
    chat.messages = list(kept.values())
    return chat


def _openwebui_content(content: Any) -> tuple[str, int]:
    """A message's text and how many non-text parts it had (content is a string, or OpenAI-style parts)."""
    if isinstance(content, str):
        return _text(content), 0
    if isinstance(content, list):
        texts = [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return _text("\n".join(texts)), len(content) - len(texts)
    return "", 0


# --- Checks shared by the formats ------------------------------------------------------------------------


def _nearest_kept(nodes: dict, parent: Any, kept: dict, link: str) -> str | None:
    """The closest ancestor (following `link`) that is kept, or None; safe against loops of parents."""
    for _ in range(len(nodes) + 1):
        if parent is None:
            return None
        parent = str(parent)
        if parent in kept:
            return parent
        node = nodes.get(parent)
        parent = node.get(link) if isinstance(node, dict) else None
    return None


def _checked(chat: ImportedChat) -> ImportedChat:
    """Apply the limits, put the messages in tree order and give every message a time after its parent's."""
    limit = settings.CHATSITE_IMPORT_MAX_MESSAGES
    if len(chat.messages) > limit:
        chat.problem = f"This chat has {len(chat.messages)} messages; at most {limit} can be imported per chat."
        return chat
    most = settings.CHATSITE_IMPORT_MAX_MESSAGE_CHARS
    long = next((m for m in chat.messages if len(m.content) > most), None)
    if long is not None:
        chat.problem = f"Message {long.key[:60]} is {len(long.content)} characters long; the most is {most}."
        return chat
    chat.messages = _tree_order(chat)
    if not chat.messages:
        chat.problem = "This chat has no messages with text to import."
        return chat
    now = timezone.now()
    base = min(chat.created_at or now, now)
    times: dict[str, datetime] = {}
    previous = base
    for message in chat.messages:
        earliest = times[message.parent_key] + timedelta(microseconds=1) if message.parent_key else None
        created = message.created_at if message.created_at and message.created_at <= now else None
        created = created or previous + timedelta(microseconds=1)
        if earliest and created < earliest:
            created = earliest
        message.created_at = times[message.key] = previous = created
        if message.completed_at is not None:
            message.completed_at = max(min(message.completed_at, now), created)
    first, last = min(times.values()), max(times.values())
    chat.created_at = min(chat.created_at, first) if chat.created_at and chat.created_at <= now else first
    chat.updated_at = max(last, min(chat.updated_at, now)) if chat.updated_at else last
    return chat


def _tree_order(chat: ImportedChat) -> list[ImportedMessage]:
    """The messages with every parent before its children; duplicates and loops of parents are left out (noted),
    a parent that is not in the chat makes a message a root."""
    by_key: dict[str, ImportedMessage] = {}
    for message in chat.messages:
        if message.key in by_key:
            chat.notes.append((message.key, "A second message with the same id; left out."))
            continue
        by_key[message.key] = message
    children: dict[str, list[ImportedMessage]] = defaultdict(list)
    roots = []
    for message in by_key.values():
        if message.parent_key in by_key and message.parent_key != message.key:
            children[message.parent_key].append(message)
        else:
            message.parent_key = None
            roots.append(message)
    ordered: list[ImportedMessage] = []
    stack = list(reversed(roots))
    while stack:
        message = stack.pop()
        ordered.append(message)
        stack.extend(reversed(children.get(message.key, [])))
    reached = {m.key for m in ordered}
    for key in by_key:
        if key not in reached:
            chat.notes.append((key, "Part of a loop of parents; left out."))
    return ordered


def _text(value: Any) -> str:
    """Text the database can hold: no NUL characters (PostgreSQL refuses them), no unpaired surrogates."""
    if not isinstance(value, str):
        return ""
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _short(value: Any, limit: int) -> str:
    return " ".join(_text(value).split())[:limit]


def _title(value: Any) -> str:
    return _short(value, settings.CHATSITE_MAX_TITLE_CHARS)


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_POSITIVE_INT:
        return value
    return None


def _clean_json(value: Any, depth: int = 0) -> Any:
    """JSON data with its strings made storable (`_text`); refuses nesting deeper than MAX_JSON_DEPTH."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError("nested too deeply")
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, list):
        return [_clean_json(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {_text(str(k)): _clean_json(v, depth + 1) for k, v in value.items()}
    return value


def _tool_calls(value: Any) -> list[dict]:
    """chatsite's tool call records (`{callId, toolName, toolArgs, result | error}`), checked: later prompts
    replay them to the model, so only well-formed ones are kept."""
    calls = []
    for call in value[:MAX_TOOL_CALLS] if isinstance(value, list) else []:
        if not isinstance(call, dict) or not all(isinstance(call.get(k), str) for k in ("callId", "toolName")):
            continue
        record = {"callId": _text(call["callId"])[:200], "toolName": _text(call["toolName"])[:100]}
        record["toolArgs"] = _clean_json(call["toolArgs"]) if isinstance(call.get("toolArgs"), dict) else {}
        if "error" in call:
            record["error"] = _text(str(call["error"]))
        else:
            record["result"] = _clean_json(call.get("result"))
        calls.append(record)
    return calls


def _sources(value: Any) -> list[dict]:
    return [_clean_json(s) for s in value[:MAX_SOURCES] if isinstance(s, dict)] if isinstance(value, list) else []


def _iso_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    if parsed is None:
        return None
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)


def _epoch_time(value: Any) -> datetime | None:
    """Unix time in seconds (ChatGPT, Open WebUI), or in milli-, micro- or nanoseconds (by its size)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    for scale in (1, 1e3, 1e6, 1e9):
        if abs(value / scale) < 1e11:  # before the year 5138
            try:
                return datetime.fromtimestamp(value / scale, tz=UTC)
            except (OverflowError, OSError, ValueError):
                return None
    return None
