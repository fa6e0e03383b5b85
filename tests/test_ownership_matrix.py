"""The ownership matrix, generated from the URL configuration: every API route and method, as the owner
(alice), another user (bob), staff and anonymous, gets the expected status and no data of another user.

A route or method that is not in MATRIX fails `test_every_api_route_and_method_is_in_the_matrix`, so a new
endpoint cannot escape these checks.
"""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from chats.models import ApiKey, Chat, Message, User
from chats.sharing import do_create_share, message_ref
from knowledge.models import Chunk, Collection, Document
from pipelines.models import Workflow
from tests.conftest import logged_in_client

ROLES = ("owner", "other", "staff", "anon")
SECRETS = (
    "Alice secret chat",
    "alice secret message",
    "alice secret prompt",
    "alice secret key",
    "Alice secret collection",
    "alice secret document",
)

# route -> method -> (owner, other, staff, anon) expected status. Bodies: see BODIES.
MATRIX = {
    "api/auth/csrf": {"GET": (200, 200, 200, 200)},
    "api/auth/login": {"POST": (400, 400, 400, 400)},  # an empty body, with a CSRF token
    "api/auth/logout": {"POST": (204, 204, 204, 401)},
    "api/auth/me": {"GET": (200, 200, 200, 401)},
    "api/models": {"GET": (200, 200, 200, 401)},
    "api/keys": {"GET": (200, 200, 200, 401), "POST": (400, 400, 400, 401)},
    "api/keys/<str:key_id>": {"DELETE": (204, 403, 403, 401)},
    "api/chats": {"GET": (200, 200, 200, 401), "POST": (201, 201, 201, 401)},
    "api/search": {"GET": (200, 200, 200, 401)},  # q: alice's secret words
    "api/chats/export": {"GET": (200, 200, 200, 401)},  # each user's own chats only (test_chat_transfer.py)
    "api/chats/import": {"POST": (400, 400, 400, 401)},  # an empty JSON object: no known format
    "api/chats/<str:chat_id>/export": {"GET": (200, 403, 403, 401)},
    "api/chats/<str:chat_id>": {
        "GET": (200, 403, 403, 401),
        "PATCH": (200, 403, 403, 401),
        "DELETE": (204, 403, 403, 401),
    },
    "api/chats/<str:chat_id>/messages": {"GET": (200, 403, 403, 401)},
    "api/chats/<str:chat_id>/messages/stream": {"POST": (400, 403, 403, 401)},  # an empty body
    "api/chats/<str:chat_id>/messages/<str:message_id>/stream": {"GET": (200, 403, 403, 401)},
    "api/chats/<str:chat_id>/messages/<str:message_id>/cancel": {"POST": (409, 403, 403, 401)},  # it finished
    "api/chats/<str:chat_id>/messages/<str:message_id>/regenerate": {"POST": (200, 403, 403, 401)},
    # Share links (issue 18): the owner's list and revocation, and a link's reading by anyone who has its token.
    "api/chats/<str:chat_id>/shares": {"GET": (200, 403, 403, 401), "POST": (201, 403, 403, 401)},
    "api/chats/<str:chat_id>/shares/<str:share_id>": {"DELETE": (204, 403, 403, 401)},
    "api/shares/<str:token>": {"GET": (200, 200, 200, 200)},
    "api/shares/<str:token>/messages/<str:message_ref>/stream": {"GET": (200, 200, 200, 200)},
    # Branches (issue 18): the message given is a reply, and an empty body has no content: 400 for the owner.
    "api/chats/<str:chat_id>/messages/<str:message_id>/edit": {"POST": (400, 403, 403, 401)},
    # Models side by side (issue 18): an empty body has no content and no targets: 400 for the owner.
    "api/chats/<str:chat_id>/messages/compare": {"POST": (400, 403, 403, 401)},
    "api/workflows": {"GET": (200, 200, 200, 401), "POST": (400, 400, 400, 401)},  # an empty body
    "api/workflows/<str:workflow_id>": {
        "GET": (200, 403, 403, 401),
        "PATCH": (200, 403, 403, 401),
        "DELETE": (204, 403, 403, 401),
    },
    "api/embedding-models": {"GET": (200, 200, 200, 401)},
    "api/collections": {"GET": (200, 200, 200, 401), "POST": (201, 201, 201, 401)},
    "api/collections/<str:collection_id>": {
        "GET": (200, 403, 403, 401),
        "PATCH": (200, 403, 403, 401),
        "DELETE": (204, 403, 403, 401),
    },
    "api/collections/<str:collection_id>/documents": {"GET": (200, 403, 403, 401), "POST": (201, 403, 403, 401)},
    "api/documents": {"GET": (200, 200, 200, 401)},
    "api/documents/<str:document_id>": {"GET": (200, 403, 403, 401), "DELETE": (204, 403, 403, 401)},
    "api/documents/<str:document_id>/chunks": {"GET": (200, 403, 403, 401)},
    "api/documents/<str:document_id>/file": {"GET": (200, 403, 403, 401)},
    "api/schema": {"GET": (200, 200, 200, 200)},
    "api/schema/docs": {"GET": (200, 200, 200, 200)},
    # The OpenAI-compatible API: a workflow the caller may not use is a model that does not exist for them.
    "v1/models": {"GET": (200, 200, 200, 401)},
    "v1/models/<path:model>": {"GET": (200, 404, 404, 401)},  # alice's workflow, as workflow/wf
    "v1/chat/completions": {"POST": (400, 400, 400, 401)},  # an empty body
    "api/v1/chat/stream": {"POST": (422, 422, 422, 401)},  # seed 002; an empty body
    # Seed 003: a workspace is the caller's own space; a pipeline is a workflow the caller may use.
    "api/v1/workspaces/<str:workspace>/search_sessions": {"GET": (200, 200, 200, 401), "POST": (201, 201, 201, 401)},
    "api/v1/workspaces/<str:workspace>/pipelines/<str:pipeline>/chat-stream": {"POST": (400, 404, 404, 401)},
    # Seed 001 (its threads' and queries' ownership: tests/test_text_to_sql_api.py): an empty body or query.
    "api/v1/stream/generate_sql": {"POST": (400, 400, 400, 401)},
    "api/v1/stream/ask": {"POST": (400, 400, 400, 401)},
    "api/v1/stream_explanation": {"GET": (400, 400, 400, 401)},
}
BODIES = {
    ("api/search", "GET"): {"q": "alice secret"},
    ("api/chats", "POST"): {"title": "new"},
    ("api/chats/<str:chat_id>", "PATCH"): {"title": "renamed"},
    ("api/workflows/<str:workflow_id>", "PATCH"): {"name": "renamed"},
    ("api/chats/<str:chat_id>/messages/<str:message_id>/regenerate", "POST"): {},
    ("api/collections", "POST"): {"name": "new"},
    ("api/collections/<str:collection_id>", "PATCH"): {"name": "renamed"},
    ("api/collections/<str:collection_id>/documents", "POST"): lambda: {
        "file": SimpleUploadedFile("notes.md", b"# Notes", content_type="text/markdown")
    },
}
# Uploads are multipart; everything else is JSON.
FORMATS = {("api/collections/<str:collection_id>/documents", "POST"): "multipart"}


