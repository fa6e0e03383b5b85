"""`EmbeddingField`: a vector column on both databases chatsite runs on.

On PostgreSQL it is pgvector's `vector` type (pgvector.django's `VectorField`); on SQLite (embedded mode) a
BLOB of little-endian float32 values, the format sqlite-vec's functions read
(https://alexgarcia.xyz/sqlite-vec/python.html). The column has no fixed dimension, so one table holds the
vectors of every embedding model; each chunk records its `dimensions`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pgvector.django import VectorField


class EmbeddingField(VectorField):
    """A vector of floats: a numpy float32 array in Python, `vector` on PostgreSQL, a float32 BLOB on SQLite."""

    def db_type(self, connection: Any) -> str:
        if connection.vendor == "sqlite":
            return "blob"
        return super().db_type(connection)

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if connection.vendor == "sqlite":
            if value is None:
                return None
            return np.asarray(value, dtype="<f4").tobytes()
        return super().get_db_prep_value(value, connection, prepared)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return np.frombuffer(bytes(value), dtype="<f4")
        return super().from_db_value(value, expression, connection)
