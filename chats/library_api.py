"""The API of a user's chat library: search, export and import (issue 18). Thin views, as in `chats.api`.

- `GET /api/search?q=`: `chats.search`.
- `GET /api/chats/<chatId>/export?format=json|markdown` and `GET /api/chats/export?format=json`: `chats.export`.
- `POST /api/chats/import` (a multipart `file`, or the JSON as the body): `chats.importers` reads the file,
  `chats.import_actions.do_import_chats` writes it.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.utils.urls import remove_query_param, replace_query_param
from rest_framework.views import APIView

from chats.access import access_chat
from chats.api_errors import JSONFallbackNegotiation
from chats.export import (
    chat_dict,
    chat_markdown,
    chat_messages,
    export_document,
    export_filename,
    stream_user_export,
)
from chats.import_actions import do_import_chats
from chats.importers import ImportFileError, read_import_file
from chats.search import has_search_terms, search_chats

MAX_SEARCH_PAGE_SIZE = 50
MAX_SEARCH_PAGE = 10_000
DEFAULT_SEARCH_PAGE_SIZE = 20
# Room for the multipart framing around an uploaded import file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024

ARCHIVED_PARAMETER = OpenApiParameter(
    "archived",
    OpenApiTypes.BOOL,
    OpenApiParameter.QUERY,
    required=False,
    description="`true`: archived chats only; `false`: chats not archived only.",
)


class BadRequest(exceptions.APIException):
    """400 with a code of its own and a sentence."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_request"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


def archived_filter(request: Request, *, default: bool | None) -> bool | None:
    """The `archived` query parameter: True, False, or `default` when absent.

    Raises:
        ValidationError: 400 for a value other than true, false, 1 or 0.
    """
    raw = request.query_params.get("archived")
    if raw is None or raw == "":
        return default
    value = {"true": True, "1": True, "false": False, "0": False}.get(raw.lower())
    if value is None:
        raise exceptions.ValidationError({"archived": ["Use true or false."]})
    return value


def _positive_int(request: Request, name: str, default: int, most: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1 or (most is not None and int(raw) > most):
        limit = f" up to {most}" if most is not None else ""
        raise exceptions.ValidationError({name: [f"Use a whole number from 1{limit}."]})
    return int(raw)


SEARCH_HIT_FIELDS = {
    "chatId": serializers.UUIDField(),
    "chatTitle": serializers.CharField(),
    "messageId": serializers.UUIDField(allow_null=True, help_text="null: the chat's title matched."),
    "role": serializers.CharField(allow_null=True),
    "snippet": serializers.CharField(help_text="Plain text (never markup) around the matches."),
    "highlights": serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(), min_length=2, max_length=2),
        help_text="The matches in `snippet`: [start, end) offsets in UTF-16 code units (JavaScript indices).",
    ),
    "score": serializers.FloatField(help_text="Higher is better; comparable within one search only."),
    "createdAt": serializers.DateTimeField(),
    "pinned": serializers.BooleanField(),
    "archived": serializers.BooleanField(),
    "url": serializers.CharField(help_text="The chat page, scrolled to the message."),
}
SEARCH_PAGE = inline_serializer(
    "SearchResults",
    {
        "count": serializers.IntegerField(),
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "results": inline_serializer("SearchHit", SEARCH_HIT_FIELDS, many=True),
    },
)


