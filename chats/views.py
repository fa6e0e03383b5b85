"""The browser pages: login, sign-up, and the chat page (a small script drives it through the JSON API)."""

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods
from rest_framework.exceptions import NotFound, PermissionDenied

from chats.access import access_api_key, access_chat
from chats.actions import do_create_api_key, do_revoke_api_key
from chats.models import ApiKey, User


@login_required
def chat_page(request: HttpRequest, chat_id: str | None = None) -> HttpResponse:
    """The chat page, at `/` (a new chat) or `/c/<chatId>` (one of the user's chats: 404/403 otherwise)."""
    if chat_id is not None:
        try:
            access_chat(request.user, chat_id)
        except NotFound:
            return render(request, "chats/refused.html", {"reason": "This chat does not exist."}, status=404)
        except PermissionDenied:
            return render(request, "chats/refused.html", {"reason": "This chat belongs to another user."}, status=403)
    boot = {
        "userId": str(request.user.id),
        "username": request.user.username,
        "chatId": chat_id,
        "maxMessageChars": settings.CHATSITE_MAX_MESSAGE_CHARS,
        # Hosts whose images replies may show (the renderer shows others as links).
        "imageHosts": settings.CHATSITE_IMAGE_HOSTS,
    }
    return render(request, "chats/app.html", {"boot": boot})


class SignupForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username",)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Create an account and log in (only when CHATSITE_ALLOW_SIGNUP is on; 404 otherwise)."""
    if not settings.CHATSITE_ALLOW_SIGNUP:
        raise Http404("Sign-up is off on this server.")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("chat-home")
    return render(request, "chats/signup.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def api_keys_page(request: HttpRequest) -> HttpResponse:
    """Create and revoke API keys; a new key is shown once, on the page that created it."""
    new_key = None
    error = None
    if request.method == "POST":
        if "revoke" in request.POST:
            try:
                do_revoke_api_key(access_api_key(request.user, request.POST["revoke"]))
            except (NotFound, PermissionDenied):
                error = "That key does not exist."
        else:
            name = request.POST.get("name", "").strip()
            if not name or len(name) > 100:
                error = "Give the key a name of 1 to 100 characters."
            else:
                _, new_key = do_create_api_key(request.user, name=name, read_only="read_only" in request.POST)
    keys = ApiKey.objects.filter(owner=request.user)
    return render(request, "chats/api_keys.html", {"keys": keys, "new_key": new_key, "error": error})
