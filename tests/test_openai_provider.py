"""The `openai` provider against a real OpenAI-compatible server: llama-cpp-python's own server
(`python -m llama_cpp.server`) serving the embedded SmolLM2 model, started once for the module, with an API key.

No fakes: every test talks HTTP to that server (or to a port where nothing listens). The configs are unsaved
`ModelConfig`s, so no database is needed. SmolLM2-135M is tiny, so tests check the shape of what comes back,
not how clever it is.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pipelines.models import ModelConfig
from pipelines.providers.base import ChatDelta, GenerationError, ToolCall
from pipelines.providers.llama_cpp import embedded_model_path
from pipelines.providers.openai import OpenAIProvider
from tests.live import free_port

pytestmark = pytest.mark.e2e

KEY_ENV = "CHATSITE_TEST_OPENAI_KEY"
SERVER_KEY = "sk-test-right-4c0ffee"
WRONG_KEY = "sk-test-wrong-deadbeef"
STARTUP_SECONDS = 60

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Add two integers.",
        # Integers keep the grammar-constrained arguments short enough to finish within max_tokens.
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


def server_command(model: Path, port: int, api_key: str, *extra: str) -> list[str]:
    """llama-cpp-python's OpenAI-compatible server; chatml-function-calling is its format that supports tools."""
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--chat_format",
        "chatml-function-calling",
        "--api_key",
        api_key,
        *extra,
    ]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory) -> Iterator[str]:
    """Start the server, wait until `GET /v1/models` answers, yield its API root, stop it at the end."""
    with serve(tmp_path_factory.mktemp("openai_server")) as url:
        yield url


@contextlib.contextmanager
def serve(log_dir: Path, *extra: str) -> Iterator[str]:
    """Run llama_cpp.server on SmolLM2 (with `extra` arguments) until the block ends; yields its API root."""
    port = free_port()
    log_path = log_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            server_command(embedded_model_path(), port, SERVER_KEY, *extra), stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {SERVER_KEY}"}).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer in {STARTUP_SECONDS} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def make_config(server_url, monkeypatch) -> Callable[..., ModelConfig]:
    """Build an unsaved `ModelConfig` for the server, its key in the environment variable it names."""
    monkeypatch.setenv(KEY_ENV, SERVER_KEY)

    def make(base_url: str = server_url, **options) -> ModelConfig:
        return ModelConfig(
            model_id="x",
            provider="openai",
            provider_model="smollm2",
            base_url=base_url,
            api_key_env=KEY_ENV,
            options=options,
        )

    return make


def ask(config: ModelConfig, prompt: str = "Say hello to me.", **kwargs) -> list[ChatDelta]:
    kwargs.setdefault("max_tokens", 16)
    kwargs.setdefault("temperature", 0)
    return list(OpenAIProvider(config).stream_chat([{"role": "user", "content": prompt}], **kwargs))


def test_reply_streams_in_several_content_deltas_and_ends_with_finish_reason(make_config):
    deltas = ask(make_config())

    texts = [d.text for d in deltas if d.text]
    assert len(texts) >= 2
    assert "".join(texts).strip()
    assert all(d.finish_reason is None for d in deltas[:-1])
    last = deltas[-1]
    assert last.finish_reason in ("stop", "length")
    assert last.text == ""
    assert not any(d.tool_calls for d in deltas)


def test_usage_is_none_when_the_server_sends_no_usage_chunk(make_config):
    # llama-cpp-python's server ignores stream_options.include_usage (0.3.36): the provider must say
    # "unknown" rather than invent numbers. A server that sends the chunk fills these in.
    last = ask(make_config(), max_tokens=4)[-1]

    assert last.finish_reason == "length"
    assert (last.prompt_tokens, last.completion_tokens) == (None, None)


def test_forced_tool_call_yields_one_complete_tool_call_and_finish_reason_tool_calls(make_config):
    deltas = ask(
        make_config(),
        "What is 2 plus 3? Use the calculator.",
        max_tokens=32,
        tools=[CALCULATOR],
        tool_choice={"type": "function", "function": {"name": "calculator"}},
    )

    with_calls = [d for d in deltas if d.tool_calls]
    assert len(with_calls) == 1
    (call,) = with_calls[0].tool_calls
    assert isinstance(call, ToolCall)
    assert call.id
    assert call.name == "calculator"
    arguments = json.loads(call.arguments)
    assert isinstance(arguments, dict)
    assert set(arguments) <= {"a", "b"}
    assert deltas[-1].finish_reason == "tool_calls"


