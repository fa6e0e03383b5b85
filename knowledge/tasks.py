"""Celery tasks: thin wrappers that take ids and hand the work to plain Python."""

from celery import shared_task
from django.conf import settings

from knowledge.ingest import run_ingestion


@shared_task(
    name="knowledge.ingest_document",
    time_limit=settings.CHATSITE_INGEST_TIME_LIMIT,
    soft_time_limit=settings.CHATSITE_INGEST_TIME_LIMIT - 10,
)
def ingest_document(document_id: str) -> str | None:
    """Extract, split and embed the document `document_id` (a UUID string); returns its final status."""
    return run_ingestion(document_id)