def api_routes() -> dict[str, set[str]]:
    """Every route under api/ and v1/ in the URL configuration, with the HTTP methods its view answers."""

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern), pattern.callback

    routes = {}
    for route, callback in walk(get_resolver().url_patterns):
        if not route.startswith(("api/", "v1/")):
            continue
        view = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
        allowed = getattr(view, "http_method_names", [])
        routes[route] = {m.upper() for m in allowed if m not in ("options", "head", "trace") and hasattr(view, m)}
    return routes


def test_every_api_route_and_method_is_in_the_matrix():
    routes = api_routes()
    assert set(routes) == set(MATRIX), f"routes not in the matrix: {set(routes) - set(MATRIX)}"
    for route, methods in routes.items():
        assert methods == set(MATRIX[route]), (
            f"{route}: the view answers {methods}, the matrix has {set(MATRIX[route])}"
        )


@pytest.fixture
def world(alice, bob, minilm, django_capture_on_commit_callbacks):
    """Alice's things, with secrets that nobody else may see."""
    staff = User.objects.create_user("sam", password="x", is_staff=True)
    chat = Chat.objects.create(owner=alice, title="Alice secret chat")
    now = timezone.now()
    question = Message.objects.create(chat=chat, role="user", content="alice secret message", created_at=now)
    reply = Message.objects.create(
        chat=chat, role="assistant", content="alice secret message too", status="completed", parent=question,
        model_id="scripted", created_at=now, completed_at=now,
    )  # fmt: skip
    workflow = Workflow.objects.create(owner=alice, name="wf", system_prompt="alice secret prompt")
    key = ApiKey.objects.create(owner=alice, name="alice secret key", prefix="cs_x", key_hash="0" * 64)
    collection = Collection.objects.create(owner=alice, name="Alice secret collection", embedding_model=minilm)
    document = Document.objects.create(
        collection=collection, title="alice secret document", filename="secret.md", kind="markdown", size_bytes=9,
        sha256="1" * 64, data=b"alice secret document", text="alice secret document", status="ready", chunk_count=1,
    )  # fmt: skip
    Chunk.objects.create(
        document=document, collection=collection, index=0, text="alice secret document", start=0, end=21,
        token_count=3, dimensions=3, embedding=[1.0, 0.0, 0.0],
    )  # fmt: skip
    # A share link of another of alice's chats, with nothing secret in it (what it shows is for anyone).
    shared = Chat.objects.create(owner=alice, title="Alice shared chat")
    shared_question = Message.objects.create(chat=shared, role="user", content="shared question", created_at=now)
    shared_reply = Message.objects.create(
        chat=shared, role="assistant", content="shared answer", status="completed", parent=shared_question,
        model_id="scripted", created_at=now, completed_at=now,
    )  # fmt: skip
    share, share_token = do_create_share(shared)
    revocable, _ = do_create_share(chat)  # never opened here: its chat's secrets stay with the owner
    clients = {
        "owner": logged_in_client(alice),
        "other": logged_in_client(bob),
        "staff": logged_in_client(staff),
        "anon": APIClient(enforce_csrf_checks=True),
    }
    anon_token = clients["anon"].get("/api/auth/csrf").cookies["csrftoken"].value
    clients["anon"].credentials(HTTP_X_CSRFTOKEN=anon_token)
    ids = {
        "chat_id": chat.id,
        "message_id": reply.id,
        "workflow_id": workflow.id,
        "key_id": key.id,
        "collection_id": collection.id,
        "document_id": document.id,
        "model": "workflow/wf",
        "workspace": "default",
        "pipeline": "wf",
        "share_id": revocable.id,
        "token": share_token,
        "message_ref": message_ref(share, str(shared_reply.id)),
    }
    with django_capture_on_commit_callbacks(execute=False):  # no worker runs here
        yield clients, ids


