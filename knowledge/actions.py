"""Every write to collections, documents and chunks. Views, tasks and ingestion call these; nothing else
saves rows."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chats.models import User
from chatsite import jobs
from knowledge.chunking import Piece
from knowledge.models import Chunk, Collection, Document, EmbeddingModel

logger = logging.getLogger(__name__)


def default_embedding_model() -> EmbeddingModel | None:
    """The embedding model new collections get: CHATSITE_EMBEDDING_MODEL if active, else the first active
    one, else None (an operator has turned them all off)."""
    models = EmbeddingModel.objects.filter(is_active=True)
    return models.filter(name=settings.CHATSITE_EMBEDDING_MODEL).first() or models.order_by("id").first()


def do_create_collection(
    owner: User | None,
    *,
    name: str,
    description: str = "",
    embedding_model: EmbeddingModel,
    chunk_tokens: int | None = None,
    chunk_overlap_tokens: int | None = None,
) -> Collection:
    """Create a collection (`owner` None: shared with everyone) whose chunks `embedding_model` embeds."""
    return Collection.objects.create(
        owner=owner,
        name=name,
        description=description,
        embedding_model=embedding_model,
        chunk_tokens=chunk_tokens or settings.CHATSITE_CHUNK_TOKENS,
        chunk_overlap_tokens=settings.CHATSITE_CHUNK_OVERLAP_TOKENS
        if chunk_overlap_tokens is None
        else chunk_overlap_tokens,
    )


def do_update_collection(collection: Collection, **changes: Any) -> Collection:
    """Change a collection's `name` or `description` (only the keys given)."""
    for field, value in changes.items():
        setattr(collection, field, value)
    collection.save(update_fields=[*changes.keys(), "updated_at"])
    return collection


def do_delete_collection(collection: Collection) -> None:
    """Delete a collection with its documents and chunks."""
    collection.delete()


def enqueue_ingestion(document_id: str) -> None:
    """Hand a document to the ingest lane (chatsite.jobs: Celery's ingest queue, or embedded mode's job thread);
    if the job queue is unreachable the document is marked failed (`fail_unqueued_ingestion`), not left queued."""
    jobs.submit("ingest", document_id, lane=jobs.INGEST)


def fail_unqueued_ingestion(document_id: str) -> None:
    """Mark a document that could not be queued as failed, so that it is not left queued for ever."""
    do_fail_ingestion(document_id, "The document could not be queued: the job queue is unreachable. Upload it again.")


def do_upload_document(
    collection: Collection,
    uploader: User,
    *,
    filename: str,
    kind: str,
    data: bytes,
    title: str = "",
    metadata: dict[str, Any] | None = None,
) -> tuple[Document, bool]:
    """Store an uploaded file and queue its ingestion (sent once the transaction commits).

    The same bytes already in the collection are not stored twice: that document is returned instead
    (and queued again if its ingestion had failed).

    Returns:
        `(document, created)`.
    """
    digest = hashlib.sha256(data).hexdigest()
    with transaction.atomic():
        existing = Document.objects.select_for_update().filter(collection=collection, sha256=digest).first()
        if existing is not None:
            if existing.status == Document.Status.FAILED:
                do_requeue_ingestion(existing)
                existing.refresh_from_db()
            return existing, False
        document = Document.objects.create(
            collection=collection,
            uploaded_by=uploader,
            title=(title or filename)[:300],
            filename=filename[:300],
            kind=kind,
            size_bytes=len(data),
            sha256=digest,
            data=data,
            metadata={**(metadata or {}), "kind": kind},
        )
        document_id = str(document.id)
        transaction.on_commit(lambda: enqueue_ingestion(document_id))
    return document, True


def do_delete_document(document: Document) -> None:
    """Delete a document and its chunks."""
    document.delete()


def do_claim_ingestion(document_id: str) -> Document | None:
    """Move a document to `processing` (from `queued`, or from `processing` when a task is delivered again
    after its worker died). Returns it, or None if it is gone, ready or failed."""
    claimed = Document.objects.filter(
        id=document_id, status__in=(Document.Status.QUEUED, Document.Status.PROCESSING)
    ).update(status=Document.Status.PROCESSING, error="")
    if not claimed:
        return None
    return Document.objects.select_related("collection", "collection__embedding_model").get(id=document_id)


def do_finish_ingestion(document: Document, *, text: str, page_count: int | None, pieces: list[Piece], vectors) -> bool:
    """Save a document's text and chunks and mark it `ready`, in one transaction (chunks of an earlier,
    interrupted attempt are replaced). Returns False if the document was deleted meanwhile."""
    dims = int(vectors.shape[1]) if len(pieces) else document.collection.embedding_model.dimensions
    with transaction.atomic():
        if not Document.objects.select_for_update().filter(id=document.id).exists():
            return False
        Chunk.objects.filter(document_id=document.id).delete()
        Chunk.objects.bulk_create(
            [
                Chunk(
                    document_id=document.id,
                    collection_id=document.collection_id,
                    index=i,
                    text=piece.text,
                    page=piece.page,
                    start=piece.start,
                    end=piece.end,
                    token_count=piece.token_count,
                    dimensions=dims,
                    embedding=vectors[i],
                )
                for i, piece in enumerate(pieces)
            ],
            batch_size=500,
        )
        Document.objects.filter(id=document.id).update(
            status=Document.Status.READY,
            error="",
            text=text,
            page_count=page_count,
            chunk_count=len(pieces),
            ingested_at=timezone.now(),
        )
    return True


def do_fail_ingestion(document_id: str, reason: str) -> None:
    """Mark a document `failed` with `reason` (a sentence for the uploader); its chunks are removed."""
    with transaction.atomic():
        Chunk.objects.filter(document_id=document_id).delete()
        Document.objects.filter(id=document_id).update(
            status=Document.Status.FAILED, error=reason[:2000], chunk_count=0, ingested_at=timezone.now()
        )


def do_requeue_ingestion(document: Document) -> None:
    """Queue a document's ingestion again (after a failure, or to re-embed it)."""
    Document.objects.filter(pk=document.pk).update(status=Document.Status.QUEUED, error="")
    document_id = str(document.id)
    transaction.on_commit(lambda: enqueue_ingestion(document_id))
