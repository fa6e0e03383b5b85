"""A reply's prompt: the branch it answers, its messages fitted into the model's context window, the system
prompt's placeholders, and step results as text for the model. Plain functions over saved messages."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.conf import settings

from chats.models import Message
from pipelines.providers.base import ChatMessage, GenerationError, Provider

# Tokens a chat template adds around each message (role markers, separators); a safe upper bound.
MESSAGE_OVERHEAD_TOKENS = 8
# Rows of an sql step's result shown to the model.
SQL_CONTEXT_ROWS = 50


def branch_history(message: Message) -> list[Message]:
    """The messages a reply answers: its chain of parents, oldest first (the reply itself excluded).

    Loads the chat's messages in one query and walks the `parent` links in memory, so a reply made by
    regenerate or edit sees only its own branch of the conversation.
    """
    rows = {
        m.id: m
        for m in Message.objects.filter(chat_id=message.chat_id).only(
            "id", "parent_id", "role", "content", "status", "tool_calls", "attachments"
        )
    }
    chain: list[Message] = []
    current = rows.get(message.parent_id)
    while current is not None and len(chain) < len(rows):
        chain.append(current)
        current = rows.get(current.parent_id)
    chain.reverse()
    return chain


def _turn_messages(message: Message, with_tools: bool) -> list[ChatMessage]:
    """One history message as prompt messages: a reply that called tools becomes its calls, their results,
    then its text (OpenAI's order), when the provider takes tools."""
    if message.role == Message.Role.USER:
        return [{"role": "user", "content": message.content}] if message.content else []
    if message.role != Message.Role.ASSISTANT:
        return []
    turn: list[ChatMessage] = []
    calls = [c for c in (message.tool_calls or []) if c.get("callId")]
    if with_tools and calls:
        turn.append(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": c["callId"],
                        "type": "function",
                        "function": {"name": c["toolName"], "arguments": json.dumps(c.get("toolArgs", {}))},
                    }
                    for c in calls
                ],
            }
        )
        for c in calls:
            outcome = {"error": c["error"]} if "error" in c else {"result": c.get("result")}
            turn.append({"role": "tool", "tool_call_id": c["callId"], "content": json.dumps(outcome, default=str)})
    if message.content:
        turn.append({"role": "assistant", "content": message.content})
    return turn


def build_prompt(
    system_prompt: str,
    history: list[Message],
    provider: Provider,
    *,
    context_window: int,
    max_tokens: int,
    question: str | None = None,
    with_tools: bool = False,
) -> list[ChatMessage]:
    """Turn a branch into prompt messages that fit the model's context window.

    Keeps the system prompt and the newest message (replaced by `question` when given: a rewritten question,
    with any step context); keeps at most CHATSITE_MAX_HISTORY_MESSAGES messages; drops the oldest turns until
    the prompt plus `max_tokens` fits in
    `context_window` tokens. Replies that produced no text (and no tool calls) are left out.

    Raises:
        GenerationError: `prompt_too_long` when the system prompt and the newest message alone do not fit.
    """
    history = history[-settings.CHATSITE_MAX_HISTORY_MESSAGES :]
    units = [_turn_messages(m, with_tools) for m in history]
    units = [u for u in units if u]
    if question is not None and units and units[-1][0]["role"] == "user":
        units[-1] = [{"role": "user", "content": question}]
    system: list[ChatMessage] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    budget = context_window - max_tokens

    def cost(messages: list[ChatMessage]) -> int:
        return sum(provider.count_tokens(m.get("content") or "") + MESSAGE_OVERHEAD_TOKENS for m in messages)

    used = cost(system)
    kept: list[list[ChatMessage]] = []
    for unit in reversed(units):
        if used + cost(unit) > budget:
            break
        used += cost(unit)
        kept.append(unit)
    if units and not kept:
        raise GenerationError(
            "prompt_too_long",
            f"The message is too long for this model: it needs about {used + cost(units[-1])} tokens and the "
            f"model's window leaves {budget} for the prompt. Shorten it or pick a model with a larger window.",
        )
    kept.reverse()
    return system + [m for unit in kept for m in unit]


class _SafeFormat(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render_system_prompt(text: str, *, user_name: str, now: datetime) -> str:
    """Replace `{date}`, `{time}`, `{weekday}` and `{user_name}` in `text`; leave other braces alone."""
    values = _SafeFormat(
        date=now.date().isoformat(), time=now.strftime("%H:%M"), weekday=now.strftime("%A"), user_name=user_name
    )
    try:
        return text.format_map(values)
    except (ValueError, IndexError):
        return text  # stray braces: the text is used as written


def sql_context(connector: str, result: dict[str, Any]) -> str:
    """An sql step's result as text for the model: columns, then up to SQL_CONTEXT_ROWS rows."""
    lines = [f"Result of the SQL query on '{connector}' ({result['rowCount']} rows):", " | ".join(result["columns"])]
    lines += [" | ".join("" if v is None else str(v) for v in row) for row in result["rows"][:SQL_CONTEXT_ROWS]]
    if result.get("truncated") or len(result["rows"]) > SQL_CONTEXT_ROWS:
        lines.append("(more rows not shown)")
    return "\n".join(lines)
