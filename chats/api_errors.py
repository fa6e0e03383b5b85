"""One JSON error shape for the whole API (DESIGN.md section 3).

Every error is `{"error": "<machine code>", "message": "<text for people>"}`, plus `"fields": {...}` for
validation errors, where each key is a request field (camelCase, as sent) and each value a list of messages.
"""

import logging
import sys

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response

# DRF's codes, renamed where ours read better.
_CODES = {
    "not_authenticated": "not_authenticated",
    "authentication_failed": "not_authenticated",
    "permission_denied": "forbidden",
    "not_found": "not_found",
    "parse_error": "malformed_json",
    "method_not_allowed": "method_not_allowed",
    "unsupported_media_type": "unsupported_media_type",
    "throttled": "rate_limited",
    "invalid": "invalid_request",
}


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    """The error shape: `{"error": code, "message": message}` plus `fields` when given."""
    body = {"error": code, "message": message}
    if fields is not None:
        body["fields"] = fields
    return body


logger = logging.getLogger("chatsite.errors")

# What a request meets when the database is down, restarting or refusing connections (psycopg's errors, and the
# pool's timeout waiting for a connection, arrive wrapped as these by Django).
DATABASE_DOWN = (OperationalError, InterfaceError)
# Seconds a client should wait before trying again (chatsite.health uses the same).
DATABASE_RETRY_AFTER_SECONDS = 5


def _database_unavailable(request: HttpRequest, exc: BaseException) -> dict:
    """Log a request that met a database outage (one WARNING line with the exception's class, not its text,
    which names hosts and users) and return the error body."""
    logger.warning("database unavailable (%s) for %s %s", type(exc).__name__, request.method, request.path)
    return error_body(
        "database_unavailable",
        "The database is not answering right now; nothing was changed. Try again in a few seconds.",
    )


def database_unavailable_response(request: HttpRequest, exc: BaseException) -> JsonResponse:
    """503 `database_unavailable` with `Retry-After`, for a request that met a database outage (any view or
    middleware; DRF views get the same from `exception_handler`). Marked as logged, so that Django does not add
    an ERROR line per request to an outage."""
    response = JsonResponse(_database_unavailable(request, exc), status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    response._has_been_logged = True
    return response


def _flatten(detail) -> list[str]:
    if isinstance(detail, dict):
        return [m for v in detail.values() for m in _flatten(v)]
    if isinstance(detail, list):
        return [m for v in detail for m in _flatten(v)]
    return [str(detail)]


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF exception handler that renders every API error in the shape above.

    A database outage (OperationalError, InterfaceError) is 503 `database_unavailable` with `Retry-After`.
    Returns None for exceptions DRF does not handle, which Django then turns into a 500 (logged).
    """
    if isinstance(exc, DATABASE_DOWN):
        # Nothing to roll back on a connection that is gone, and set_rollback would touch it.
        response = Response(
            _database_unavailable(context["request"], exc),
            status=503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
        response._has_been_logged = True
        return response
    if isinstance(exc, RequestDataTooBig):
        from chats.exceptions import RequestTooLarge

        exc = RequestTooLarge()
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None

    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))

    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        if isinstance(detail, dict):
            fields = {key: _flatten(value) for key, value in detail.items()}
            first_key, first = next(iter(fields.items()))
            prefix = "" if first_key == "non_field_errors" else f"{first_key}: "
            body = error_body("invalid_request", f"{prefix}{first[0]}", fields)
        else:
            body = error_body("invalid_request", " ".join(_flatten(detail)))
    else:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        body = error_body(_CODES.get(code, code), " ".join(_flatten(exc.detail)))
        body.update(getattr(exc, "extra", {}))

    from rest_framework.views import set_rollback  # here: DRF's views import our auth, which imports us

    set_rollback()
    return Response(body, status=exc.status_code, headers=headers)


class JSONFallbackNegotiation(DefaultContentNegotiation):
    """Answer errors in JSON even to a client that asked only for `text/event-stream`.

    A streaming client sends `Accept: text/event-stream`; an error before the stream starts must still reach
    it (as JSON) instead of becoming a 406.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except exceptions.NotAcceptable:
            return renderers[0], renderers[0].media_type


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """handler404: unknown URLs answer in the API's error shape."""
    return JsonResponse(error_body("not_found", f"No such URL: {request.path}"), status=404)


def json_server_error(request: HttpRequest) -> JsonResponse:
    """handler500: never a stack trace, always the error shape; a database outage met outside a view (in a
    middleware, say) is the 503 of `database_unavailable_response`."""
    exc = sys.exc_info()[1]
    if isinstance(exc, DATABASE_DOWN):
        return database_unavailable_response(request, exc)
    return JsonResponse(error_body("internal_error", "Something went wrong on our side."), status=500)


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    """CSRF_FAILURE_VIEW for Django's middleware (non-API pages)."""
    return JsonResponse(error_body("csrf_failed", f"CSRF check failed: {reason}."), status=403)


def login_locked_out(request: HttpRequest, credentials: dict | None = None, *args: object) -> JsonResponse:
    """django-axes' lockout response (AXES_LOCKOUT_CALLABLE): 429 in the API's error shape, with Retry-After."""
    from django.conf import settings

    hours = float(settings.AXES_COOLOFF_TIME or 0)
    minutes = max(1, round(hours * 60))
    response = JsonResponse(
        error_body(
            "login_locked",
            f"Too many failed logins for this username from your address. Try again in {minutes} minutes.",
        ),
        status=429,
    )
    response["Retry-After"] = str(minutes * 60)
    return response
