"""The data of an import: what `chats.importers` reads a file into, and the helpers that make a file's values
storable (text without NUL characters, bounded numbers, well-formed tool calls and sources, times)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import exceptions, status

MAX_JSON_DEPTH = 32
MAX_TOOL_CALLS = 100
MAX_SOURCES = 100
MAX_POSITIVE_INT = 2_147_483_647  # PositiveIntegerField's largest value on PostgreSQL


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


def nearest_kept(nodes: dict, parent: Any, kept: dict, link: str) -> str | None:
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


def clean_text(value: Any) -> str:
    """Text the database can hold: no NUL characters (PostgreSQL refuses them), no unpaired surrogates."""
    if not isinstance(value, str):
        return ""
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def short_text(value: Any, limit: int) -> str:
    """`value` as one line of at most `limit` characters ('' when it is not text)."""
    return " ".join(clean_text(value).split())[:limit]


def title_text(value: Any) -> str:
    """`value` as a chat title (one line, at most CHATSITE_MAX_TITLE_CHARS)."""
    return short_text(value, settings.CHATSITE_MAX_TITLE_CHARS)


def token_count(value: Any) -> int | None:
    """`value` if it is a token count the database can hold (an int from 0 to 2**31 - 1), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_POSITIVE_INT:
        return value
    return None


def clean_json(value: Any, depth: int = 0) -> Any:
    """JSON data with its strings made storable (`clean_text`); refuses nesting deeper than MAX_JSON_DEPTH."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError("nested too deeply")
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [clean_json(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v, depth + 1) for k, v in value.items()}
    return value


def tool_call_records(value: Any) -> list[dict]:
    """chatsite's tool call records (`{callId, toolName, toolArgs, result | error}`), checked: later prompts
    replay them to the model, so only well-formed ones are kept."""
    calls = []
    for call in value[:MAX_TOOL_CALLS] if isinstance(value, list) else []:
        if not isinstance(call, dict) or not all(isinstance(call.get(k), str) for k in ("callId", "toolName")):
            continue
        record = {"callId": clean_text(call["callId"])[:200], "toolName": clean_text(call["toolName"])[:100]}
        record["toolArgs"] = clean_json(call["toolArgs"]) if isinstance(call.get("toolArgs"), dict) else {}
        if "error" in call:
            record["error"] = clean_text(str(call["error"]))
        else:
            record["result"] = clean_json(call.get("result"))
        calls.append(record)
    return calls


def source_records(value: Any) -> list[dict]:
    """The objects of a `sources` list (at most MAX_SOURCES), made storable."""
    return [clean_json(s) for s in value[:MAX_SOURCES] if isinstance(s, dict)] if isinstance(value, list) else []


def iso_time(value: Any) -> datetime | None:
    """An ISO 8601 time (UTC when it names no zone), or None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    if parsed is None:
        return None
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)


def epoch_time(value: Any) -> datetime | None:
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
