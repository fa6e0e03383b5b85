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


class ReplyInProgress(Conflict):
    """409 `reply_in_progress`: the chat already has a reply queued or streaming; `messageId` names it."""

    default_code = "reply_in_progress"

    def __init__(self, message_id: object) -> None:
        super().__init__(
            f"This chat already has a reply in progress ({message_id}). Resume it with "
            "GET .../messages/<messageId>/stream, or cancel it, before sending another message."
        )
        self.extra = {"messageId": str(message_id)}


class ReplyFinished(Conflict):
    """409 `reply_finished`: the reply already completed or failed, so it cannot be cancelled."""

    default_code = "reply_finished"

    def __init__(self, status: str) -> None:
        super().__init__(f"This reply has already finished ({status}); there is nothing to stop.")
        self.extra = {"status": status}


class IdempotencyKeyReused(Conflict):
    """409 `idempotency_key_reused`: the Idempotency-Key was already used for a different message."""

    default_code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was already used for a different message in this chat. Use a new key."


class RequestTooLarge(exceptions.APIException):
    """413 `request_too_large`: the request body is over CHATSITE_MAX_REQUEST_BYTES."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"
    default_detail = "The request body is too large."


class InvalidLastEventId(exceptions.APIException):
    """400 `invalid_last_event_id`: a resume's Last-Event-ID is malformed, out of range or outside the stream.

    `fields.lastEventId` repeats the message, as for other invalid request fields.
    """

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_last_event_id"
    default_detail = "The Last-Event-ID is not an event of this reply."

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.extra = {"fields": {"lastEventId": [detail]}}
