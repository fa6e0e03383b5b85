"""Authentication for the JSON API: session cookies (browsers) and API keys (programs).

DRF's own `SessionAuthentication` answers 403 to a request with no session, because it offers no
`WWW-Authenticate` challenge; DESIGN.md section 3 wants 401. It also checks CSRF only for logged-in users,
so the login view calls `enforce_csrf` itself.
"""

import hashlib
from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.permissions import SAFE_METHODS
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


KEY_PREFIX = "cs_"


def hash_key(key: str) -> str:
    """SHA-256 hex digest of an API key: keys are random (32 bytes), so a fast hash is enough to store them."""
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_key(authorization: str) -> str | None:
    """The key of an `Authorization: Bearer <key>` header value, or None when it is not one."""
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def find_api_key(key: str):
    """The API key `key` (an `ApiKey`, its `owner` loaded) if it exists, is not revoked and its owner is active;
    else None. Marks it used, writing at most once a minute per key so that busy keys do not write on every
    request."""
    from chats.models import ApiKey

    api_key = ApiKey.objects.select_related("owner").filter(key_hash=hash_key(key), revoked_at__isnull=True).first()
    if api_key is None or not api_key.owner.is_active:
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > timedelta(minutes=1):
        type(api_key).objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>` with a key from `POST /api/keys`; no CSRF token (no cookie is involved).

    A read-only key may only use safe methods (GET, HEAD, OPTIONS).

    Raises:
        AuthenticationFailed: 401 for an unknown or revoked key.
        PermissionDenied: 403 for an unsafe request with a read-only key.
    """

    def authenticate(self, request: Request):
        key = bearer_key(request.headers.get("Authorization", ""))
        if key is None:
            return None
        api_key = find_api_key(key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("This API key is unknown or has been revoked.")
        if api_key.read_only and request.method not in SAFE_METHODS:
            raise exceptions.PermissionDenied("This API key is read-only.")
        return api_key.owner, api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
