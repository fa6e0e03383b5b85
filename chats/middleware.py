"""Middleware of chatsite's own."""

from __future__ import annotations

import io
from tempfile import SpooledTemporaryFile

from django.http import HttpRequest
from django.utils.deprecation import MiddlewareMixin


class BodyLengthMiddleware(MiddlewareMixin):
    """Gives a request whose body came without a Content-Length (`Transfer-Encoding: chunked`) the length of the
    body the server received, so that it is read like any other.

    Django's ASGI handler reads the whole body of every request into a spooled temporary file before the
    view runs, with or without a Content-Length (daphne decodes the chunks), but everything that parses it
    goes by CONTENT_LENGTH: DRF's parsers and Django's multipart parser take a missing one for an empty body,
    so a chunked `POST /api/chats {"title": ...}` made a chat without its title, and a chunked upload had no
    file. With the length set here, every endpoint reads the body, and the size limits that go by the
    declared length (CHATSITE_MAX_REQUEST_BYTES, CHATSITE_MAX_UPLOAD_BYTES: 413) apply to it as well.

    Must come before anything that reads the body (CsrfViewMiddleware reads form posts): first in MIDDLEWARE.
    """

    def process_request(self, request: HttpRequest) -> None:
        if request.META.get("CONTENT_LENGTH"):
            return
        # Django's ASGIRequest keeps the body file as its stream (Django 5.x); a WSGI request's stream is
        # limited to its Content-Length already, and has no size to find.
        body = getattr(request, "_stream", None)
        if not isinstance(body, SpooledTemporaryFile):
            return
        start = body.tell()
        size = body.seek(0, io.SEEK_END) - start
        body.seek(start)
        if size > 0:
            request.META["CONTENT_LENGTH"] = str(size)


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """A view that met a database outage (django.db.OperationalError or InterfaceError) answers 503
    `database_unavailable` with `Retry-After` instead of a 500 (`chats.api_errors.database_unavailable_response`).

    DRF views get the same answer from the API's exception handler; this covers the other views (pages, the
    admin), and `handler500` covers an outage met by a middleware. A streaming view meets the database before it
    returns its response, so this also covers the SSE endpoints before their stream starts.
    """

    def process_exception(self, request: HttpRequest, exception: Exception):
        from chats.api_errors import DATABASE_DOWN, database_unavailable_response

        if isinstance(exception, DATABASE_DOWN):
            return database_unavailable_response(request, exception)
        return None
