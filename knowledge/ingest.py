"""Ingest one document: extract its text, split it into chunks, embed them, save them (issue 8).

`run_ingestion(document_id)` is what a Celery worker (or an embedded thread) does for a queued document.
Any failure ends the document `failed` with a reason; nothing else is touched.
"""

from __future__ import annotations

import logging
import time

from celery.exceptions import SoftTimeLimitExceeded

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
    except SoftTimeLimitExceeded:
        actions.do_fail_ingestion(
            document_id, "The document took too long to process (CHATSITE_INGEST_TIME_LIMIT); split it and try again."
        )
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


def requeue_stale_documents() -> int:
    """The watchdog's part for documents: send again those still `queued` after CHATSITE_REQUEUE_SECONDS (their
    task was lost, say with a Redis restart); at most once per that interval each. Returns how many."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from chats import events
    from knowledge.models import Document

    seconds = settings.CHATSITE_REQUEUE_SECONDS
    stale = Document.objects.filter(
        status=Document.Status.QUEUED, created_at__lt=timezone.now() - timedelta(seconds=seconds)
    ).values_list("id", flat=True)
    sent = 0
    for document_id in stale:
        if events.mark_requeued(f"document:{document_id}", seconds):
            logger.warning("watchdog: document %s is still queued; sending it to the queue again", document_id)
            actions.enqueue_ingestion(str(document_id))
            sent += 1
    return sent
