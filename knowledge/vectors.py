"""Vector search in the database, one interface for PostgreSQL (pgvector) and SQLite (sqlite-vec).

`nearest_chunks()` asks the database for a collection's chunks closest to a query vector by cosine distance,
ordered and cut there, never in a Python loop. On PostgreSQL the distance is pgvector's `<=>` operator, on
the column cast to the query's dimension so that the partial HNSW index of that dimension can serve it
(migration 0002 makes one for 384, the default model's); on SQLite it is sqlite-vec's
`vec_distance_cosine()` (https://alexgarcia.xyz/sqlite-vec/api-reference.html).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.db.models import F, FloatField, Func, Q, QuerySet, Value

from knowledge.fields import EmbeddingField
from knowledge.models import Chunk, Document

# Keys of metadata filters: plain names only (they become JSON key lookups).
# No "__": Django would read it as a lookup (team__contains) or a path into nested JSON, not as a key.
METADATA_KEY = re.compile(r"^(?!.*__)[A-Za-z_][A-Za-z0-9_]{0,63}$")


def load_sqlite_vec(sender: Any, connection: Any, **kwargs: Any) -> None:
    """`connection_created` receiver: load sqlite-vec into each new SQLite connection (no-op elsewhere)."""
    if connection.vendor != "sqlite":
        return
    import sqlite_vec

    raw = connection.connection
    raw.enable_load_extension(True)
    try:
        sqlite_vec.load(raw)
    finally:
        raw.enable_load_extension(False)


class CosineDistance(Func):
    """Cosine distance (1 - cosine similarity, in [0, 2]) between a vector column and a query vector."""

    output_field = FloatField()

    def __init__(self, column: str, vector: np.ndarray, dimensions: int) -> None:
        self.dimensions = int(dimensions)
        super().__init__(F(column), Value(vector, output_field=EmbeddingField()))

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        column, column_params = compiler.compile(self.source_expressions[0])
        query, query_params = compiler.compile(self.source_expressions[1])
        sql = f"(({column})::vector({self.dimensions}) <=> ({query})::vector({self.dimensions}))"
        return sql, [*column_params, *query_params]

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        return self.as_sql(compiler, connection, function="vec_distance_cosine", **extra)


@dataclass(frozen=True)
class ChunkHit:
    """A chunk found by a search: `score` is the cosine similarity clipped to [0, 1] (1 = same direction)."""

    chunk_id: int
    document_id: str
    document_title: str
    collection_id: str
    text: str
    page: int | None
    start: int
    end: int
    score: float


def metadata_q(filters: dict[str, Any]) -> Q:
    """Document-metadata filters as a query: every key must match; a list value means any of its values.

    Raises:
        ValueError: a key that is not a plain name (letters, digits, underscore).
    """
    query = Q()
    for key, wanted in filters.items():
        if not METADATA_KEY.match(key):
            raise ValueError(f"Metadata filter keys are plain names (letters, digits, _), not '{key}'.")
        lookup = f"document__metadata__{key}"
        if isinstance(wanted, list):
            query &= Q(**{f"{lookup}__in": wanted})
        else:
            query &= Q(**{lookup: wanted})
    return query


def nearest_chunks(
    vector: np.ndarray,
    *,
    collection_ids: list[str],
    limit: int,
    min_score: float = 0.0,
    metadata_filters: dict[str, Any] | None = None,
    document_ids: list[str] | None = None,
) -> list[ChunkHit]:
    """The `limit` chunks of ready documents in `collection_ids` most similar to `vector`, best first.

    Args:
        vector: the query's embedding (float32, the collections' model's dimension).
        min_score: the least cosine similarity kept, in [0, 1]; 0 keeps everything (scores below 0 show as 0).
        metadata_filters: see `metadata_q`.
        document_ids: search only these documents.
    """
    dims = int(vector.shape[0])
    chunks: QuerySet[Chunk] = Chunk.objects.filter(
        collection_id__in=collection_ids, dimensions=dims, document__status=Document.Status.READY
    )
    if metadata_filters:
        chunks = chunks.filter(metadata_q(metadata_filters))
    if document_ids is not None:
        chunks = chunks.filter(document_id__in=document_ids)
    distance = CosineDistance("embedding", vector.astype("<f4"), dims)
    chunks = chunks.annotate(distance=distance)
    if min_score > 0:
        chunks = chunks.filter(distance__lte=1.0 - min_score)
    # Ordered by the distance alone, which the HNSW index can serve (a second sort key would make every search
    # an exact scan); ties are broken below.
    query = chunks.order_by("distance").values_list(
        "id", "document_id", "document__title", "collection_id", "text", "page", "start", "end", "distance"
    )[:limit]
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # An HNSW scan filters after it finds neighbours; without this, a filter that removes most of them
            # (another collection's chunks, a metadata filter) leaves fewer than `limit` results. Iterative
            # scans (pgvector 0.8) keep searching, in exact distance order.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        rows = sorted(query, key=lambda row: (row[8], row[0]))
    return [
        ChunkHit(
            chunk_id=row[0],
            document_id=str(row[1]),
            document_title=row[2],
            collection_id=str(row[3]),
            text=row[4],
            page=row[5],
            start=row[6],
            end=row[7],
            score=round(min(1.0, max(0.0, 1.0 - float(row[8]))), 4),
        )
        for row in rows
    ]
