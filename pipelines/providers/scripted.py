"""A scripted provider for deterministic tests of chatsite's own logic (the only fake we allow).

Its behaviour comes from `ModelConfig.options`:
- `script` (list of str): the deltas to emit, in order (default: a short fixed sentence);
- `delay` (seconds, float): pause before each delta (default 0);
- `first_delay` (seconds, float): an extra pause before the first delta, as a model reading a long prompt;
- `fail_after` (int): raise a `GenerationError` after emitting this many deltas;
- `crash_after` (int): raise a plain `RuntimeError` (an unexpected bug) after this many deltas;
- `kill_process_after` (int): SIGKILL the process running it after this many deltas, as a native crash (a
  segfault in a model library) or the OOM killer would: for the tests of dead workers only;
- `finish_reason` (str): reported at the end (default `stop`);
- `echo_prompt` (bool): write the prompt it was given (JSON of the messages) instead of the script, so that
  tests can see what a workflow sent;
- `tool_rounds` (list of lists of `{"name", "arguments"}`): when tools are offered, the first calls ask for
  the first round's tool calls, the next for the second round's, and so on (counted from the tool-calling
  assistant messages after the last user message); then the script is written as usual.
- `rules` (list of `{"when": str, "script": [str]}` or `{"when": str, "echo": true}`): the script of the first
  rule whose `when` text is in the prompt (any message's content) replaces `script` (`echo`: the prompt, as
  `echo_prompt` writes it), so one model can play every part of a workflow that calls
  it several times (text to SQL's classify, generate, repair and summary calls).
Usage counts one token per whitespace-separated word of the prompt, one per delta of the reply.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

from pipelines.providers.base import ChatDelta, ChatMessage, GenerationError, Provider, ToolCall

DEFAULT_SCRIPT = ["Hello", " from", " the", " scripted", " provider", "."]


class ScriptedProvider(Provider):
    """Emits `options["script"]` as deltas, with optional delays, failures and tool calls."""

    supports_tools = True

    def stream_chat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        tools: list[dict] | None = None,
        tool_choice: str | dict | None = None,
    ) -> Iterator[ChatDelta]:
        options = self.config.options or {}
        rounds = options.get("tool_rounds") or []
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
        done = sum(1 for m in messages[last_user + 1 :] if m["role"] == "assistant" and m.get("tool_calls"))
        if tools and done < len(rounds):
            calls = tuple(
                ToolCall(
                    id=f"call_{done}_{i}",
                    name=call["name"],
                    arguments=call["arguments"]
                    if isinstance(call["arguments"], str)
                    else json.dumps(call["arguments"]),
                )
                for i, call in enumerate(rounds[done])
            )
            prompt_tokens = sum(self.count_tokens(m.get("content") or "") for m in messages)
            yield ChatDelta(
                tool_calls=calls, finish_reason="tool_calls", prompt_tokens=prompt_tokens, completion_tokens=1
            )
            return
        script = list(options.get("script", DEFAULT_SCRIPT))
        prompt_text = "\n".join(m.get("content") or "" for m in messages)
        for rule in options.get("rules") or []:
            if rule["when"] in prompt_text:
                script = [json.dumps(messages)] if rule.get("echo") else list(rule["script"])
                break
        if options.get("echo_prompt"):
            script = [json.dumps(messages)]
        delay = float(options.get("delay", 0))
        first_delay = float(options.get("first_delay", 0))
        fail_after = options.get("fail_after")
        crash_after = options.get("crash_after")
        kill_after = options.get("kill_process_after")
        finish_reason = options.get("finish_reason", "stop")
        if len(script) > max_tokens:
            script, finish_reason = script[:max_tokens], "length"
        prompt_tokens = sum(self.count_tokens(m.get("content") or "") for m in messages)
        if first_delay:
            time.sleep(first_delay)
        for index, piece in enumerate(script):
            if fail_after is not None and index == int(fail_after):
                raise GenerationError("provider_error", "The scripted provider failed on purpose.", retryable=True)
            if crash_after is not None and index == int(crash_after):
                raise RuntimeError("scripted crash")
            if kill_after is not None and index == int(kill_after):
                os.kill(os.getpid(), signal.SIGKILL)
            if delay:
                time.sleep(delay)
            yield ChatDelta(text=piece)
        yield ChatDelta(finish_reason=finish_reason, prompt_tokens=prompt_tokens, completion_tokens=len(script))

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def create(config) -> ScriptedProvider:
    """Provider factory (see `pipelines.providers.base.get_provider`)."""
    return ScriptedProvider(config)
