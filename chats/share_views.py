"""The share-link page (issue 18): `/s/<token>`, a chat's current branch read-only, for anyone with the link."""

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from rest_framework.exceptions import NotAuthenticated, NotFound

from chats.sharing import UNAVAILABLE, access_share


def share_page(request: HttpRequest, token: str) -> HttpResponse:
    """The shared chat's page: 404 for an unknown, revoked or expired link (alike); the login page first for a
    link for logged-in users only. The page's script (static/chatsite/share.js) reads it through the API."""
    try:
        access_share(token, request.user)
    except NotFound:
        return render(request, "chats/refused.html", {"reason": UNAVAILABLE}, status=404)
    except NotAuthenticated:
        return redirect_to_login(request.get_full_path())
    boot = {"token": token, "imageHosts": settings.CHATSITE_IMAGE_HOSTS}
    return render(request, "chats/share.html", {"boot": boot})
