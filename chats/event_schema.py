"""The reply-event contract (DESIGN.md section 4): every event type, its fields, and one constructor each.

This is the one home of what a reply's events look like. Workers build events only through these constructors;
the OpenAPI description of the stream endpoints is generated from `EVENT_TYPES`; the browser's handlers and the
events that the live tests receive are checked against it (tests/test_event_schema.py, `check_event`). The
transport that carries events (Redis Streams and the memory bus, the pub/sub multiplexer, the publisher, the
heartbeat) lives beside it in `chats.events` and `chats.bus`, and knows nothing of the fields.

Events are plain dicts with camelCase keys (as seed 004). Clients ignore types they do not know; fields are only
ever added, never renamed or removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]


@dataclass(frozen=True)
class EventType:
    """One event type: what it means, its required fields and the optional ones (name -> description)."""

    name: str
    doc: str
    required: dict[str, str]
    optional: dict[str, str] = field(default_factory=dict)


SOURCE_FIELDS = "{id, number, title, snippet, score, documentId, collectionId, page, start, end}"

EVENT_TYPES: dict[str, EventType] = {
    t.name: t
    for t in (
        EventType(
            "start",
            "the first event of every reply",
            {
                "messageId": "the reply's id",
                "chatId": "its chat",
                "userMessageId": "the question it answers (null for none)",
                "model": "the model id",
                "workflowId": "the workflow, or null",
            },
        ),
        EventType(
            "queued",
            "the reply waits for a free worker slot; sent again when its place changes",
            {"position": "replies ahead of it, where known (null when unknown)"},
        ),
        EventType(
            "step",
            "workflow progress",
            {"step": "the step's type", "state": "started, finished or failed", "index": "its place, from 1"},
            {
                "output": "a rewritten question (rewrite_query, finished)",
                "sql": "the SQL it ran (sql, execute_sql, finished), or the checked statement (generate_sql)",
                "connector": "the connector it ran on, by name (sql, execute_sql, finished)",
                "rowCount": "rows read (sql, execute_sql, finished)",
                "columns": "column names (sql, execute_sql, finished)",
                "rows": "the first rows, each a list of JSON values in column order (sql, execute_sql, finished)",
                "resultCount": "passages found (retrieve, finished)",
                "note": "something the user should know (generate, finished)",
                "outcome": "sql, or non_sql: the question is not about the data and the reply explains (classify)",
                "tables": "the tables chosen for the question, best first (retrieve_schema, finished)",
                "truncated": "whether the query had more rows than the connector returns (execute_sql, finished)",
                "repaired": "whether the model had to repair its query (generate_sql, execute_sql, finished)",
                "summary": "the summary it streamed (summarize, finished)",
            },
        ),
        EventType(
            "sources",
            "the passages the answer draws on, once, before the first content",
            {"sources": f"[{SOURCE_FIELDS}]"},
        ),
        EventType("content", "a piece of the reply's text: append in order", {"delta": "the text"}),
        EventType(
            "tool_call",
            "the model calls a tool",
            {"callId": "pairs the call with its result", "toolName": "the tool", "toolArgs": "its arguments"},
        ),
        EventType(
            "tool_result",
            "a tool's answer",
            {"callId": "the call it answers", "toolName": "the tool", "result": "its result (null on error)"},
            {"error": "what went wrong, when it failed"},
        ),
        EventType(
            "end",
            "terminal: the reply finished",
            {
                "messageId": "the reply's id",
                "finishReason": "stop, length or cancelled",
                "usage": "{promptTokens, completionTokens}",
            },
            {"quotaLeft": "tokens left today, for users with a daily quota"},
        ),
        EventType(
            "error",
            "terminal: the reply failed",
            {
                "error": "a machine code",
                "message": "a sentence for people",
                "retryable": "whether trying again may work",
            },
        ),
    )
}

TERMINAL_TYPES = frozenset({"end", "error"})


def start_event(
    *, message_id: str, chat_id: str, user_message_id: str | None, model: str, workflow_id: str | None
) -> Event:
    """The first event of every reply."""
    return {
        "type": "start",
        "messageId": message_id,
        "chatId": chat_id,
        "userMessageId": user_message_id,
        "model": model,
        "workflowId": workflow_id,
    }


def queued_event(position: int | None) -> Event:
    """The reply waits for a worker slot; `position` is how many replies are ahead of it (None: unknown)."""
    return {"type": "queued", "position": position}


def step_event(step: str, state: str, index: int, **detail: Any) -> Event:
    """Workflow progress: step `index` (from 1) of type `step` is `started`, `finished` or `failed`; `detail`
    holds the optional fields of `EVENT_TYPES["step"]`."""
    return {"type": "step", "step": step, "state": state, "index": index, **detail}


def sources_event(sources: list[dict[str, Any]]) -> Event:
    """The passages an answer draws on, sent once, before the first `content` event (seed 002).

    Each item: `{id, number, title, snippet, score, documentId, collectionId, page, start, end}`: `number` is
    how the answer cites it ([1]); `score` is the similarity in [0, 1]; `page` (PDF, from 1) or null;
    `start`/`end` are character offsets into the document's text.
    """
    return {"type": "sources", "sources": sources}


def content_event(delta: str) -> Event:
    """A piece of the reply's text; clients append the deltas in order."""
    return {"type": "content", "delta": delta}


