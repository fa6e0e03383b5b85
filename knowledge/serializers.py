"""Request parsing and response shapes of the collections and documents API (camelCase fields)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from chats.fields import StrictCharField, StrictModelSerializer, StrictSlugRelatedField, StrictUUIDField
from chats.parsers import JSONTooDeep, loads_json
from knowledge.extract import kind_of
from knowledge.models import Collection, Document, EmbeddingModel
from pipelines.steps import MetadataFiltersField


class EmbeddingModelSerializer(StrictModelSerializer):
    """An embedding model collections may use."""

    displayName = StrictCharField(source="display_name", read_only=True)

    class Meta:
        model = EmbeddingModel
        fields = ["name", "displayName", "provider", "dimensions"]
        read_only_fields = fields


class CollectionSerializer(StrictModelSerializer):
    """A collection: `shared` ones (no owner) are searchable by everyone and managed by staff."""

    embeddingModel = StrictSlugRelatedField(
        source="embedding_model",
        slug_field="name",
        queryset=EmbeddingModel.objects.filter(is_active=True),
        required=False,
    )
    chunkTokens = serializers.IntegerField(source="chunk_tokens", required=False, min_value=16, max_value=2048)
    chunkOverlapTokens = serializers.IntegerField(
        source="chunk_overlap_tokens", required=False, min_value=0, max_value=1024
    )
    shared = serializers.BooleanField(source="is_shared", read_only=True)
    documentCount = serializers.SerializerMethodField()
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)

    class Meta:
        model = Collection
        fields = [
            "id", "name", "description", "embeddingModel", "chunkTokens", "chunkOverlapTokens", "shared",
            "documentCount", "createdAt", "updatedAt",
        ]  # fmt: skip
        read_only_fields = ["id"]
        extra_kwargs = {"description": {"required": False, "max_length": 2000}}

    def get_documentCount(self, collection: Collection) -> int:
        count = getattr(collection, "document_count", None)
        return collection.documents.count() if count is None else count

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.instance is not None and self.instance.documents.exists():
            fixed = {"embedding_model", "chunk_tokens", "chunk_overlap_tokens"} & set(data)
            changed = [f for f in fixed if getattr(self.instance, f) != data[f]]
            if changed:
                raise serializers.ValidationError(
                    "The embedding model and chunk sizes are fixed once a collection has documents "
                    "(its chunks were made with them). Make a new collection instead."
                )
        if self.instance is None and data.get("embedding_model") is None:
            from knowledge.actions import default_embedding_model

            data["embedding_model"] = default_embedding_model()
            if data["embedding_model"] is None:
                raise serializers.ValidationError(
                    {"embeddingModel": ["No embedding model is available; an operator turns one on in the admin."]}
                )
        size = data.get("chunk_tokens", getattr(self.instance, "chunk_tokens", settings.CHATSITE_CHUNK_TOKENS))
        overlap = data.get("chunk_overlap_tokens", 0)
        if overlap >= size:
            raise serializers.ValidationError({"chunkOverlapTokens": ["Must be smaller than chunkTokens."]})
        return data


class DocumentSerializer(StrictModelSerializer):
    """A document as listed: never its bytes or text (GET .../file and .../chunks give those)."""

    collectionId = StrictUUIDField(source="collection_id", read_only=True)
    collectionName = StrictCharField(source="collection.name", read_only=True)
    collectionShared = serializers.BooleanField(source="collection.is_shared", read_only=True)
    sizeBytes = serializers.IntegerField(source="size_bytes", read_only=True)
    pageCount = serializers.IntegerField(source="page_count", read_only=True)
    chunkCount = serializers.IntegerField(source="chunk_count", read_only=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    ingestedAt = serializers.DateTimeField(source="ingested_at", read_only=True)

    class Meta:
        model = Document
        fields = [
            "id", "collectionId", "collectionName", "collectionShared", "title", "filename", "kind", "sizeBytes",
            "sha256", "metadata", "status", "error", "pageCount", "chunkCount", "createdAt", "ingestedAt",
        ]  # fmt: skip
        read_only_fields = fields


class MetadataJSONField(MetadataFiltersField):
    """A document's metadata: a JSON object, given as a form field's text in a multipart upload."""

    def get_value(self, dictionary: Any) -> Any:
        # A form field's text, not DictField's `metadata[key]` form fields.
        return dictionary.get(self.field_name, serializers.empty)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, str):
            try:
                data = loads_json(data) if data.strip() else {}
            except JSONTooDeep as exc:
                raise serializers.ValidationError(str(exc)) from None
            except ValueError:
                raise serializers.ValidationError('Give a JSON object, such as {"team": "sales"}.') from None
        return super().to_internal_value(data)


class UploadSerializer(serializers.Serializer):
    """The multipart body of `POST /api/collections/<id>/documents`: `file`, optional `title` and `metadata`."""

    file = serializers.FileField(allow_empty_file=False)
    title = StrictCharField(max_length=300, required=False, allow_blank=True)
    metadata = MetadataJSONField(required=False, default=dict)

    def validate_file(self, upload: Any) -> Any:
        if kind_of(upload.name, getattr(upload, "content_type", "")) is None:
            raise serializers.ValidationError(
                "chatsite reads PDF, Markdown (.md), plain text (.txt) and HTML (.html) files."
            )
        return upload


class ChunkSerializer(serializers.Serializer):
    """A passage of a document with its place: `start`/`end` are character offsets into the document text."""

    id = serializers.IntegerField()
    index = serializers.IntegerField()
    text = StrictCharField()
    page = serializers.IntegerField(allow_null=True)
    start = serializers.IntegerField()
    end = serializers.IntegerField()
    tokenCount = serializers.IntegerField(source="token_count")
