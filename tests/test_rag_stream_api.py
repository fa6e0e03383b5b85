"""Seed 002: the RAG chat stream (`POST /api/v1/chat/stream`): FastAPI-shaped refusals, the mapping of its
options onto a reply's steps, and named events sources, text, done in that order on a live stack."""

from __future__ import annotations

import httpx
import pytest
from httpx_sse import connect_sse
from rest_framework.test import APIClient

from chats import actions
from chats.models import Chat, Message
from knowledge.models import Collection, Document

URL = "/api/v1/chat/stream"


def key_client(user) -> APIClient:
    _, key = actions.do_create_api_key(user, name="seed002")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def handbook(alice, minilm) -> Document:
    collection = Collection.objects.create(owner=alice, name="Handbook", embedding_model=minilm)
    text = "Staff get twenty-five days of paid leave a year."
    return Document.objects.create(
        collection=collection, title="Leave policy", filename="leave.md", kind="markdown", size_bytes=len(text),
        sha256="leave", data=text.encode(), text=text, status="ready",
    )  # fmt: skip


@pytest.fixture
def llm(scripted_model, monkeypatch):
    # Replies here are queued, not generated: the live tests below run a worker.
    monkeypatch.setattr("chats.actions.enqueue_reply", lambda message_id, lane=None: None)
    return scripted_model


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({}, ["body", "query"], "missing"),
        ({"query": ""}, ["body", "query"], "string_too_short"),
        ({"query": "x" * 10001}, ["body", "query"], "string_too_long"),
        ({"query": "Hi", "context_mode": "psychic"}, ["body", "context_mode"], "literal_error"),
        (
            {"query": "Hi", "history": [{"role": "robot", "content": "x"}]},
            ["body", "history", 0, "role"],
            "literal_error",
        ),
        ({"query": "Hi", "max_tokens": 9000}, ["body", "max_tokens"], "less_than_equal"),
        ({"query": "Hi", "rag_config": {"sources": [{"name": "Nope", "model_name": "x"}]}}, None, "not_found"),
    ],
)
def test_refusals_are_fastapis_422(alice, llm, minilm, body, loc, kind):
    response = key_client(alice).post(URL, body, format="json")
    assert response.status_code == 422, response.content
    detail = response.json()["detail"]
    assert detail[0]["type"] == kind and detail[0]["msg"]
    assert {"loc", "msg", "type", "input"} <= set(detail[0])
    if loc is not None:
        assert detail[0]["loc"] == loc
    assert not Message.objects.exists()


def test_malformed_json_is_422_json_invalid(alice, llm):
    response = key_client(alice).post(URL, data="{", content_type="application/json")
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "json_invalid"


def test_a_model_or_embedding_model_not_configured_is_503(alice, llm):
    assert key_client(alice).post(URL, {"query": "Hi", "llm_model": "gpt-4o-mini"}, format="json").status_code == 503
    response = key_client(alice).post(
        URL, {"query": "Hi", "llm_model": "scripted", "embedding_model": "openai-small"}, format="json"
    )
    assert response.status_code == 503 and "openai-small" in response.json()["detail"]


def test_no_session_is_401_and_anothers_conversation_is_403(anon, alice, bob, llm):
    assert anon.post(URL, {"query": "Hi"}, format="json").status_code == 401
    chat = Chat.objects.create(owner=alice, title="alice secret")
    response = key_client(bob).post(
        URL, {"query": "Hi", "llm_model": "scripted", "conversation_id": str(chat.id)}, format="json"
    )
    assert response.status_code == 403 and "alice secret" not in response.content.decode()


def test_rag_config_maps_onto_the_replys_retrieve_step(alice, llm, handbook):
    body = {
        "query": "How much leave?",
        "llm_model": "scripted",
        "history": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"}],
        "system_prompt": "Cite your sources.",
        "temperature": 0.1,
        "max_tokens": 64,
        "rag_config": {
            "sources": [
                {"name": "Handbook", "model_name": "all-minilm-l6-v2", "limit": 3, "similarity_threshold": 0.2}
            ],
            "retrieval_strategy": "ensemble",
            "max_total_results": 4,
        },
    }
    response = key_client(alice).post(URL, body, format="json")
    assert response.status_code == 200
    reply = Message.objects.get(status="queued")
    assert reply.chat.source == "rag_stream" and reply.chat.owner == alice
    steps = reply.options["steps"]
    assert [s["type"] for s in steps] == ["system_prompt", "retrieve", "generate"]
    retrieve = steps[1]
    assert retrieve["retrieval_strategy"] == "ensemble" and retrieve["max_total_results"] == 4
    assert retrieve["sources"][0]["collection"] == str(handbook.collection_id)
    assert retrieve["sources"][0]["limit"] == 3 and retrieve["sources"][0]["similarity_threshold"] == 0.2
    assert reply.options["temperature"] == 0.1 and reply.options["max_tokens"] == 64
    assert [m.role for m in Message.objects.filter(chat=reply.chat).order_by("created_at")] == [
        "user", "assistant", "user", "assistant",
    ]  # fmt: skip


def test_a_collection_embedded_with_another_model_is_refused(alice, llm, handbook):
    body = {
        "query": "Hi",
        "llm_model": "scripted",
        "rag_config": {"sources": [{"name": "Handbook", "model_name": "x"}]},
    }
    detail = key_client(alice).post(URL, body, format="json").json()["detail"]
    assert detail[0]["loc"] == ["body", "rag_config", "sources", 0, "model_name"]


def test_bobs_documents_cannot_be_attached(bob, llm, handbook):
    body = {"query": "Hi", "llm_model": "scripted", "context_mode": "attachment"}
    body["attachment_config"] = {"attachments": [{"storage_key": str(handbook.id)}]}
    response = key_client(bob).post(URL, body, format="json")
    assert response.status_code == 422 and "twenty-five" not in response.content.decode()


@pytest.mark.e2e
def test_a_seed_002_client_gets_sources_then_text_then_done(live_stack, carol, scripted_model, minilm):
    collection = Collection.objects.create(owner=carol, name="Handbook", embedding_model=minilm)
    text = "Staff get twenty-five days of paid leave a year."
    document = Document.objects.create(
        collection=collection, title="Leave policy", filename="leave.md", kind="markdown", size_bytes=len(text),
        sha256="leave", data=text.encode(), text=text, status="ready",
    )  # fmt: skip
    _, key = actions.do_create_api_key(carol, name="seed002")
    body = {
        "query": "How much leave do I get?",
        "context_mode": "attachment",
        "attachment_config": {"attachments": [{"storage_key": str(document.id), "title": "Leave"}]},
        "llm_model": "scripted",
    }
    named = []
    with (
        httpx.Client(base_url=live_stack.base_url, timeout=30) as client,
        connect_sse(client, "POST", URL, json=body, headers={"Authorization": f"Bearer {key}"}) as source,
    ):
        assert source.response.status_code == 200
        named = [(sse.event, sse.json()) for sse in source.iter_sse() if sse.data]
    kinds = [event for event, _ in named]
    assert kinds[0] == "sources" and kinds[-1] == "done" and set(kinds[1:-1]) == {"text"}, named
    assert named[0][1]["sources"][0]["documentId"] == str(document.id)
    answer = "".join(data["content"] for event, data in named if event == "text")
    done = named[-1][1]
    assert done["completed"] is True
    reply = Message.objects.get(id=done["message_id"])
    assert reply.content == answer == "Hello, world!" and reply.sources[0]["documentId"] == str(document.id)
