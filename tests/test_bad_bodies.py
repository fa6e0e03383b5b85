"""Bodies that must be refused with a 400 and a sentence, never a 500 (issue 13, finding 6): JSON nested deeper
than `MAX_JSON_DEPTH` (100,000 `[` ended in a RecursionError), on every JSON endpoint and in JSON sent inside a
form field. Chunked bodies, which only a real server produces, are tested live (test_hostile_requests_e2e.py)."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from chats.parsers import MAX_JSON_DEPTH, JSONTooDeep, loads_json
from knowledge.models import Collection
from tests.test_auth_api import csrf_client


def nested(depth: int, kind: str = "list") -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("kind", ["list", "object"])
def test_json_up_to_the_depth_limit_is_read_and_deeper_is_refused(kind):
    assert loads_json(nested(MAX_JSON_DEPTH, kind)) is not None
    with pytest.raises(JSONTooDeep):
        loads_json(nested(MAX_JSON_DEPTH + 1, kind))
    with pytest.raises(JSONTooDeep):
        loads_json("[" * 100_000)  # past the recursion limit: the decoder's RecursionError becomes JSONTooDeep
    with pytest.raises(JSONTooDeep):
        loads_json('{"a":' * 100_000)


def test_a_wide_body_is_not_deep():
    assert len(loads_json(json.dumps([[1]] * 50_000))) == 50_000


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}', "{", "", '{"a": 1} x'])
def test_what_is_not_json_is_a_value_error(text):
    with pytest.raises(ValueError):
        loads_json(text)


DEEP_BODIES = ["[" * 100_000, '{"a":' * 100_000, nested(MAX_JSON_DEPTH + 1, "object")]


def assert_malformed(response) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "malformed_json" and body["message"], body


@pytest.mark.parametrize("raw", DEEP_BODIES)
def test_every_json_endpoint_refuses_deep_json_with_400(alice_client, alice_chat, raw):
    message = alice_chat.messages.create(role="user", content="hi", created_at=alice_chat.created_at)
    for method, url in [
        ("post", "/api/chats"),
        ("patch", f"/api/chats/{alice_chat.id}"),
        ("post", f"/api/chats/{alice_chat.id}/messages/stream"),
        ("post", f"/api/chats/{alice_chat.id}/messages/{message.id}/regenerate"),
        ("post", "/api/keys"),
        ("post", "/api/workflows"),
        ("post", "/api/collections"),
    ]:
        response = getattr(alice_client, method)(url, raw, content_type="application/json")
        assert_malformed(response)


def test_login_refuses_deep_json_with_400(alice):
    client, token = csrf_client()
    response = client.post("/api/auth/login", "[" * 100_000, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert_malformed(response)


def test_deep_json_in_an_uploads_metadata_is_400(alice_client, alice, minilm):
    collection = Collection.objects.create(owner=alice, name="Notes", embedding_model=minilm)
    upload = SimpleUploadedFile("a.md", b"# A\n\ntext", content_type="text/markdown")
    response = alice_client.post(
        f"/api/collections/{collection.id}/documents",
        {"file": upload, "metadata": '{"a":' * 100_000},
        format="multipart",
    )
    assert response.status_code == 400, response.content
    assert "deeper than" in " ".join(response.json()["fields"]["metadata"])
