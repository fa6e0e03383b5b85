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
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from chats.import_data import ImportedChat, ImportedMessage, ImportFile, ImportFileError, title_text
from chats.import_formats import read_chatgpt_chat, read_chatsite_chat, read_openwebui_chat

__all__ = ["ImportFile", "ImportFileError", "ImportedChat", "ImportedMessage", "read_import_file"]


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
    read = {"chatsite": read_chatsite_chat, "chatgpt": read_chatgpt_chat, "open-webui": read_openwebui_chat}[fmt]
    chats = []
    for index, item in enumerate(items):
        title = title_text(item.get("title")) if isinstance(item, dict) else ""
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


# --- Checks shared by the formats ------------------------------------------------------------------------


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
