"""String fields take JSON strings only, on every API serializer (issue 13, finding 6): `"content": 1` is 400
with the field named, not the text "1". The check lives in `chats.fields`; the first test keeps every serializer
on it."""

import importlib
import inspect
import json

import pytest
from rest_framework import serializers

from chats.fields import StrictString
from chats.models import Chat
from tests.test_auth_api import csrf_client

API_MODULES = [
    "chats.serializers", "chats.api", "pipelines.serializers", "pipelines.steps", "pipelines.api",
    "knowledge.serializers", "knowledge.api", "protocols.openai_serializers", "protocols.search_sessions",
    "chats.share_api", "chats.compare",
]  # fmt: skip
STRINGISH = (serializers.CharField, serializers.ChoiceField, serializers.UUIDField, serializers.SlugRelatedField)


def api_serializers() -> list[type[serializers.BaseSerializer]]:
    found = {}
    for name in API_MODULES:
        for _, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if issubclass(cls, serializers.BaseSerializer) and cls.__module__ in API_MODULES:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return list(found.values())


def writable_fields(field, path: str):
    """Every writable field under `field` (nested serializers, list and dict children), with its path."""
    if getattr(field, "read_only", False):
        return
    if isinstance(field, serializers.ListSerializer):
        yield from writable_fields(field.child, f"{path}[]")
    elif isinstance(field, serializers.Serializer):
        for name, child in field.fields.items():
            yield from writable_fields(child, f"{path}.{name}")
    elif isinstance(field, serializers.ListField | serializers.DictField):
        yield from writable_fields(field.child, f"{path}[]")
    else:
        yield path, field


def test_every_writable_string_field_of_every_api_serializer_is_strict(db):
    classes = api_serializers()
    assert len(classes) > 15, classes
    loose = []
    for cls in classes:
        serializer = cls(context={"request": None})
        for path, field in writable_fields(serializer, cls.__name__):
            if isinstance(field, STRINGISH) and not isinstance(field, StrictString):
                loose.append(f"{path} ({type(field).__name__})")
    assert not loose, f"string fields that take numbers: {loose}"


NOT_STRINGS = [1, 1.5, True, {"a": "b"}, ["a"]]


def kind(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return "a number" if isinstance(value, int | float) else "an object" if isinstance(value, dict) else "a list"


def assert_field_refused(response, field: str, value) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid_request"
    messages = " ".join(body["fields"][field])
    assert f"Must be a string, not {kind(value)}." in messages, body


@pytest.mark.parametrize("value", NOT_STRINGS)
def test_chat_fields(alice_client, alice_chat, alice, scripted_model, value):
    assert_field_refused(alice_client.post("/api/chats", {"title": value}, format="json"), "title", value)
    assert_field_refused(alice_client.post("/api/chats", {"modelId": value}, format="json"), "modelId", value)
    patch = alice_client.patch(f"/api/chats/{alice_chat.id}", {"title": value}, format="json")
    assert_field_refused(patch, "title", value)
    assert Chat.objects.get(id=alice_chat.id).title == "Alice's chat"
    send = {"content": value, "modelId": "scripted", "userId": str(alice.id)}
    url = f"/api/chats/{alice_chat.id}/messages/stream"
    assert_field_refused(alice_client.post(url, send, format="json"), "content", value)
    send = {"content": "hi", "modelId": value, "userId": str(alice.id)}
    assert_field_refused(alice_client.post(url, send, format="json"), "modelId", value)
    assert_field_refused(alice_client.post("/api/keys", {"name": value}, format="json"), "name", value)


def test_an_integer_is_not_a_uuid(alice_client, alice_chat, alice, scripted_model):
    body = {"content": "hi", "modelId": "scripted", "userId": str(alice.id), "attachments": [5]}
    response = alice_client.post(f"/api/chats/{alice_chat.id}/messages/stream", body, format="json")
    assert_field_refused(response, "attachments", 5)


def test_text_with_a_lone_surrogate_is_400_not_a_database_error(alice_client):
    response = alice_client.post("/api/chats", '{"title": "a\\ud800b"}', content_type="application/json")
    assert response.status_code == 400 and "Unicode" in " ".join(response.json()["fields"]["title"])


def test_a_nul_character_in_a_looked_up_name_is_400_not_a_database_error(alice_client, minilm):
    # The fuzzer found it: a slug that names an embedding model is looked up in PostgreSQL, which refuses NUL.
    response = alice_client.post("/api/collections", {"name": "n", "embeddingModel": "all\x00minilm"}, format="json")
    assert response.status_code == 400 and "NUL" in " ".join(response.json()["fields"]["embeddingModel"])


@pytest.mark.parametrize("value", NOT_STRINGS)
def test_login_fields(alice, value):
    client, token = csrf_client()
    for field in ("username", "password"):
        body = {"username": "alice", "password": "x", field: value}
        response = client.post("/api/auth/login", body, format="json", HTTP_X_CSRFTOKEN=token)
        assert_field_refused(response, field, value)


@pytest.mark.parametrize("value", NOT_STRINGS)
def test_workflow_fields_and_steps(alice_client, scripted_model, value):
    for field in ("name", "description", "systemPrompt", "modelId"):
        body = {"name": "w", field: value}
        assert_field_refused(alice_client.post("/api/workflows", body, format="json"), field, value)
    steps = [{"type": "system_prompt", "text": value}, {"type": "generate"}]
    response = alice_client.post("/api/workflows", {"name": "w", "steps": steps}, format="json")
    assert response.status_code == 400
    assert "Step 1 (system_prompt): text: Must be a string" in json.dumps(response.json())
    steps = [{"type": "generate", "tools": [value]}]
    response = alice_client.post("/api/workflows", {"name": "w", "steps": steps}, format="json")
    assert response.status_code == 400 and "tools: 0: Must be a string" in json.dumps(response.json())


@pytest.mark.parametrize("value", NOT_STRINGS)
def test_collection_fields(alice_client, minilm, value):
    for field in ("name", "description", "embeddingModel"):
        body = {"name": "c", field: value}
        assert_field_refused(alice_client.post("/api/collections", body, format="json"), field, value)


def test_strings_are_still_taken_as_they_are(alice_client, scripted_model):
    response = alice_client.post("/api/chats", {"title": "1", "modelId": "scripted"}, format="json")
    assert response.status_code == 201 and response.json()["title"] == "1"
