"""Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp's or llama-cpp-python's server, Ollama, LM Studio...)
through the official `openai` SDK.

Protocol: OpenAI Chat Completions with streaming (`POST {base_url}/chat/completions`, `stream: true`,
server-sent events of `chat.completion.chunk` objects ended by `data: [DONE]`), asking for a final usage chunk
with `stream_options: {"include_usage": true}`.

Configuration (`pipelines.models.ModelConfig`):
- `provider_model`: the model name the server knows (sent as `model`);
- `base_url`: the API root, such as `http://127.0.0.1:8080/v1`; empty means the SDK's default (the
  `OPENAI_BASE_URL` environment variable, else `https://api.openai.com/v1`);
- `api_key_env`: the NAME of the environment variable holding the key. Without one (or when the variable is
  unset) a placeholder key is sent, which servers without authentication ignore;
- `options`:
  - `timeout` (seconds, float, default 60): the longest wait for the next bytes from the server, including
    the wait for the first token while it reads a long prompt. It is not a limit on the whole reply;
  - `connect_timeout` (seconds, float, default 5): the longest wait to open a connection;
  - `max_retries` (int, default 2): how often the SDK retries a request that failed before the stream
    started (connection errors, timeouts, 408/409/429/5xx), with exponential backoff. A stream that already
    started is never retried (its text has reached readers).

Servers differ in what they send. Usage arrives only from servers that honour `include_usage` (OpenAI's does);
otherwise it is reported as unknown (`None`). llama-cpp-python's server (0.3.x,
`--chat_format chatml-function-calling`) streams tool calls only when one tool is forced: it ignores the tools
under the default choice and breaks off the stream under `"auto"`; it also repeats each call's id and name in
every fragment, and reports a prompt longer than its context by closing the stream without a finish_reason.

Errors become `GenerationError`s with these codes: `rate_limited`, `auth_failed`, `timeout`,
`provider_unavailable`, `model_unavailable`, `prompt_too_long`, `provider_rejected`, `provider_error`,
`provider_misconfigured`. The API key never appears in an error message or a log line.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx2
import openai
from django.conf import settings

from pipelines.providers.base import ChatDelta, ChatMessage, GenerationError, Provider, ToolCall

if TYPE_CHECKING:
    from pipelines.models import ModelConfig

logger = logging.getLogger(__name__)

DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_MAX_RETRIES = 2
# Sent when no key is configured: the SDK refuses to build a client without one, and servers that need no
# authentication ignore it.
PLACEHOLDER_API_KEY = "not-needed"
# Without a tokenize endpoint common to OpenAI-compatible servers, prompts are measured by the usual rule of
# thumb for English text with BPE tokenizers.
CHARS_PER_TOKEN = 4
# How much of a server's own error text to pass on to users.
MAX_DETAIL_CHARS = 300


def _with_detail(message: str, detail: str) -> str:
    """`message`, followed by the server's explanation when there is one."""
    return f"{message} The server said: {detail}" if detail else message


@dataclass
class _PartialToolCall:
    """A tool call being assembled from streamed fragments."""

    id: str = ""
    name: str = ""
    arguments: str = ""

    def complete(self) -> ToolCall:
        # Some servers send no call ids; callers need one to pair the call with its result.
        return ToolCall(id=self.id or f"call_{uuid.uuid4().hex}", name=self.name, arguments=self.arguments)


_clients: dict[tuple, openai.OpenAI] = {}
_clients_lock = threading.Lock()


def shared_client(
    base_url: str | None, api_key: str, read_timeout: float, connect_timeout: float, max_retries: int
) -> openai.OpenAI:
    """The process's one SDK client for a server, key, timeouts (seconds) and retry count, built on first use.

    Its HTTP connection pool is shared by every reply to that server: the network lane's worker streams up to
    CHATSITE_NETWORK_SLOTS replies at once, so the pool may open that many connections (keeping 100 idle).
    Building a client per reply cost about 100 ms of CPU (its TLS context loads the CA bundle).
    """
    key = (base_url, api_key, read_timeout, connect_timeout, max_retries)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            limits = httpx2.Limits(
                max_connections=max(100, settings.CHATSITE_NETWORK_SLOTS), max_keepalive_connections=100
            )
            client = _clients[key] = openai.OpenAI(
                base_url=base_url,
                api_key=api_key,
                # The SDK's own Timeout class: openai 3.x runs on httpx2, whose Timeout is not httpx's.
                timeout=openai.Timeout(read_timeout, connect=connect_timeout),
                max_retries=max_retries,
                http_client=openai.DefaultHttpxClient(limits=limits),
            )
        return client


