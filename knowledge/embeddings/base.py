"""The interface every embedding provider implements (one module per provider kind, loaded by name)."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class EmbeddingError(Exception):
    """An embedding provider failed. `code` is a machine code; `message` a sentence for a person."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class Embedder(Protocol):
    """Turns texts into unit-length vectors.

    `embed(texts)` returns a float32 array of shape `(len(texts), dimensions)` whose rows have L2 norm 1, so
    that cosine similarity is their dot product. Texts longer than the model reads are cut by the model.

    Raises:
        EmbeddingError: the model could not be loaded or the server refused or failed.
    """

    dimensions: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to L2 norm 1 (zero rows stay zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms
