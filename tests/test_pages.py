"""The server side of the browser pages: login required, chat URLs checked for ownership, optional sign-up."""

import uuid

from django.test import Client

from chats.models import User
from tests.conftest import PASSWORD


def test_the_chat_page_needs_a_login(db):
    response = Client().get("/")
    assert response.status_code == 302 and response["Location"] == "/login?next=/"


def test_the_login_page_logs_in_and_sends_you_to_your_chats(alice):
    client = Client(enforce_csrf_checks=True)
    page = client.get("/login")
    assert page.status_code == 200 and b'name="csrfmiddlewaretoken"' in page.content
    token = client.cookies["csrftoken"].value
    response = client.post("/login", {"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_a_wrong_password_shows_an_error_on_the_login_page(alice):
    response = Client().post("/login", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert b"The username or password is wrong" in response.content


def test_own_chat_page_opens_and_others_are_refused(alice, alice_chat, bob_chat):
    client = Client()
    client.force_login(alice)
    assert client.get(f"/c/{alice_chat.id}").status_code == 200
    refused = client.get(f"/c/{bob_chat.id}")
    assert refused.status_code == 403 and b"belongs to another user" in refused.content
    assert b"Bob&#x27;s chat" not in refused.content and b"Bob's chat" not in refused.content
    assert client.get(f"/c/{uuid.uuid4()}").status_code == 404


def test_the_page_passes_its_data_as_json_not_script(alice, alice_chat):
    client = Client()
    client.force_login(alice)
    html = client.get(f"/c/{alice_chat.id}").content.decode()
    assert '<script id="boot" type="application/json">' in html
    assert str(alice.id) in html and "<script>" not in html


def test_sign_up_is_off_by_default(db):
    assert Client().get("/signup").status_code == 404


def test_sign_up_creates_an_account_and_logs_in_when_allowed(settings, db):
    settings.CHATSITE_ALLOW_SIGNUP = True
    client = Client()
    response = client.post(
        "/signup",
        {"username": "erin", "password1": "a long enough passphrase", "password2": "a long enough passphrase"},
    )
    assert response.status_code == 302 and response["Location"] == "/"
    assert User.objects.filter(username="erin").exists()
    assert client.get("/").status_code == 200


def test_sign_up_refuses_a_weak_password_and_creates_nothing(settings, db):
    settings.CHATSITE_ALLOW_SIGNUP = True
    response = Client().post("/signup", {"username": "erin", "password1": "123", "password2": "123"})
    assert response.status_code == 200 and b"form-error" in response.content
    assert not User.objects.filter(username="erin").exists()


def test_the_reading_libraries_are_served_from_this_site(alice, alice_chat):
    """Highlighting, math (with its stylesheet and fonts) and the theme load from here, as the CSP requires."""
    import re

    client = Client()
    client.force_login(alice)
    html = client.get(f"/c/{alice_chat.id}").content.decode()
    assert '<link rel="stylesheet" href="/static/vendor/katex/katex.min.css">' in html
    assert '<script src="/static/chatsite/theme.js"></script>' in html
    css = b"".join(client.get("/static/vendor/katex/katex.min.css").streaming_content).decode()
    font = re.search(r"url\((fonts/KaTeX_Main-Regular\.woff2)\)", css)
    assert font, "KaTeX's stylesheet names its fonts by relative URL"
    assert client.get(f"/static/vendor/katex/{font[1]}").status_code == 200
    for path in ("vendor/katex/katex.mjs", "vendor/highlight/highlight.min.js", "chatsite/render.js"):
        response = client.get(f"/static/{path}")
        assert response.status_code == 200 and "javascript" in response["Content-Type"], path
