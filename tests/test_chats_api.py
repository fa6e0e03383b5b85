"""The chats API: list, create, retrieve, rename, delete, messages; ownership on every endpoint
(alice owns, bob is refused with 403, anonymous gets 401, an unknown id is 404)."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from chats.models import Chat, Message


def add_message(chat, role, content, offset_seconds, **fields):
    return Message.objects.create(
        chat=chat, role=role, content=content, created_at=timezone.now() + timedelta(seconds=offset_seconds), **fields
    )


def test_list_shows_only_the_callers_chats_newest_first(alice_client, alice, bob_chat):
    older = Chat.objects.create(owner=alice, title="older")
    newer = Chat.objects.create(owner=alice, title="newer")
    response = alice_client.get("/api/chats")
    assert response.status_code == 200
    payload = response.json()
    assert payload["count"] == 2
    assert [c["id"] for c in payload["results"]] == [str(newer.id), str(older.id)]
    assert str(bob_chat.id) not in response.content.decode()


def test_list_is_paginated(alice_client, alice, settings):
    for i in range(55):
        Chat.objects.create(owner=alice, title=f"chat {i}")
    first = alice_client.get("/api/chats").json()
    assert first["count"] == 55 and len(first["results"]) == 50 and first["next"]
    second = alice_client.get(first["next"]).json()
    assert len(second["results"]) == 5 and second["next"] is None


def test_create_chat_belongs_to_the_caller(alice_client, alice, scripted_model):
    response = alice_client.post("/api/chats", {"title": "Plans", "modelId": "scripted"}, format="json")
    assert response.status_code == 201
    chat = Chat.objects.get(id=response.json()["id"])
    assert chat.owner == alice and chat.title == "Plans" and chat.model_id == "scripted"


def test_create_chat_with_an_unknown_model_is_400_and_writes_nothing(alice_client):
    response = alice_client.post("/api/chats", {"modelId": "gpt-99"}, format="json")
    assert response.status_code == 400
    assert response.json()["fields"] == {"modelId": [response.json()["fields"]["modelId"][0]]}
    assert Chat.objects.count() == 0


def test_create_chat_with_someone_elses_workflow_is_400(alice_client, bob_workflow):
    response = alice_client.post("/api/chats", {"workflowId": str(bob_workflow.id)}, format="json")
    assert response.status_code == 400
    assert "workflowId" in response.json()["fields"]
    assert Chat.objects.count() == 0


def test_create_chat_with_a_shared_workflow(alice_client, shared_workflow):
    response = alice_client.post("/api/chats", {"workflowId": str(shared_workflow.id)}, format="json")
    assert response.status_code == 201
    assert response.json()["workflowId"] == str(shared_workflow.id)


def test_title_over_the_limit_is_400(alice_client, settings):
    response = alice_client.post("/api/chats", {"title": "t" * (settings.CHATSITE_MAX_TITLE_CHARS + 1)}, format="json")
    assert response.status_code == 400
    assert "title" in response.json()["fields"]


def test_retrieve_rename_and_delete_own_chat(alice_client, alice_chat):
    assert alice_client.get(f"/api/chats/{alice_chat.id}").json()["title"] == "Alice's chat"
    response = alice_client.patch(f"/api/chats/{alice_chat.id}", {"title": "Renamed"}, format="json")
    assert response.status_code == 200 and response.json()["title"] == "Renamed"
    alice_chat.refresh_from_db()
    assert alice_chat.title == "Renamed"
    assert alice_client.delete(f"/api/chats/{alice_chat.id}").status_code == 204
    assert not Chat.objects.filter(id=alice_chat.id).exists()


def test_put_is_not_allowed(alice_client, alice_chat):
    response = alice_client.put(f"/api/chats/{alice_chat.id}", {"title": "x"}, format="json")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_messages_are_listed_in_order_with_status_and_usage(alice_client, alice_chat):
    question = add_message(alice_chat, "user", "Hi?", 0)
    add_message(
        alice_chat,
        "assistant",
        "Hello!",
        1,
        parent=question,
        status="completed",
        finish_reason="stop",
        prompt_tokens=12,
        completion_tokens=3,
    )
    response = alice_client.get(f"/api/chats/{alice_chat.id}/messages")
    assert response.status_code == 200
    results = response.json()["results"]
    assert [m["content"] for m in results] == ["Hi?", "Hello!"]
    reply = results[1]
    assert reply["parentId"] == str(question.id)
    assert reply["usage"] == {"promptTokens": 12, "completionTokens": 3}
    assert reply["status"] == "completed" and reply["finishReason"] == "stop"
    assert reply["toolCalls"] == [] and reply["sources"] == []


# Every chats endpoint, as (method, path template, body).
ENDPOINTS = [
    ("get", "/api/chats/{id}", None),
    ("patch", "/api/chats/{id}", {"title": "mine now"}),
    ("delete", "/api/chats/{id}", None),
    ("get", "/api/chats/{id}/messages", None),
    ("post", "/api/chats/{id}/messages/stream", {"content": "hi", "modelId": "scripted", "userId": "x"}),
    ("get", "/api/chats/{id}/messages/{mid}/stream", None),
    ("post", "/api/chats/{id}/messages/{mid}/cancel", None),
    ("post", "/api/chats/{id}/messages/{mid}/regenerate", {}),
]


@pytest.mark.parametrize(("method", "path", "data"), ENDPOINTS)
def test_another_user_is_403_and_changes_nothing(bob_client, alice_chat, method, path, data):
    question = add_message(alice_chat, "user", "secret question", 0)
    response = getattr(bob_client, method)(path.format(id=alice_chat.id, mid=question.id), data, format="json")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert "secret" not in response.content.decode()
    alice_chat.refresh_from_db()
    assert alice_chat.title == "Alice's chat"
    assert alice_chat.messages.count() == 1
    assert question.status == Message.objects.get(id=question.id).status


@pytest.mark.parametrize(("method", "path", "data"), [e for e in ENDPOINTS if "{mid}" in e[1]])
def test_a_message_of_another_chat_is_404(alice_client, alice, alice_chat, method, path, data):
    elsewhere = add_message(Chat.objects.create(owner=alice), "user", "elsewhere", 0)
    response = getattr(alice_client, method)(path.format(id=alice_chat.id, mid=elsewhere.id), data, format="json")
    assert response.status_code == 404


@pytest.mark.parametrize(("method", "path", "data"), ENDPOINTS)
def test_anonymous_is_401(anon, alice_chat, method, path, data):
    response = getattr(anon, method)(path.format(id=alice_chat.id, mid=uuid.uuid4()), data, format="json")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
    assert Chat.objects.filter(id=alice_chat.id, title="Alice's chat").exists()


@pytest.mark.parametrize(("method", "path", "data"), ENDPOINTS)
@pytest.mark.parametrize("chat_id", [uuid.uuid4(), "not-a-uuid"])
def test_unknown_chat_is_404(alice_client, method, path, data, chat_id):
    response = getattr(alice_client, method)(path.format(id=chat_id, mid=uuid.uuid4()), data, format="json")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_anonymous_cannot_list_or_create(anon):
    assert anon.get("/api/chats").status_code == 401
    assert anon.post("/api/chats", {}, format="json").status_code == 401
    assert Chat.objects.count() == 0


def test_models_lists_active_models_only(alice_client, scripted_model, smollm2):
    scripted_model.is_active = False
    scripted_model.save()
    response = alice_client.get("/api/models")
    assert response.status_code == 200
    ids = [m["id"] for m in response.json()["results"]]
    assert "smollm2-135m" in ids and "scripted" not in ids


def test_models_needs_a_session(anon):
    assert anon.get("/api/models").status_code == 401
