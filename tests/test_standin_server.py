"""The `openai` provider against the benchmark's stand-in model server (bench/standin.py), a real HTTP server run
as its own process: a paced reply streams in full, with its text, finish reason and usage, and `max_tokens` cuts
it short. The same server stands behind chatsite in `make bench`, so these also hold the bench to its word: what
it measures is a reply that really arrives.

The configs are unsaved `ModelConfig`s, so no database is needed.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from bench.standin import reply_text, running_standin
from pipelines.models import ModelConfig
from pipelines.providers.base import ChatDelta
from pipelines.providers.openai import OpenAIProvider
from tests.live import free_port

pytestmark = pytest.mark.e2e

# 40 tokens at 400 tokens/s: paced (a timer between tokens), and over in about a tenth of a second.
TOKENS, PACE = 40, 400


@pytest.fixture(scope="module")
def standin_url() -> Iterator[str]:
    """The stand-in's API root, serving paced replies of TOKENS tokens by default."""
    with running_standin(free_port(), tokens=TOKENS, pace=PACE) as standin:
        yield standin.url


def provider(base_url: str) -> OpenAIProvider:
    config = ModelConfig(
        model_id="standin", display_name="Stand-in", provider="openai", provider_model="standin", base_url=base_url
    )
    return OpenAIProvider(config)


def ask(base_url: str, max_tokens: int = 512) -> list[ChatDelta]:
    messages = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "Tell me a story."}]
    return list(provider(base_url).stream_chat(messages, max_tokens=max_tokens, temperature=0.0))


def test_a_paced_reply_streams_token_by_token_in_full_with_its_usage(standin_url):
    deltas = ask(standin_url)

    texts = [d.text for d in deltas if d.text]
    # One delta per token, in order: streamed, not one block.
    assert texts == [f" w{i}" for i in range(TOKENS)]
    assert "".join(texts) == reply_text(TOKENS)
    last = deltas[-1]
    assert last.finish_reason == "stop"
    assert last.completion_tokens == TOKENS
    # "Answer." and "Tell me a story." are 23 characters: the stand-in counts 4 to a token, rounding up.
    assert last.prompt_tokens == 6


def test_max_tokens_cuts_the_reply_short_with_finish_reason_length(standin_url):
    deltas = ask(standin_url, max_tokens=7)

    assert "".join(d.text for d in deltas if d.text) == reply_text(7)
    assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == ("length", 7)


def test_a_base_url_chooses_the_pace_and_length_of_its_replies(standin_url):
    root = standin_url.removesuffix("/v1")

    deltas = ask(f"{root}/pace/0/tokens/300/v1")

    assert "".join(d.text for d in deltas if d.text) == reply_text(300)
    assert deltas[-1].completion_tokens == 300


def test_the_sdk_lists_the_model_and_reads_a_reply_without_streaming(standin_url):
    client = openai.OpenAI(base_url=standin_url, api_key="not-needed")

    assert [m.id for m in client.models.list()] == ["standin"]
    completion = client.chat.completions.create(
        model="standin", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
    )
    assert completion.choices[0].message.content == reply_text(5)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5
