"""Ingest one document: extract its text, split it into chunks, embed them, save them (issue 8).

`run_ingestion(document_id)` is what a Celery worker (or an embedded thread) does for a queued document.
Any failure ends the document `failed` with a reason; nothing else is touched.
"""

from __future__ import annotations

import logging
import time

from knowledge import actions
from knowledge.chunking import split_pages
from knowledge.embeddings import EmbeddingError, get_embedder
from knowledge.extract import ExtractionError, extract

logger = logging.getLogger(__name__)


def run_ingestion(document_id: str) -> str | None:
    """Ingest the document `document_id` (a UUID string); returns its final status, or None if there was
    nothing to do (gone, or already ingested)."""
    document = actions.do_claim_ingestion(document_id)
    if document is None:
        return None
    started = time.monotonic()
    collection = document.collection
    try:
        pages = extract(document.kind, bytes(document.data))
        text, pieces = split_pages(
            pages,
            size=collection.chunk_tokens,
            overlap=collection.chunk_overlap_tokens,
            paged=document.kind == "pdf",
        )
        vectors = get_embedder(collection.embedding_model).embed([piece.text for piece in pieces])
    except ExtractionError as exc:
        actions.do_fail_ingestion(document_id, str(exc))
        return "failed"
    except EmbeddingError as exc:
        actions.do_fail_ingestion(document_id, exc.message)
        return "failed"
    except Exception:
        logger.exception("document %s could not be ingested", document_id)
        actions.do_fail_ingestion(document_id, "The document could not be processed because of an error on our side.")
        return "failed"
    if not actions.do_finish_ingestion(
        document, text=text, page_count=len(pages) if document.kind == "pdf" else None, pieces=pieces, vectors=vectors
    ):
        return None
    logger.info("document %s ready: %d chunks in %.2f s", document_id, len(pieces), time.monotonic() - started)
    return "ready"
