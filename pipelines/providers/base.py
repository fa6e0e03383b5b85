"""The provider interface (DESIGN.md section 5).

A provider turns a list of chat messages into a stream of deltas. Each provider kind is one module in this
package, named as the kind (`ModelConfig.provider`), exposing `create(config) -> Provider`; `get_provider`
imports it on first use, so a worker that never uses a kind never loads its library.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from pipelines.models import ModelConfig


class ChatMessage(TypedDict, total=False):
    """One message of a prompt, in OpenAI's chat format.

    `role` is `system`, `user`, `assistant` or `tool`. An assistant message that called tools has
    `tool_calls`: `[{"id", "type": "function", "function": {"name", "arguments"}}]`; each answer to a call is a
    `tool` message with `tool_call_id` and the result as `content` (JSON text).
    """

    role: str
    content: str
    tool_calls: list[dict]
    tool_call_id: str


@dataclass(frozen=True)
class ToolCall:
    """A complete tool call the model asked for: `id` (the callId), tool `name`, and `arguments` as the JSON
    text the model wrote (it may be invalid: the tool layer checks it)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatDelta:
    """One step of a provider's stream.

    `text` is the next piece of the reply (may be empty). `tool_calls` carries tool calls once each is complete.
    The last delta carries `finish_reason` (`stop`: the model ended its answer; `length`: it hit
    `max_tokens`; `tool_calls`: it wants the results of its tool calls) and the token usage.
    """

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class GenerationError(Exception):
    """A reply cannot be produced; becomes an `error` event and a `failed` message.

    Args:
        code: machine code for clients, such as `provider_error`, `timeout`, `prompt_too_long`.
        message: what went wrong, in words a person understands (never a stack trace or a secret).
        retryable: whether sending the same request again may succeed.
    """

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class Provider(ABC):
    """Streams chat completions from one configured model.

    `supports_tools` says whether `stream_chat` honours `tools`; a provider that does not ignores them.
    """

    supports_tools: bool = False

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    @abstractmethod
    def stream_chat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        tools: list[dict] | None = None,
        tool_choice: str | dict | None = None,
    ) -> Iterator[ChatDelta]:
        """Generate a reply to `messages`, yielding deltas as the model produces them.

        Args:
            messages: the prompt, oldest first; at most one leading `system` message.
            max_tokens: the most tokens to generate.
            temperature: sampling temperature, 0 (deterministic) to 2.
            tools: tools the model may call, in OpenAI's format
                (`[{"type": "function", "function": {"name", "description", "parameters"}}]`).
            tool_choice: `"auto"` (the default), `"none"`, `"required"`, or
                `{"type": "function", "function": {"name": ...}}` to force one tool (OpenAI's meaning).

        Raises:
            GenerationError: for failures a user should hear about (unreachable server, bad model file...).
        """

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """How many tokens `text` takes in this model's prompt (used to fit the context window)."""


def get_provider(config: ModelConfig) -> Provider:
    """Build the provider for a model configuration, importing its module on first use.

    Raises:
        GenerationError: `provider_unavailable` when the kind has no module here.
    """
    try:
        module = importlib.import_module(f"pipelines.providers.{config.provider}")
    except ModuleNotFoundError as exc:
        raise GenerationError(
            "provider_unavailable", f"The provider '{config.provider}' is not installed on this server."
        ) from exc
    return module.create(config)