class SearchView(APIView):
    """`GET /api/search?q=`: the caller's chat titles and messages that match `q`, best first, paginated.

    `q` is web-search syntax: words (English stemming: "computers" finds "computer"), "quoted phrases", `or`
    between alternatives, `-word` to exclude. Archived chats are searched too (each hit says `archived`);
    `archived=true|false` keeps only those or only the others. 400 `empty_query` when `q` has no word to look
    for, `query_too_long` past CHATSITE_SEARCH_MAX_QUERY_CHARS.
    """

    @extend_schema(
        parameters=[
            OpenApiParameter("q", str, OpenApiParameter.QUERY, required=True, description="What to look for."),
            OpenApiParameter("page", int, OpenApiParameter.QUERY, required=False),
            OpenApiParameter("pageSize", int, OpenApiParameter.QUERY, required=False, description="1 to 50; 20."),
            ARCHIVED_PARAMETER,
        ],
        responses={200: SEARCH_PAGE},
    )
    def get(self, request: Request) -> Response:
        # NUL characters are no text to find (and PostgreSQL refuses them in a query).
        query = " ".join(request.query_params.get("q", "").replace("\x00", " ").split())
        most = settings.CHATSITE_SEARCH_MAX_QUERY_CHARS
        if len(query) > most:
            raise BadRequest("query_too_long", f"The search is {len(query)} characters long; the most is {most}.")
        if not has_search_terms(query):
            raise BadRequest("empty_query", "Type a word or a phrase to search for.")
        page = _positive_int(request, "page", 1, MAX_SEARCH_PAGE)
        size = _positive_int(request, "pageSize", DEFAULT_SEARCH_PAGE_SIZE, MAX_SEARCH_PAGE_SIZE)
        archived = archived_filter(request, default=None)
        found = search_chats(request.user, query, archived=archived, page=page, page_size=size)
        url = request.build_absolute_uri()
        previous = None
        if page > 1:
            previous = replace_query_param(url, "page", page - 1) if page > 2 else remove_query_param(url, "page")
        return Response(
            {
                "count": found.total,
                "next": replace_query_param(url, "page", page + 1) if page * size < found.total else None,
                "previous": previous,
                "results": [
                    {
                        "chatId": hit.chat_id,
                        "chatTitle": hit.chat_title,
                        "messageId": hit.message_id,
                        "role": hit.role,
                        "snippet": hit.snippet,
                        "highlights": hit.highlights,
                        "score": hit.score,
                        "createdAt": serializers.DateTimeField().to_representation(hit.created_at),
                        "pinned": hit.pinned,
                        "archived": hit.archived,
                        "url": f"/c/{hit.chat_id}" + (f"#message-{hit.message_id}" if hit.message_id else ""),
                    }
                    for hit in found.hits
                ],
            }
        )


class _NoFormatOverride:
    """DRF's settings, except that `?format=` does not pick a renderer (it names the export's file format)."""

    URL_FORMAT_OVERRIDE = None

    def __getattr__(self, name: str):
        return getattr(api_settings, name)


class ExportNegotiation(JSONFallbackNegotiation):
    settings = _NoFormatOverride()


def _export_format(request: Request, allowed: tuple[str, ...]) -> str:
    wanted = request.query_params.get("format") or "json"
    if wanted not in allowed:
        raise BadRequest("unknown_format", f"Export as {' or '.join(allowed)}, not {wanted[:20]!r}.")
    return wanted


def _download(content: str | bytes, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=filename)
    response["X-Content-Type-Options"] = "nosniff"
    return response


class ChatExportView(APIView):
    """`GET /api/chats/<chatId>/export?format=json|markdown`: one chat as a download.

    JSON: chatsite's export (`chats.export`) with every branch and everything saved per message; what
    `POST /api/chats/import` reads back. Markdown: the branch the chat shows (down to its latest reply).
    """

    content_negotiation_class = ExportNegotiation

    @extend_schema(
        operation_id="chat_export",
        parameters=[OpenApiParameter("format", str, OpenApiParameter.QUERY, enum=["json", "markdown"])],
        responses={
            (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="chatsite's JSON export"),
            (200, "text/markdown"): OpenApiResponse(OpenApiTypes.STR, description="The shown branch as Markdown"),
        },
    )
    def get(self, request: Request, chat_id: str) -> HttpResponse:
        chat = access_chat(request.user, chat_id)
        wanted = _export_format(request, ("json", "markdown"))
        messages = chat_messages(chat)
        if wanted == "markdown":
            return _download(chat_markdown(chat, messages), "text/markdown; charset=utf-8", export_filename(chat, "md"))
        body = json.dumps(export_document([chat_dict(chat, messages)]), ensure_ascii=False, indent=2)
        return _download(body.encode(), "application/json", export_filename(chat, "json"))


