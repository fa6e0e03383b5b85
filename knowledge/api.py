"""The collections and documents API: thin views that parse, check access, call one action, answer."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chats.exceptions import RequestTooLarge
from knowledge import actions
from knowledge.access import access_collection, access_document, visible_collections, visible_documents
from knowledge.extract import kind_of
from knowledge.models import Chunk, Collection, Document, EmbeddingModel
from knowledge.serializers import (
    ChunkSerializer,
    CollectionSerializer,
    DocumentSerializer,
    EmbeddingModelSerializer,
    UploadSerializer,
)

# Room for the multipart framing and the small form fields around the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class EmbeddingModelListView(generics.ListAPIView):
    """`GET /api/embedding-models`: the embedding models a collection may use."""

    serializer_class = EmbeddingModelSerializer
    pagination_class = None

    def get_queryset(self):
        return EmbeddingModel.objects.filter(is_active=True)


class CollectionListView(generics.ListCreateAPIView):
    """`GET /api/collections` (own and shared, by name) and `POST /api/collections` (a private one)."""

    serializer_class = CollectionSerializer

    def get_queryset(self):
        return (
            visible_collections(self.request.user)
            .select_related("embedding_model")
            .annotate(document_count=Count("documents"))
            .order_by("name", "id")
        )

    def perform_create(self, serializer: CollectionSerializer) -> None:
        data = serializer.validated_data
        serializer.instance = actions.do_create_collection(
            self.request.user,
            name=data["name"],
            description=data.get("description", ""),
            embedding_model=data["embedding_model"],
            chunk_tokens=data.get("chunk_tokens"),
            chunk_overlap_tokens=data.get("chunk_overlap_tokens"),
        )


class CollectionDetailView(generics.RetrieveUpdateDestroyAPIView):
    """`GET, PATCH, DELETE /api/collections/<id>`: read own or shared; change own (shared: staff only)."""

    serializer_class = CollectionSerializer
    http_method_names = ["get", "patch", "delete", "options"]

    def get_object(self) -> Collection:
        return access_collection(
            self.request.user, self.kwargs["collection_id"], for_write=self.request.method in ("PATCH", "DELETE")
        )

    def perform_update(self, serializer: CollectionSerializer) -> None:
        actions.do_update_collection(serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance: Collection) -> None:
        actions.do_delete_collection(instance)


class LimitedMultiPartParser(MultiPartParser):
    """Multipart bodies up to CHATSITE_MAX_UPLOAD_BYTES (plus framing), refused before they are read.

    Raises:
        RequestTooLarge: 413 when the declared length is over the limit.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.CHATSITE_MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise RequestTooLarge(
                f"The upload is {declared} bytes; files of up to {settings.CHATSITE_MAX_UPLOAD_BYTES} bytes are taken."
            )
        return super().parse(stream, media_type, parser_context)


class DocumentListView(generics.ListCreateAPIView):
    """`GET /api/collections/<id>/documents` (newest first) and `POST` a file to it (multipart: `file`,
    optional `title` and `metadata` as a JSON object). The same file twice gives the first one back (200)."""

    serializer_class = DocumentSerializer
    parser_classes = [LimitedMultiPartParser]

    def get_queryset(self):
        collection = access_collection(self.request.user, self.kwargs["collection_id"])
        return (
            Document.objects.filter(collection=collection)
            .select_related("collection")
            .defer("data", "text")
            .order_by("-created_at", "id")
        )

    @extend_schema(
        request={"multipart/form-data": UploadSerializer},
        responses={201: DocumentSerializer, 200: DocumentSerializer, 413: OpenApiResponse(description="Too large")},
    )
    def post(self, request: Request, collection_id: str) -> Response:
        collection = access_collection(request.user, collection_id, for_write=True)
        body = UploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        upload = body.validated_data["file"]
        if upload.size > settings.CHATSITE_MAX_UPLOAD_BYTES:
            raise RequestTooLarge(
                f"The file is {upload.size} bytes; files of up to {settings.CHATSITE_MAX_UPLOAD_BYTES} bytes are taken."
            )
        document, created = actions.do_upload_document(
            collection,
            request.user,
            filename=upload.name,
            kind=kind_of(upload.name, upload.content_type),
            data=upload.read(),
            title=body.validated_data.get("title", ""),
            metadata=body.validated_data["metadata"],
        )
        return Response(
            DocumentSerializer(document).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class AllDocumentsView(generics.ListAPIView):
    """`GET /api/documents`: the documents of every collection the caller may read (own and shared), newest
    first; `?status=ready` (or queued, processing, failed) keeps those in that state."""

    serializer_class = DocumentSerializer

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=[s.value for s in Document.Status], description="Only these.")]
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        documents = visible_documents(self.request.user).select_related("collection").defer("data", "text")
        wanted = self.request.query_params.get("status")
        if wanted is not None:
            if wanted not in Document.Status.values:
                raise ValidationError({"status": [f"Use one of {', '.join(Document.Status.values)}."]})
            documents = documents.filter(status=wanted)
        return documents.order_by("-created_at", "id")


class DocumentDetailView(generics.RetrieveDestroyAPIView):
    """`GET, DELETE /api/documents/<id>`: read one in a collection you may read; delete from your own."""

    serializer_class = DocumentSerializer

    def get_object(self) -> Document:
        return access_document(self.request.user, self.kwargs["document_id"], for_write=self.request.method == "DELETE")

    def perform_destroy(self, instance: Document) -> None:
        actions.do_delete_document(instance)


class DocumentChunkListView(generics.ListAPIView):
    """`GET /api/documents/<id>/chunks`: the document's passages in order, with page and offsets (what a
    `sources` item points at)."""

    serializer_class = ChunkSerializer

    def get_queryset(self):
        document = access_document(self.request.user, self.kwargs["document_id"])
        return Chunk.objects.filter(document=document).defer("embedding").order_by("index")


class DocumentFileView(APIView):
    """`GET /api/documents/<id>/file`: the uploaded file as it was sent (a download, never shown inline)."""

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiResponse(description="The file's bytes")})
    def get(self, request: Request, document_id: str) -> HttpResponse:
        document = access_document(request.user, document_id)
        data = Document.objects.filter(pk=document.pk).values_list("data", flat=True).get()
        response = HttpResponse(bytes(data), content_type="application/octet-stream")
        # A download, never rendered: an uploaded HTML file must not run as our origin's page.
        filename = document.filename.replace('"', "").replace("\\", "")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["X-Content-Type-Options"] = "nosniff"
        return response
