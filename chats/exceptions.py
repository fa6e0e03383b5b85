"""API errors of our own, on top of DRF's (rendered by `chats.api_errors.exception_handler`)."""

from rest_framework import exceptions, status


class CsrfFailed(exceptions.PermissionDenied):
    """403 `csrf_failed`: an unsafe request without a valid CSRF token."""

    default_code = "csrf_failed"
    default_detail = "CSRF check failed. Send the csrftoken cookie's value as X-CSRFToken."


class Conflict(exceptions.APIException):
    """409 `conflict`: the request does not fit the current state (a reply already running...)."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The request conflicts with the current state."
