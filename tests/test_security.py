"""Locked down: API keys, abuse limits, login lockout, input limits, production settings and page headers."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from chats.models import ApiKey, Chat, DailyUsage, Message
from tests.conftest import PASSWORD

ROOT = Path(__file__).resolve().parent.parent


def send(client, chat, user, content="Hello", **extra):
    body = {"content": content, "modelId": "scripted", "userId": str(user.id)}
    return client.post(f"/api/chats/{chat.id}/messages/stream", body, format="json", **extra)


# --- API keys ----------------------------------------------------------------------------------------------


def new_key(client, name="script", read_only=False) -> dict:
    response = client.post("/api/keys", {"name": name, "readOnly": read_only}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def bearer(key: str) -> APIClient:
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_a_key_is_shown_once_and_stored_only_as_a_hash(alice_client, alice):
    created = new_key(alice_client)
    assert created["key"].startswith("cs_") and created["prefix"] == created["key"][:9]
    row = ApiKey.objects.get(id=created["id"])
    assert created["key"] not in (row.key_hash, row.prefix, row.name) and len(row.key_hash) == 64
    listed = alice_client.get("/api/keys").json()["results"]
    assert [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0]


def test_a_key_authenticates_without_csrf_and_carries_the_owners_rights(alice_client, alice, alice_chat, bob_chat):
    client = bearer(new_key(alice_client)["key"])
    assert client.get("/api/auth/me").json()["id"] == str(alice.id)
    assert client.post("/api/chats", {"title": "by key"}, format="json").status_code == 201
    assert client.get(f"/api/chats/{bob_chat.id}").status_code == 403
    assert ApiKey.objects.get(owner=alice).last_used_at is not None


def test_a_read_only_key_reads_but_cannot_write(alice_client, alice_chat):
    client = bearer(new_key(alice_client, read_only=True)["key"])
    assert client.get(f"/api/chats/{alice_chat.id}").status_code == 200
    response = client.patch(f"/api/chats/{alice_chat.id}", {"title": "x"}, format="json")
    assert response.status_code == 403 and "read-only" in response.json()["message"]
    alice_chat.refresh_from_db()
    assert alice_chat.title == "Alice's chat"


def test_a_revoked_or_unknown_key_is_401(alice_client):
    created = new_key(alice_client)
    assert alice_client.delete(f"/api/keys/{created['id']}").status_code == 204
    assert bearer(created["key"]).get("/api/auth/me").status_code == 401
    assert bearer("cs_" + "x" * 43).get("/api/auth/me").status_code == 401


def test_keys_cannot_manage_keys_and_others_keys_are_403(alice_client, bob_client):
    created = new_key(alice_client)
    assert bearer(created["key"]).post("/api/keys", {"name": "more"}, format="json").status_code == 403
    assert bob_client.delete(f"/api/keys/{created['id']}").status_code == 403
    assert bob_client.get("/api/keys").json()["count"] == 0
    assert ApiKey.objects.get(id=created["id"]).revoked_at is None


def test_the_keys_page_creates_shows_once_and_revokes(alice):
    from django.test import Client

    client = Client()
    client.force_login(alice)
    page = client.post("/keys", {"name": "from the page", "read_only": "on"})
    key = page.content.decode().split('<code id="new-key">')[1].split("</code>")[0]
    assert key.startswith("cs_") and ApiKey.objects.get(owner=alice).read_only
    again = client.get("/keys").content.decode()
    assert key not in again and "from the page" in again
    client.post("/keys", {"revoke": str(ApiKey.objects.get(owner=alice).id)})
    assert ApiKey.objects.get(owner=alice).revoked_at is not None


# --- abuse limits ------------------------------------------------------------------------------------------


@pytest.fixture
def _no_worker(django_capture_on_commit_callbacks):
    # These tests check what a send is allowed to write; no worker runs here.
    with django_capture_on_commit_callbacks(execute=False):
        yield


@pytest.mark.usefixtures("_no_worker")
def test_over_the_send_rate_is_429_with_retry_after_and_writes_nothing(settings, alice_client, alice, scripted_model):
    settings.CHATSITE_SEND_RATE = "2/min"
    chats = [Chat.objects.create(owner=alice) for _ in range(3)]
    assert send(alice_client, chats[0], alice).status_code == 200
    assert send(alice_client, chats[1], alice).status_code == 200
    response = send(alice_client, chats[2], alice)
    assert response.status_code == 429 and response.json()["error"] == "rate_limited"
    assert int(response["Retry-After"]) > 0 and "2/min" in response.json()["message"]
    assert chats[2].messages.count() == 0


@pytest.mark.usefixtures("_no_worker")
def test_too_many_replies_in_progress_is_429(settings, alice_client, alice, scripted_model):
    settings.CHATSITE_MAX_CONCURRENT_REPLIES = 1
    first, second = Chat.objects.create(owner=alice), Chat.objects.create(owner=alice)
    assert send(alice_client, first, alice).status_code == 200
    response = send(alice_client, second, alice)
    assert response.status_code == 429 and response.json()["error"] == "too_many_replies"
    assert second.messages.count() == 0


@pytest.mark.usefixtures("_no_worker")
def test_a_used_up_daily_quota_is_429_until_midnight(alice_client, alice, alice_chat, scripted_model):
    alice.daily_token_quota = 100
    alice.save()
    DailyUsage.objects.create(user=alice, day=timezone.now().date(), tokens=100)
    response = send(alice_client, alice_chat, alice)
    assert response.status_code == 429 and response.json()["error"] == "quota_exceeded"
    assert 0 < int(response["Retry-After"]) <= 86400
    assert alice_chat.messages.count() == 0


@pytest.mark.usefixtures("_no_worker")
def test_a_reply_in_progress_in_the_chat_is_409_before_the_limits(
    settings, alice_client, alice, alice_chat, scripted_model
):
    settings.CHATSITE_MAX_CONCURRENT_REPLIES = 1
    assert send(alice_client, alice_chat, alice).status_code == 200
    assert send(alice_client, alice_chat, alice).status_code == 409


def test_the_runner_records_usage_for_users_with_a_quota(alice, alice_chat, scripted_model):
    from chats import actions
    from chats.limits import quota_left
    from pipelines.runner import run_reply

    alice.daily_token_quota = 1000
    alice.save()
    _, reply, _ = actions.do_send_message(alice, alice_chat, content="Hi there", model=scripted_model, workflow=None)
    run_reply(str(reply.id))
    reply.refresh_from_db()
    used = reply.prompt_tokens + reply.completion_tokens
    assert used > 0 and quota_left(alice) == 1000 - used
    from chats.events import stream_key, sync_redis

    end = json.loads(sync_redis().xrange(stream_key(str(reply.id)))[-1][1]["data"])
    assert end["type"] == "end" and end["quotaLeft"] == 1000 - used


def test_the_sixth_bad_password_locks_the_username_at_that_address(alice, bob):
    def login(username, password, address="10.1.2.3"):
        client = APIClient(enforce_csrf_checks=True)
        token = client.get("/api/auth/csrf").json()["csrfToken"]
        return client.post(
            "/api/auth/login",
            {"username": username, "password": password},
            format="json",
            HTTP_X_CSRFTOKEN=token,
            REMOTE_ADDR=address,
        )

    for _ in range(5):
        assert login("alice", "wrong").status_code == 400
    locked = login("alice", "wrong")
    assert locked.status_code == 429 and locked.json()["error"] == "login_locked"
    assert "Try again in 15 minutes" in locked.json()["message"] and locked["Retry-After"] == "900"
    assert login("alice", PASSWORD).status_code == 429  # even the right password, for a while
    assert login("bob", PASSWORD).status_code == 200  # another username is not locked
    assert login("alice", PASSWORD, address="10.9.9.9").status_code == 200  # nor another address


# --- input limits ------------------------------------------------------------------------------------------


def test_a_body_over_the_size_limit_is_413_and_writes_nothing(settings, alice_client, alice, alice_chat):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps({"content": "x" * 20_000, "modelId": "scripted", "userId": str(alice.id)})
    response = alice_client.post(f"/api/chats/{alice_chat.id}/messages/stream", body, content_type="application/json")
    assert response.status_code == 413 and response.json()["error"] == "request_too_large"
    assert Message.objects.count() == 0
    big_title = alice_client.post("/api/chats", json.dumps({"title": "t" * 20_000}), content_type="application/json")
    assert big_title.status_code == 413 and Chat.objects.filter(owner=alice).count() == 1


def test_history_sent_to_a_model_is_capped(settings, alice_chat, scripted_model):
    from pipelines.prompts import build_prompt
    from pipelines.providers.scripted import ScriptedProvider

    settings.CHATSITE_MAX_HISTORY_MESSAGES = 3
    turns = [Message(role="user" if i % 2 == 0 else "assistant", content=f"m{i}") for i in range(9)]
    prompt = build_prompt("", turns, ScriptedProvider(scripted_model), context_window=100000, max_tokens=10)
    assert [m["content"] for m in prompt] == ["m6", "m7", "m8"]


# --- production settings and page headers ------------------------------------------------------------------


def test_check_deploy_has_no_warnings_under_production_settings():
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "CHATSITE_HTTPS": "1",
        "DEBUG": "0",
        "SECRET_KEY": uuid.uuid4().hex + uuid.uuid4().hex,
        "ALLOWED_HOSTS": "chat.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
    }
    run = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "System check identified no issues" in run.stdout


def test_production_refuses_to_start_without_a_secret_key():
    env = {**os.environ, "CHATSITE_HTTPS": "1", "SECRET_KEY": ""}
    run = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0 and "SECRET_KEY must be set" in run.stderr


def test_pages_send_a_content_security_policy_without_inline_script(alice, alice_chat):
    from django.test import Client

    client = Client()
    client.force_login(alice)
    page = client.get(f"/c/{alice_chat.id}")
    policy = page["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert page["X-Frame-Options"] == "DENY" and page["X-Content-Type-Options"] == "nosniff"
    for template in (ROOT / "templates").rglob("*.html"):
        text = template.read_text()
        assert "<script>" not in text and " on" + "click=" not in text, template