class OpenAIProvider(Provider):
    """Streams chat completions from an OpenAI-compatible server (see the module docstring for settings)."""

    supports_tools = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self._client: openai.OpenAI | None = None
        self._api_key = ""

    def _get_client(self) -> openai.OpenAI:
        """The SDK client for this model's server, shared by every reply of the process that uses the same
        server, key and timeouts (`shared_client`): no client, TLS context or connection is built per reply.

        Raises:
            GenerationError: `provider_misconfigured` when `options` holds values of the wrong type.
        """
        if self._client is None:
            options = self.config.options or {}
            try:
                read_timeout = float(options.get("timeout", DEFAULT_READ_TIMEOUT))
                connect_timeout = float(options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT))
                max_retries = int(options.get("max_retries", DEFAULT_MAX_RETRIES))
            except (TypeError, ValueError) as exc:
                raise GenerationError(
                    "provider_misconfigured",
                    "This model's settings are invalid (timeout, connect_timeout and max_retries must be numbers).",
                ) from exc
            key_name = self.config.api_key_env
            self._api_key = os.environ.get(key_name, "") if key_name else ""
            if key_name and not self._api_key:
                logger.warning(
                    "model %s at %s: environment variable %s is not set; sending no key",
                    self.config.provider_model,
                    self._label(),
                    key_name,
                )
            self._client = shared_client(
                self.config.base_url or None, self._api_key or PLACEHOLDER_API_KEY, read_timeout, connect_timeout,
                max_retries,
            )  # fmt: skip
        return self._client

    def stream_chat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        tools: list[dict] | None = None,
        tool_choice: str | dict | None = None,
    ) -> Iterator[ChatDelta]:
        """Stream a reply through OpenAI Chat Completions streaming.

        Yields a `ChatDelta(text=...)` per content piece as it arrives; the tool calls, complete, in one
        `ChatDelta(tool_calls=...)` once the server ends them; then a last `ChatDelta` with `finish_reason`
        (`stop`, `length`, `tool_calls`, or what the server reported, such as `content_filter`) and the usage in
        tokens (`None` when the server sent no usage chunk).

        Args:
            messages: the prompt in OpenAI's chat format, oldest first.
            max_tokens: the most tokens to generate (sent as `max_tokens`).
            temperature: sampling temperature, 0 to 2.
            tools: OpenAI function tools the model may call; omitted from the request when empty.
            tool_choice: OpenAI's `tool_choice`, sent only when given (otherwise the server's default applies:
                `"auto"` when tools are sent).

        Raises:
            GenerationError: when opening the stream or reading it fails (codes in the module docstring).
        """
        request: dict[str, Any] = {
            "model": self.config.provider_model,
            "messages": list(messages),
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            request["tools"] = tools
        if tool_choice is not None:
            request["tool_choice"] = tool_choice
        client = self._get_client()
        try:
            # The SDK builds and sends the request, retries what failed before the stream started, and raises its
            # errors; the chunks are read here (`_chunks`): the SDK's per-chunk pydantic objects cost about
            # 100 us of CPU each, most of the worker's time per token.
            opened = client.chat.completions.with_streaming_response.create(**request)
            response = opened.__enter__()
        except openai.OpenAIError as exc:
            raise self._generation_error(exc) from exc
        try:
            yield from self._read(self._chunks(response))
        except openai.OpenAIError as exc:
            raise self._generation_error(exc) from exc
        finally:
            # Also runs when the consumer stops early (generator close): it frees the connection, and the
            # server sees the disconnect and stops generating.
            opened.__exit__(None, None, None)

    @staticmethod
    def _chunks(response: Any) -> Iterator[dict]:
        """The `chat.completion.chunk` objects of an SSE response, as dicts, until `data: [DONE]`.

        Protocol: server-sent events (WHATWG HTML, "Server-sent events"), as OpenAI streams them: each event one
        `data:` line of JSON. An event carrying `error` (OpenAI's mid-stream error) raises `openai.APIError`;
        a read that times out or a connection that breaks raises the SDK's `APITimeoutError` /
        `APIConnectionError`, as the SDK would.
        """
        request = response.http_request
        try:
            lines = response.iter_lines()
            for line in lines:
                if not line.startswith("data:"):
                    continue  # comments, `event:` and `id:` lines, blank separators
                data = line[5:].strip()
                if data == "[DONE]":
                    # Read the body to its end, so that its connection goes back to the pool for the next reply
                    # (a response closed unread closes its connection).
                    for _ in lines:
                        pass
                    return
                chunk = json.loads(data)
                if isinstance(chunk, dict) and chunk.get("error"):
                    error = chunk["error"]
                    message = error.get("message") if isinstance(error, dict) else str(error)
                    raise openai.APIError(message or "An error occurred during streaming", request, body=error)
                yield chunk
        except httpx2.TimeoutException as exc:
            raise openai.APITimeoutError(request=request) from exc
        except httpx2.TransportError as exc:
            raise openai.APIConnectionError(request=request) from exc
        except json.JSONDecodeError as exc:
            raise openai.APIResponseValidationError(response.http_response, None, message=str(exc)) from exc

    def _read(self, chunks: Iterator[dict]) -> Iterator[ChatDelta]:
        """Turn the chunks of one stream (`chat.completion.chunk` dicts) into deltas, assembling tool calls by
        their `index`."""
        pending: dict[int, _PartialToolCall] = {}
        emitted_calls = False
        finish_reason: str | None = None
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        for chunk in chunks:
            usage = chunk.get("usage")
            if usage:
                prompt_tokens = usage.get("prompt_tokens")
                completion_tokens = usage.get("completion_tokens")
            for choice in chunk.get("choices") or ():
                if choice.get("index", 0) != 0:  # we never ask for n > 1
                    continue
                delta = choice.get("delta") or {}
                if content := delta.get("content"):
                    yield ChatDelta(text=content)
                for fragment in delta.get("tool_calls") or ():
                    index = fragment.get("index")
                    if index is None:
                        index = self._index_without_one(pending, fragment)
                    call = pending.setdefault(index, _PartialToolCall())
                    # OpenAI sends id and name once, in the first fragment; some servers (llama-cpp-python)
                    # repeat them in every fragment, so only the first one counts.
                    if fragment.get("id") and not call.id:
                        call.id = fragment["id"]
                    function = fragment.get("function") or {}
                    if function.get("name") and not call.name:
                        call.name = function["name"]
                    if function.get("arguments"):
                        call.arguments += function["arguments"]
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
                    if pending:
                        yield ChatDelta(tool_calls=tuple(call.complete() for _, call in sorted(pending.items())))
                        pending.clear()
                        emitted_calls = True
        if finish_reason is None:
            # Every chunk stream the protocol allows ends its choice with a finish_reason. Without one the server
            # broke off (llama-cpp-python, for one, just closes the stream when generation raises), and what
            # arrived may be a fragment: a failure, not a short answer.
            logger.warning(
                "model %s at %s: stream ended without a finish_reason", self.config.provider_model, self._label()
            )
            raise GenerationError(
                "provider_error", "The model server stopped before finishing the reply.", retryable=True
            )
        if emitted_calls and finish_reason in ("stop", "function_call"):
            # Some servers (Ollama, older vLLM) end tool calls with `stop`; callers look for `tool_calls`.
            finish_reason = "tool_calls"
        yield ChatDelta(finish_reason=finish_reason, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    @staticmethod
    def _index_without_one(pending: dict[int, _PartialToolCall], fragment: Any) -> int:
        """Where a fragment without `index` belongs (some servers omit it): a new id starts a new call, anything
        else continues the last one."""
        if not pending:
            return 0
        last = max(pending)
        if fragment.get("id") and pending[last].id and fragment["id"] != pending[last].id:
            return last + 1
        return last

    def _generation_error(self, exc: openai.OpenAIError) -> GenerationError:
        """Map an SDK error to a `GenerationError` (code, a message for people, retryable) and log it.

        The subclass checks run from the most to the least specific (`APITimeoutError` is an
        `APIConnectionError`; every HTTP error is an `APIStatusError`).
        """
        model = self.config.provider_model
        if isinstance(exc, openai.APITimeoutError):
            error = GenerationError("timeout", "The model server took too long to answer.", retryable=True)
        elif isinstance(exc, openai.APIConnectionError):
            error = GenerationError("provider_unavailable", "The model server could not be reached.", retryable=True)
        elif isinstance(exc, openai.RateLimitError):
            error = GenerationError(
                "rate_limited", "The model server is receiving too many requests; try again shortly.", retryable=True
            )
        elif isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            # Deliberately without the server's text: an administrator must fix the key, and a server might
            # echo what it received.
            error = GenerationError(
                "auth_failed", "The model server refused this site's credentials; an administrator must check them."
            )
        elif isinstance(exc, openai.NotFoundError):
            error = GenerationError(
                "model_unavailable", f"The model server does not offer the model '{model}' (or its address is wrong)."
            )
        elif isinstance(exc, openai.APIStatusError) and exc.status_code >= 500:
            error = GenerationError(
                "provider_error", f"The model server failed (HTTP {exc.status_code}).", retryable=True
            )
        elif isinstance(exc, openai.APIStatusError) and exc.code == "context_length_exceeded":
            error = GenerationError(
                "prompt_too_long", _with_detail("The conversation is too long for this model.", self._detail(exc))
            )
        elif isinstance(exc, openai.APIStatusError) and exc.status_code == 408:
            error = GenerationError("timeout", "The model server took too long to answer.", retryable=True)
        elif isinstance(exc, openai.APIStatusError):  # 400 (BadRequestError), 422 and other 4xx
            error = GenerationError(
                "provider_rejected", _with_detail("The model server rejected the request.", self._detail(exc))
            )
        elif isinstance(exc, openai.APIError):
            # An error event inside a stream that had started: the server broke down while generating.
            error = GenerationError(
                "provider_error",
                _with_detail("The model server failed while answering.", self._detail(exc)),
                retryable=True,
            )
        else:
            # APIResponseValidationError and the like: the server answered something that is not the protocol.
            error = GenerationError("provider_error", "The model server sent an answer this site cannot read.")
        status = getattr(exc, "status_code", None)
        logger.warning(
            "model %s at %s: %s (%s, HTTP %s)", model, self._label(), error.code, type(exc).__name__, status or "-"
        )
        return error

    def _detail(self, exc: openai.APIError) -> str:
        """The server's own explanation of an error, short and with the API key blanked out ('' if none)."""
        body = exc.body
        text: Any = None
        if isinstance(body, dict):
            # OpenAI puts {"error": {"message"}}, of which the SDK passes on the inner object; FastAPI-based
            # servers send {"detail"}.
            inner = body.get("error")
            text = (inner.get("message") if isinstance(inner, dict) else inner) or body.get("message")
            text = text or body.get("detail")
        elif isinstance(body, str):
            text = body
        if not text or not isinstance(text, str):
            return ""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        text = " ".join(text.split())
        if len(text) > MAX_DETAIL_CHARS:
            text = text[: MAX_DETAIL_CHARS - 1] + "…"
        return text

    def _label(self) -> str:
        """The server's address for log lines: scheme, host and port only (a URL may hold user:password@)."""
        parts = urlsplit(self.config.base_url or "https://api.openai.com/v1")
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}"

    def count_tokens(self, text: str) -> int:
        """An estimate of the tokens `text` takes: one per 4 characters, rounded up (OpenAI-compatible servers
        share no tokenize endpoint). Never raises."""
        return math.ceil(len(text) / CHARS_PER_TOKEN)


def create(config: ModelConfig) -> OpenAIProvider:
    """Provider factory (see `pipelines.providers.base.get_provider`)."""
    return OpenAIProvider(config)
