"""Seed 000's encoder: a reply's events (`protocols.replies.reply_events`) as `StreamResponse` messages.

Pure: no database, no Redis, no I/O, so its mapping is tested event by event (tests/test_connect_rpc.py).

| reply event (chats.event_schema) | StreamResponse |
| --- | --- |
| (before any event) | `metadata`: id, created_at, model, chat_id, is_continuation, status IN_PROGRESS |
| `content` | `text` (the delta) |
| `tool_call` of `sql_query` | `cell` (id = the call id, the query, its connector) |
| `tool_result` of `sql_query` | `preview` of that cell: columns, first rows, row count, truncated, or error |
| `step` `finished` carrying `sql` | `cell` (id `step-<index>`) and its `preview` |
| `end` | `metadata`: usage, status COMPLETED (CANCELLED when it was stopped), finish_reason |
| `error` | `metadata`: usage of nothing, status FAILED, `error` (the sentence), error_code |

Every other event (`start`, `queued`, `sources`, `tool_call`s of other tools, steps without SQL) has no
counterpart in the seed's messages and is left out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from protobuf import Oneof
from protobuf.wkt.google.protobuf.struct_pb import ListValue
from protobuf.wkt.google.protobuf.timestamp_pb import Timestamp

from protocols.connect.stream_pb import (
    Cell,
    CellType,
    ChatStatus,
    ChatUsage,
    Preview,
    StreamMetadata,
    StreamResponse,
)

PREVIEW_ROWS = 20
"""Most rows a preview carries (a query may return up to its connector's `max_rows`)."""

SQL_TOOL = "sql_query"


@dataclass(frozen=True)
class ReplyInfo:
    """What the first metadata says about a reply: its id, when it was created, the model, its chat, whether the
    chat was continued, and the question and workflow it answers (ids, or None)."""

    message_id: str
    created_at: datetime
    model: str
    chat_id: str
    is_continuation: bool
    user_message_id: str | None = None
    workflow_id: str | None = None


def _value(value: Any) -> Any:
    """A cell value that google.protobuf.Value can hold: JSON's null, bool, number, string, list or object."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        # Value holds doubles: past 2**53 an integer would silently change, so it travels as text.
        return value if abs(value) < 2**53 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _value(v) for k, v in value.items()}
    return str(value)


def _row(row: Any) -> ListValue:
    return ListValue.from_python([_value(v) for v in (row if isinstance(row, (list, tuple)) else [row])])


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class ReplyEncoder:
    """Turns one reply's events into `StreamResponse` messages, in order (see the module's table).

    Keeps which `sql_query` calls got a cell, so that each preview follows its cell.
    """

    def __init__(self, reply: ReplyInfo) -> None:
        self.reply = reply
        self._sql_calls: set[str] = set()

    def _metadata(self, status: ChatStatus, **fields: Any) -> StreamResponse:
        extra: dict[str, str] = fields.pop("metadata", {})
        base = {"user_message_id": self.reply.user_message_id, "workflow_id": self.reply.workflow_id}
        metadata = {k: v for k, v in base.items() if v} | extra
        return StreamResponse(
            response=Oneof(
                "metadata",
                StreamMetadata(
                    id=self.reply.message_id,
                    created_at=Timestamp.from_datetime(self.reply.created_at),
                    model=self.reply.model,
                    chat_id=self.reply.chat_id,
                    metadata=metadata,
                    is_continuation=self.reply.is_continuation,
                    status=status,
                    **fields,
                ),
            )
        )

    def first(self) -> StreamResponse:
        """The first message of every stream: the reply's metadata, status IN_PROGRESS."""
        return self._metadata(ChatStatus.QUERY_STATUS_IN_PROGRESS)

    def encode(self, event: dict[str, Any]) -> list[StreamResponse]:
        """The messages for one reply event (none for events the seed has no message for)."""
        kind = event.get("type")
        if kind == "content":
            return [StreamResponse(response=Oneof("text", event["delta"]))] if event["delta"] else []
        if kind == "tool_call" and event.get("toolName") == SQL_TOOL:
            args = event.get("toolArgs")
            if not isinstance(args, dict) or not isinstance(args.get("query"), str):
                return []  # not a query the tool would run: its result says why
            self._sql_calls.add(event["callId"])
            return [self._cell(event["callId"], args["query"], args.get("connector"))]
        if kind == "tool_result" and event.get("callId") in self._sql_calls:
            if event.get("error") is not None or not isinstance(event.get("result"), dict):
                return [self._preview(event["callId"], error=str(event.get("error") or "The query failed."))]
            return [self._preview(event["callId"], **event["result"])]
        if kind == "step" and event.get("state") == "finished" and isinstance(event.get("sql"), str):
            cell_id = f"step-{event.get('index')}"
            return [
                self._cell(cell_id, event["sql"], event.get("connector")),
                self._preview(cell_id, **{k: event[k] for k in ("columns", "rows", "rowCount") if k in event}),
            ]
        if kind == "end":
            usage = event.get("usage") or {}
            prompt, completion = _count(usage.get("promptTokens")), _count(usage.get("completionTokens"))
            cancelled = event.get("finishReason") == "cancelled"
            return [
                self._metadata(
                    ChatStatus.QUERY_STATUS_CANCELLED if cancelled else ChatStatus.QUERY_STATUS_COMPLETED,
                    usage=ChatUsage(
                        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
                    ),
                    metadata={"finish_reason": str(event.get("finishReason") or "")},
                )
            ]
        if kind == "error":
            return [
                self._metadata(
                    ChatStatus.QUERY_STATUS_FAILED,
                    usage=ChatUsage(),
                    error=str(event.get("message") or "The reply failed."),
                    metadata={
                        "error_code": str(event.get("error") or ""),
                        "retryable": json.dumps(bool(event.get("retryable"))),
                    },
                )
            ]
        return []

    @staticmethod
    def _cell(cell_id: str, sql: str, connector: Any) -> StreamResponse:
        return StreamResponse(
            response=Oneof(
                "cell",
                Cell(id=cell_id, type=CellType.SQL, code=sql, connector=str(connector or "")),
            )
        )

    @staticmethod
    def _preview(
        cell_id: str,
        *,
        columns: Any = (),
        rows: Any = (),
        rowCount: Any = None,  # the event's own field name
        truncated: Any = False,
        error: str = "",
        **_: Any,
    ) -> StreamResponse:
        rows = list(rows or [])
        return StreamResponse(
            response=Oneof(
                "preview",
                Preview(
                    cell_id=cell_id,
                    columns=[str(c) for c in columns or []],
                    rows=[_row(r) for r in rows[:PREVIEW_ROWS]],
                    row_count=_count(rowCount) if rowCount is not None else len(rows),
                    truncated=bool(truncated),
                    error=error,
                ),
            )
        )