class AllChatsExportView(APIView):
    """`GET /api/chats/export?format=json`: every chat of the caller, every branch, as one JSON download
    (streamed, chats read a batch at a time). Markdown is per chat."""

    content_negotiation_class = ExportNegotiation

    @extend_schema(
        operation_id="chats_export_all",
        parameters=[OpenApiParameter("format", str, OpenApiParameter.QUERY, enum=["json"])],
        responses={(200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="chatsite's export")},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        _export_format(request, ("json",))
        response = StreamingHttpResponse(stream_user_export(request.user), content_type="application/json")
        response["Content-Disposition"] = content_disposition_header(
            as_attachment=True, filename=export_filename(None, "json")
        )
        response["X-Content-Type-Options"] = "nosniff"
        return response


def _too_large(size: int | str) -> ImportFileError:
    most = settings.CHATSITE_IMPORT_MAX_BYTES
    return ImportFileError("file_too_large", f"The file is {size} bytes; files of up to {most} bytes are taken.")


class RawJSONParser(BaseParser):
    """An import sent as the JSON body: its bytes, up to CHATSITE_IMPORT_MAX_BYTES (read as a file later)."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None) -> bytes:
        limit = settings.CHATSITE_IMPORT_MAX_BYTES
        if stream is None:
            return b""
        data = stream.read(limit + 1)
        if len(data) > limit:
            raise _too_large(f"over {limit}")
        return data


class ImportMultiPartParser(MultiPartParser):
    """An import sent as a multipart `file`: refused before it is read when the declared length is too large."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        most = settings.CHATSITE_IMPORT_MAX_BYTES + MULTIPART_OVERHEAD_BYTES
        if declared and declared.isdigit() and int(declared) > most:
            raise _too_large(declared)
        return super().parse(stream, media_type, parser_context)


IMPORT_REPORT = inline_serializer(
    "ImportReport",
    {
        "format": serializers.ChoiceField(choices=["chatsite", "chatgpt", "open-webui"]),
        "imported": inline_serializer(
            "ImportedChat",
            {
                "chatId": serializers.UUIDField(),
                "title": serializers.CharField(),
                "messages": serializers.IntegerField(),
            },
            many=True,
        ),
        "skipped": inline_serializer(
            "SkippedItem",
            {
                "index": serializers.IntegerField(help_text="The chat's position in the file (from 0)."),
                "title": serializers.CharField(),
                "messageId": serializers.CharField(required=False, help_text="Set when one message was left out."),
                "reason": serializers.CharField(),
            },
            many=True,
        ),
    },
)


class ChatImportView(APIView):
    """`POST /api/chats/import`: import chats from chatsite's JSON export, ChatGPT's `conversations.json` or an
    Open WebUI export; a multipart `file`, or the file's JSON as the body.

    Each chat is written in one transaction, or skipped whole with its reason; messages get new ids, keep
    their tree, are `completed`, and are never sent to a worker. 201 when something was imported, else 200;
    the body reports what was imported and what was left out. 400 `no_file`, `file_too_large` (over
    CHATSITE_IMPORT_MAX_BYTES), `not_utf8`, `not_json`, `unknown_format`, `no_chats`, `too_many_chats`: then
    nothing is written.
    """

    parser_classes = [RawJSONParser, ImportMultiPartParser]

    @extend_schema(
        request={
            "multipart/form-data": inline_serializer("ImportUpload", {"file": serializers.FileField()}),
            "application/json": OpenApiTypes.ANY,
        },
        responses={201: IMPORT_REPORT, 200: IMPORT_REPORT},
    )
    def post(self, request: Request) -> Response:
        if isinstance(request.data, bytes):
            data = request.data
        else:
            upload = request.FILES.get("file")
            if upload is None:
                raise ImportFileError("no_file", "Send the file to import as the multipart field `file`.")
            if upload.size > settings.CHATSITE_IMPORT_MAX_BYTES:
                raise _too_large(upload.size)
            data = upload.read()
        report = do_import_chats(request.user, read_import_file(data))
        return Response(report, status=status.HTTP_201_CREATED if report["imported"] else status.HTTP_200_OK)
