"""The `openai` embedding provider: any OpenAI-compatible `POST /v1/embeddings` endpoint, through the
official `openai` SDK (OpenAI, vLLM, Ollama, llama.cpp's server, LM Studio...)."""

from __future__ import annotations

import os

import numpy as np
import openai

from knowledge.embeddings.base import EmbeddingError, normalise

BATCH_SIZE = 64
TIMEOUT_SECONDS = 60.0


class OpenAIEmbedder:
    """Embeddings from `base_url` (empty: api.openai.com) with model `provider_model`.

    The key is read from the environment variable named `api_key_env` (never stored).
    """

    def __init__(self, provider_model: str, base_url: str = "", api_key_env: str = "", dimensions: int = 0) -> None:
        key = os.environ.get(api_key_env, "") if api_key_env else ""
        self.client = openai.OpenAI(
            base_url=base_url or None, api_key=key or "unused", timeout=TIMEOUT_SECONDS, max_retries=2
        )
        self.model = provider_model
        self.dimensions = dimensions

    def embed(self, texts: list[str]) -> np.ndarray:
        rows: list[np.ndarray] = []
        for start in range(0, len(texts), BATCH_SIZE):
            batch = texts[start : start + BATCH_SIZE]
            try:
                answer = self.client.embeddings.create(model=self.model, input=batch)
            except openai.APIStatusError as exc:
                raise EmbeddingError(
                    "embedding_failed",
                    f"The embedding server refused the request ({exc.status_code}).",
                    retryable=exc.status_code >= 500 or exc.status_code == 429,
                ) from exc
            except openai.APIError as exc:
                raise EmbeddingError(
                    "embedding_unavailable", "The embedding server could not be reached.", retryable=True
                ) from exc
            for item in sorted(answer.data, key=lambda item: item.index):
                vector = np.asarray(item.embedding, dtype=np.float32)
                if vector.ndim == 2:
                    # One vector per token (llama.cpp's server for a model without pooling): mean pooling, as
                    # sentence-transformers does.
                    vector = vector.mean(axis=0)
                rows.append(vector)
        if not rows:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        vectors = normalise(np.stack(rows))
        if self.dimensions and vectors.shape[1] != self.dimensions:
            raise EmbeddingError(
                "embedding_dimensions",
                f"The embedding model returned {vectors.shape[1]} dimensions; {self.dimensions} were expected.",
            )
        return vectors