def tool_call_event(call_id: str, tool_name: str, tool_args: Any) -> Event:
    """The model calls tool `tool_name` with `tool_args` (parsed JSON, or the text when it is not JSON)."""
    return {"type": "tool_call", "callId": call_id, "toolName": tool_name, "toolArgs": tool_args}


def tool_result_event(call_id: str, tool_name: str, outcome: dict[str, Any]) -> Event:
    """A tool's answer to call `call_id`: `outcome` is `{"result": ...}` or `{"error": "<sentence>"}`."""
    if "error" in outcome:
        return {
            "type": "tool_result",
            "callId": call_id,
            "toolName": tool_name,
            "result": None,
            "error": outcome["error"],
        }
    return {"type": "tool_result", "callId": call_id, "toolName": tool_name, "result": outcome["result"]}


def end_event(
    *, message_id: str, finish_reason: str, prompt_tokens: int, completion_tokens: int, quota_left: int | None = None
) -> Event:
    """The terminal event of a reply that finished: `finishReason` is `stop`, `length` or `cancelled`.

    `quotaLeft` (tokens the user may still use today) is there only for users with a daily quota.
    """
    event = {
        "type": "end",
        "messageId": message_id,
        "finishReason": finish_reason,
        "usage": {"promptTokens": prompt_tokens, "completionTokens": completion_tokens},
    }
    if quota_left is not None:
        event["quotaLeft"] = quota_left
    return event


def error_event(*, code: str, message: str, retryable: bool) -> Event:
    """The terminal event of a reply that failed: a machine `error` code and a `message` for people."""
    return {"type": "error", "error": code, "message": message, "retryable": retryable}


def check_event(event: Event) -> None:
    """Check one event against the contract: a known type, every required field, no field it does not name.

    Raises:
        ValueError: saying what is wrong.
    """
    kind = EVENT_TYPES.get(event.get("type"))
    if kind is None:
        raise ValueError(f"unknown event type {event.get('type')!r}")
    fields = set(event) - {"type", "t"}  # `t`: bench/relay.py's timestamps (CHATSITE_BENCH_TIMESTAMPS)
    if missing := set(kind.required) - fields:
        raise ValueError(f"{kind.name} event lacks {sorted(missing)}")
    if extra := fields - set(kind.required) - set(kind.optional):
        raise ValueError(f"{kind.name} event has fields the contract does not name: {sorted(extra)}")


def sse_description() -> str:
    """The event types and their fields, for the OpenAPI description of the stream endpoints."""
    parts = []
    for kind in EVENT_TYPES.values():
        names = [*kind.required, *(f"{name}?" for name in kind.optional)]
        parts.append(f"`{kind.name}` {{{', '.join(names)}}}: {kind.doc}")
    return "; ".join(parts)
