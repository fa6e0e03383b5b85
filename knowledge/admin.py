"""The operators' console for embedding models, collections and documents (bytes and vectors never shown)."""

from django.contrib import admin

from knowledge import actions
from knowledge.models import Collection, Document, EmbeddingModel


@admin.register(EmbeddingModel)
class EmbeddingModelAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "provider", "dimensions", "is_active"]
    list_filter = ["provider", "is_active"]


class DocumentInline(admin.TabularInline):
    model = Document
    fields = ["title", "kind", "status", "error", "chunk_count", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = True
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # uploads go through the API or the documents page, which queue ingestion


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    """Staff make shared collections here (leave the owner empty)."""

    list_display = ["name", "owner", "embedding_model", "created_at"]
    search_fields = ["name", "owner__username"]
    inlines = [DocumentInline]

    def get_readonly_fields(self, request, obj=None):
        # The chunks were made with these: fixed once documents exist.
        if obj is not None and obj.documents.exists():
            return ["embedding_model", "chunk_tokens", "chunk_overlap_tokens"]
        return []


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["title", "collection", "kind", "status", "chunk_count", "size_bytes", "created_at"]
    list_filter = ["status", "kind"]
    search_fields = ["title", "filename", "sha256"]
    exclude = ["data", "text"]
    readonly_fields = [
        "collection", "uploaded_by", "filename", "kind", "size_bytes", "sha256", "status", "error", "page_count",
        "chunk_count", "created_at", "ingested_at",
    ]  # fmt: skip
    actions = ["ingest_again"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Ingest again")
    def ingest_again(self, request, queryset) -> None:
        for document in queryset:
            actions.do_requeue_ingestion(document)