CASES = [(route, method, role) for route, methods in MATRIX.items() for method in methods for role in ROLES]


@pytest.mark.parametrize(("route", "method", "role"), CASES, ids=[f"{m} {r} as {role}" for r, m, role in CASES])
def test_matrix(world, scripted_model, route, method, role):
    clients, ids = world
    path = "/" + route
    for name, value in ids.items():
        path = path.replace(f"<str:{name}>", str(value)).replace(f"<path:{name}>", str(value))
    body = BODIES.get((route, method), {})
    body = body() if callable(body) else body
    response = getattr(clients[role], method.lower())(path, body, format=FORMATS.get((route, method), "json"))
    expected = MATRIX[route][method][ROLES.index(role)]
    assert response.status_code == expected, (response.status_code, getattr(response, "content", b"")[:300])
    if role != "owner" and not response.streaming:
        text = response.content.decode(errors="replace")
        assert not any(secret in text for secret in SECRETS), text[:300]


# The browser pages (every route outside api/ and admin/), GET as (owner, other, staff, anon): the same
# ownership rule as the API, with a redirect to the login page for anonymous visitors.
PAGE_MATRIX = {
    "": (200, 200, 200, 302),
    "c/<str:chat_id>": (200, 403, 403, 302),
    "login": (302, 302, 302, 200),  # logged-in users are sent on to their chats
    "logout": (405, 405, 405, 405),  # POST only
    "signup": (404, 404, 404, 404),  # off unless CHATSITE_ALLOW_SIGNUP
    "keys": (200, 200, 200, 302),
    "documents": (200, 200, 200, 302),
    "documents/<str:document_id>": (200, 403, 403, 302),
    "s/<str:token>": (200, 200, 200, 200),  # a share link: anyone with it
    # Liveness and readiness (issue 17): for load balancers, no login, nothing of anyone's.
    "healthz": (200, 200, 200, 200),
    "readyz": (200, 200, 200, 200),
}


def page_routes() -> set[str]:
    return {
        str(pattern.pattern)
        for pattern in get_resolver().url_patterns
        if isinstance(pattern, URLPattern) and not str(pattern.pattern).startswith(("api/", "admin/", "v1/"))
    }


def test_every_page_route_is_in_the_page_matrix():
    assert page_routes() == set(PAGE_MATRIX), f"pages not in the matrix: {page_routes() - set(PAGE_MATRIX)}"


PAGE_CASES = [(route, role) for route in PAGE_MATRIX for role in ROLES]


@pytest.mark.parametrize(("route", "role"), PAGE_CASES, ids=[f"GET /{r} as {role}" for r, role in PAGE_CASES])
def test_page_matrix(world, route, role):
    clients, ids = world
    path = "/" + route
    for name, value in ids.items():
        path = path.replace(f"<str:{name}>", str(value))
    response = clients[role].get(path)
    expected = PAGE_MATRIX[route][ROLES.index(role)]
    assert response.status_code == expected, (response.status_code, response.content[:300])
    if expected == 302 and role == "anon":
        assert response["Location"].startswith("/login?next=")
    if role != "owner":
        text = response.content.decode(errors="replace")
        assert not any(secret in text for secret in SECRETS), text[:300]
