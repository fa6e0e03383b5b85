"""Session authentication for the JSON API.

DRF's own `SessionAuthentication` answers 403 to a request with no session, because it offers no
`WWW-Authenticate` challenge; DESIGN.md section 3 wants 401. It also checks CSRF only for logged-in users,
so the login view calls `enforce_csrf` itself.
"""

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from chats.exceptions import CsrfFailed


class SessionAuthentication(authentication.SessionAuthentication):
    """Django's session cookie; unsafe methods need the CSRF token (`X-CSRFToken` header)."""

    def authenticate_header(self, request: Request) -> str:
        # Any value makes DRF answer 401 (not 403) when no session is present.
        return 'Session realm="api"'

    def enforce_csrf(self, request: Request) -> None:
        """Check the CSRF token as Django's middleware does.

        Raises:
            CsrfFailed: 403 `csrf_failed` when an unsafe request lacks a valid token.
        """
        # Check the Django request underneath: DRF's Request would parse the body while Django's CSRF check
        # looks for a form token, turning a malformed JSON body into a 400 before the 404/403 checks.
        try:
            super().enforce_csrf(getattr(request, "_request", request))
        except exceptions.PermissionDenied as exc:
            raise CsrfFailed(f"{exc.detail} Send the csrftoken cookie's value as the X-CSRFToken header.") from exc
