"""`POST /api/chats/<chatId>/messages/stream`: every refusal, in the order DESIGN.md section 3 gives, and
no rows written by any refused request. (Successful streams are proven end to end in test_e2e.py.)"""

import json
import uuid

import pytest
from django.conf import settings

from chats.models import Chat, Message
from tests.conftest import logged_in_client


def url(chat_id) -> str:
    return f"/api/chats/{chat_id}/messages/stream"


def body(user, **overrides) -> dict:
    data = {"content": "Explain quantum computing", "modelId": "scripted", "userId": str(user.id)}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not ...}


def post(client, chat_id, data, **extra):
    raw = data if isinstance(data, str) else json.dumps(data)
    return client.post(url(chat_id), raw, content_type="application/json", HTTP_ACCEPT="text/event-stream", **extra)


@pytest.fixture(autouse=True)
def _models(scripted_model):
    return scripted_model


def assert_refused(response, status: int, code: str, chat: Chat | None = None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    payload = response.json()
    assert payload["error"] == code
    assert payload["message"]
    assert Message.objects.count() == 0, "a refused request wrote a message"
    if chat is not None:
        before = chat.updated_at
        chat.refresh_from_db()
        assert chat.updated_at == before and chat.title == "Alice's chat", "a refused request changed the chat"
    return payload


def test_no_session_is_401_even_for_a_chat_that_does_not_exist(anon, alice):
    assert_refused(post(anon, alice.id, body(alice)), 401, "not_authenticated")
    assert_refused(post(anon, uuid.uuid4(), body(alice)), 401, "not_authenticated")


def test_unknown_chat_is_404(alice_client, alice):
    assert_refused(post(alice_client, uuid.uuid4(), body(alice)), 404, "not_found")
    assert_refused(post(alice_client, "not-a-uuid", body(alice)), 404, "not_found")


def test_unknown_chat_is_404_before_a_bad_body_is_400(alice_client):
    assert_refused(post(alice_client, uuid.uuid4(), "{not json"), 404, "not_found")


def test_another_users_chat_is_403(bob_client, bob, alice_chat):
    assert_refused(post(bob_client, alice_chat.id, body(bob)), 403, "forbidden", alice_chat)


def test_another_users_chat_is_403_before_a_bad_body_is_400(bob_client, alice_chat):
    assert_refused(post(bob_client, alice_chat.id, {"content": ""}), 403, "forbidden", alice_chat)


def test_user_id_of_someone_else_is_403(alice_client, alice_chat, bob):
    payload = assert_refused(post(alice_client, alice_chat.id, body(bob)), 403, "forbidden", alice_chat)
    assert "userId" in payload["message"]


def test_user_id_mismatch_is_403_before_other_body_errors_are_400(alice_client, alice_chat, bob):
    data = body(bob, content="", modelId="nope")
    assert_refused(post(alice_client, alice_chat.id, data), 403, "forbidden", alice_chat)


def test_missing_csrf_token_is_403(alice, alice_chat):
    client = logged_in_client(alice)
    client.credentials()  # drop the X-CSRFToken header
    assert_refused(post(client, alice_chat.id, body(alice)), 403, "csrf_failed", alice_chat)


def test_wrong_csrf_token_is_403(alice, alice_chat):
    client = logged_in_client(alice)
    client.credentials(HTTP_X_CSRFTOKEN="x" * 64)
    assert_refused(post(client, alice_chat.id, body(alice)), 403, "csrf_failed", alice_chat)


def test_malformed_json_is_400(alice_client, alice_chat):
    assert_refused(post(alice_client, alice_chat.id, '{"content": "hi",'), 400, "malformed_json", alice_chat)


def test_a_json_value_that_is_not_an_object_is_400(alice_client, alice_chat):
    assert_refused(post(alice_client, alice_chat.id, '["content"]'), 400, "malformed_json", alice_chat)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"content": ...}, "content"),
        ({"content": ""}, "content"),
        ({"content": "   \n\t "}, "content"),
        ({"content": None}, "content"),
        ({"content": "x" * (settings.CHATSITE_MAX_MESSAGE_CHARS + 1)}, "content"),
        ({"modelId": ...}, "modelId"),
        ({"modelId": "gpt-99"}, "modelId"),
        ({"userId": ...}, "userId"),
        ({"workflowId": str(uuid.uuid4())}, "workflowId"),
        ({"workflowId": "not-a-uuid"}, "workflowId"),
        ({"workflowId": 42}, "workflowId"),
    ],
    ids=[
        "content-missing",
        "content-empty",
        "content-blank",
        "content-null",
        "content-too-long",
        "model-missing",
        "model-unknown",
        "user-id-missing",
        "workflow-unknown",
        "workflow-not-uuid",
        "workflow-not-string",
    ],
)
def test_bad_body_is_400_with_the_field_named(alice_client, alice, alice_chat, overrides, field):
    payload = assert_refused(post(alice_client, alice_chat.id, body(alice, **overrides)), 400, "invalid_request")
    assert list(payload["fields"]) == [field]
    assert payload["fields"][field][0]


def test_another_users_private_workflow_is_400(alice_client, alice, alice_chat, bob_workflow):
    data = body(alice, workflowId=str(bob_workflow.id))
    payload = assert_refused(post(alice_client, alice_chat.id, data), 400, "invalid_request", alice_chat)
    assert "workflowId" in payload["fields"]


def test_a_disabled_model_is_400(alice_client, alice, alice_chat, scripted_model):
    scripted_model.is_active = False
    scripted_model.save()
    assert_refused(post(alice_client, alice_chat.id, body(alice)), 400, "invalid_request", alice_chat)


def test_content_at_the_size_limit_is_accepted(alice, alice_chat):
    from chats.serializers import SendMessageSerializer

    request = type("R", (), {"user": alice})()
    data = body(alice, content="x" * settings.CHATSITE_MAX_MESSAGE_CHARS)
    assert SendMessageSerializer(data=data, context={"request": request}).is_valid()
