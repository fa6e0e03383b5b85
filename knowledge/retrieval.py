"""Retrieval: find the passages of a user's collections that answer a question (seed 002's RAG options).

A retrieval names its sources (a collection each, or every collection the user may search), each with
`limit`, `similarity_threshold`, `weight` and `metadata_filters`, and combines their results by a strategy:
- `merge`: all sources' passages ranked together by similarity x weight;
- `sequential`: the sources in the order given, each one's passages (best first) before the next one's;
- `ensemble`: weighted reciprocal rank fusion of the sources' ranked lists, score = sum of weight / (60 + rank)
  (Cormack, Clarke and Buettcher, "Reciprocal Rank Fusion outperforms Condorcet and individual rank learning
  methods", SIGIR 2009; k = 60 as there),
and keeps `max_total_results`. The query is embedded with each collection's own embedding model. Only
collections the user may read are ever searched (`knowledge.access.visible_collections`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chats.models import User
from knowledge.access import visible_collections
from knowledge.embeddings import get_embedder
from knowledge.models import Collection, EmbeddingModel
from knowledge.vectors import ChunkHit, nearest_chunks

STRATEGIES = ("merge", "sequential", "ensemble")
RRF_K = 60
SNIPPET_CHARS = 300


@dataclass(frozen=True)
class SourceConfig:
    """One source of a retrieval (seed 002's DataSourceConfigModel); `collection_id` None = every collection
    the user may search."""

    collection_id: str | None = None
    limit: int = 5
    similarity_threshold: float = 0.25
    weight: float = 1.0
    metadata_filters: dict[str, Any] = field(default_factory=dict)


@dataclass
class Retrieved:
    """A passage chosen for the answer, with what the `sources` event and the saved message show."""

    hit: ChunkHit
    rank_score: float

    def as_source(self, number: int) -> dict[str, Any]:
        """The passage as an item of the `sources` event: `{id, title, snippet, score, documentId, page,
        collectionId, start, end, number}` (`number` is what the answer cites: [1], [2]...)."""
        hit = self.hit
        snippet = " ".join(hit.text.split())
        if len(snippet) > SNIPPET_CHARS:
            snippet = snippet[: SNIPPET_CHARS - 1].rstrip() + "…"
        return {
            "id": str(hit.chunk_id),
            "number": number,
            "title": hit.document_title,
            "snippet": snippet,
            "score": hit.score,
            "documentId": hit.document_id,
            "collectionId": hit.collection_id,
            "page": hit.page,
            "start": hit.start,
            "end": hit.end,
        }


class _QueryVectors:
    """The query embedded once per embedding model."""

    def __init__(self, query: str) -> None:
        self.query = query
        self.vectors: dict[int, np.ndarray] = {}

    def for_model(self, model: EmbeddingModel) -> np.ndarray:
        if model.id not in self.vectors:
            self.vectors[model.id] = get_embedder(model).embed([self.query])[0]
        return self.vectors[model.id]


def _search_source(
    user: User, source: SourceConfig, vectors: _QueryVectors, document_ids: list[str] | None
) -> list[ChunkHit]:
    collections = visible_collections(user).select_related("embedding_model")
    if source.collection_id is not None:
        collections = collections.filter(id=source.collection_id)
    by_model: dict[int, list[Collection]] = defaultdict(list)
    models: dict[int, EmbeddingModel] = {}
    for collection in collections:
        by_model[collection.embedding_model_id].append(collection)
        models[collection.embedding_model_id] = collection.embedding_model
    hits: list[ChunkHit] = []
    for model_id, group in by_model.items():
        hits += nearest_chunks(
            vectors.for_model(models[model_id]),
            collection_ids=[str(c.id) for c in group],
            limit=source.limit,
            min_score=source.similarity_threshold,
            metadata_filters=source.metadata_filters or None,
            document_ids=document_ids,
        )
    hits.sort(key=lambda hit: -hit.score)
    return hits[: source.limit]


def combine(results: list[list[ChunkHit]], weights: list[float], strategy: str, max_total: int) -> list[Retrieved]:
    """Combine per-source ranked hit lists by `strategy` (see the module) into at most `max_total` passages,
    each chunk (and each passage text) once, best first.

    Raises:
        ValueError: an unknown strategy.
    """
    chosen: dict[int, Retrieved] = {}
    if strategy == "merge":
        for hits, weight in zip(results, weights, strict=True):
            for hit in hits:
                score = hit.score * weight
                if hit.chunk_id not in chosen or chosen[hit.chunk_id].rank_score < score:
                    chosen[hit.chunk_id] = Retrieved(hit, score)
        ranked = sorted(chosen.values(), key=lambda r: (-r.rank_score, r.hit.chunk_id))
    elif strategy == "sequential":
        ranked = []
        for hits in results:
            for hit in hits:
                if hit.chunk_id not in chosen:
                    chosen[hit.chunk_id] = Retrieved(hit, hit.score)
                    ranked.append(chosen[hit.chunk_id])
    elif strategy == "ensemble":
        for hits, weight in zip(results, weights, strict=True):
            for rank, hit in enumerate(hits, start=1):
                entry = chosen.setdefault(hit.chunk_id, Retrieved(hit, 0.0))
                entry.rank_score += weight / (RRF_K + rank)
        ranked = sorted(chosen.values(), key=lambda r: (-r.rank_score, -r.hit.score, r.hit.chunk_id))
    else:
        raise ValueError(f"Unknown retrieval strategy '{strategy}'; use one of {', '.join(STRATEGIES)}.")
    # The same passage twice (one file in two collections) tells the model nothing more: keep the first.
    seen: set[str] = set()
    unique: list[Retrieved] = []
    for entry in ranked:
        text = " ".join(entry.hit.text.split())
        if text not in seen:
            seen.add(text)
            unique.append(entry)
    return unique[:max_total]


def retrieve(
    user: User,
    query: str,
    sources: list[SourceConfig],
    *,
    strategy: str = "merge",
    max_total: int = 10,
    document_ids: list[str] | None = None,
) -> list[Retrieved]:
    """The passages of `user`'s readable collections that best answer `query`, combined by `strategy`.

    Args:
        sources: where to search; a source naming a collection the user may not read finds nothing.
        max_total: most passages returned (seed 002's `max_total_results`).
        document_ids: search only these documents (attachments too large to use whole).

    Raises:
        EmbeddingError: the query could not be embedded.
        ValueError: an unknown strategy or a bad metadata filter key.
    """
    if not query.strip() or not sources:
        return []
    vectors = _QueryVectors(query)
    results = [_search_source(user, source, vectors, document_ids) for source in sources]
    return combine(results, [source.weight for source in sources], strategy, max_total)
