"""Embedding providers behind one interface (`base.Embedder`), one module each, loaded lazily by kind."""

from __future__ import annotations

from knowledge.embeddings.base import Embedder, EmbeddingError
from knowledge.models import EmbeddingModel

__all__ = ["Embedder", "EmbeddingError", "get_embedder"]


def get_embedder(config: EmbeddingModel) -> Embedder:
    """The embedder for an `EmbeddingModel` row (a local model is loaded once per process).

    Raises:
        EmbeddingError: unknown provider kind, or the model cannot be loaded.
    """
    if config.provider == EmbeddingModel.Provider.LOCAL:
        from knowledge.embeddings.local import LocalEmbedder

        return LocalEmbedder(config.provider_model, config.dimensions)
    if config.provider == EmbeddingModel.Provider.OPENAI:
        from knowledge.embeddings.openai import OpenAIEmbedder

        return OpenAIEmbedder(config.provider_model, config.base_url, config.api_key_env, config.dimensions)
    raise EmbeddingError("embedding_model_unavailable", f"Unknown embedding provider '{config.provider}'.")