def test_unreachable_server_is_provider_unavailable_and_retryable_quickly(make_config):
    config = make_config(base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0)

    started = time.monotonic()
    with pytest.raises(GenerationError) as caught:
        ask(config)

    assert caught.value.code == "provider_unavailable"
    assert caught.value.retryable is True
    assert time.monotonic() - started < 5


def test_wrong_api_key_is_auth_failed_not_retryable_and_never_shown(make_config, monkeypatch):
    monkeypatch.setenv(KEY_ENV, WRONG_KEY)

    with pytest.raises(GenerationError) as caught:
        ask(make_config())

    assert caught.value.code == "auth_failed"
    assert caught.value.retryable is False
    assert WRONG_KEY not in caught.value.message
    assert WRONG_KEY not in str(caught.value)


def test_right_api_key_from_the_named_environment_variable_is_accepted(make_config, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SERVER_KEY)

    deltas = ask(make_config(), max_tokens=4)

    assert deltas[-1].finish_reason


def test_read_timeout_shorter_than_the_reply_is_timeout_and_retryable(make_config):
    config = make_config(timeout=0.05, max_retries=0)
    # About 150 tokens of prompt: the server reads them before the first token, a gap well over 50 ms (about
    # half a second here), yet short, as the server finishes reading it after we hang up.
    prompt = "Summarise this text. " + "The quick brown fox jumps over the lazy dog. " * 15

    with pytest.raises(GenerationError) as caught:
        ask(config, prompt)

    assert caught.value.code == "timeout"
    assert caught.value.retryable is True


def test_stream_that_breaks_off_without_finish_reason_is_provider_error_not_a_short_reply(make_config):
    # llama-cpp-python's server answers 200, then closes the stream when the prompt overflows its context
    # (2048 tokens by default) instead of returning an error status.
    with pytest.raises(GenerationError) as caught:
        ask(make_config(max_retries=0), "hi " * 2100)

    assert caught.value.code == "provider_error"
    assert caught.value.retryable is True


def test_count_tokens_estimates_four_characters_per_token_rounding_up():
    provider = OpenAIProvider(ModelConfig(model_id="x", provider="openai", provider_model="smollm2"))

    assert [provider.count_tokens(text) for text in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]


@pytest.mark.django_db
def test_a_workflow_reply_through_the_server_streams_matching_tool_call_and_tool_result(make_config, alice_chat):
    """The whole runner, with a tool call forced through the real OpenAI-compatible server."""
    import json

    from chats import actions
    from chats.events import stream_key, sync_redis
    from pipelines.models import Workflow
    from pipelines.runner import run_reply

    config = make_config()
    config.model_id, config.display_name, config.default_max_tokens = "local-openai", "Local server", 48
    config.save()
    workflow = Workflow.objects.create(
        owner=alice_chat.owner,
        name="Forced calculator",
        steps=[{"type": "generate", "tools": ["calculator"], "tool_choice": "calculator", "max_tool_rounds": 1}],
    )
    _, reply, _ = actions.do_send_message(
        alice_chat.owner, alice_chat, content="What is 6 times 7? Use the calculator.", model=config, workflow=workflow
    )
    assert run_reply(str(reply.id)) == "completed"
    events = [json.loads(f["data"]) for _, f in sync_redis().xrange(stream_key(str(reply.id)))]
    calls = [e for e in events if e["type"] == "tool_call"]
    results = [e for e in events if e["type"] == "tool_result"]
    assert len(calls) == len(results) == 1
    assert calls[0]["callId"] and calls[0]["callId"] == results[0]["callId"]
    assert calls[0]["toolName"] == results[0]["toolName"] == "calculator"
    order = [e["type"] for e in events]
    assert order.index("tool_call") < order.index("tool_result") < len(order) - 1 and order[-1] == "end"
    reply.refresh_from_db()
    saved = reply.tool_calls[0]
    assert saved["callId"] == calls[0]["callId"] and saved["toolName"] == "calculator"
    assert ("result" in saved) != ("error" in saved)  # a tiny model may write bad arguments: that is a tool_result too
