"""Seed 001's endpoints (`/api/v1/stream/generate_sql`, `/api/v1/stream/ask`, `/api/v1/stream_explanation`):
refusals and ownership (alice owns, bob is another user, anonymous), the mapping onto a reply's steps, and the
states streamed by a live stack (daphne, Celery, the demo database), with the scripted model and SmolLM2."""

from __future__ import annotations

import json

import httpx
import pytest
from rest_framework.test import APIClient

from chats import actions
from chats.models import Chat, Message
from pipelines.models import Connector
from tests.conftest import logged_in_client
from tests.test_text_to_sql import CLASSIFY, EXPLAIN, GENERATE, SUMMARIZE, TEA_SQL, analyst

GENERATE_URL = "/api/v1/stream/generate_sql"
ASK_URL = "/api/v1/stream/ask"
EXPLAIN_URL = "/api/v1/stream_explanation"


def key_client(user, read_only: bool = False) -> APIClient:
    _, key = actions.do_create_api_key(user, name="seed001", read_only=read_only)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def queued(monkeypatch):
    """Replies are saved and queued, not generated (the live tests run a worker)."""
    monkeypatch.setattr("chats.actions.enqueue_reply", lambda message_id, lane=None: None)


@pytest.fixture
def granted(sql_analyst, alice, scripted_model) -> Connector:
    connector = Connector.objects.get(name="demo")
    connector.users.add(alice)
    return connector


def alice_reply(alice) -> Message:
    chat = Chat.objects.create(owner=alice, title="alice secret", source="text_to_sql")
    return Message.objects.create(
        chat=chat, role="assistant", content="I answer questions about sales.", status="completed",
        created_at=chat.created_at,
    )  # fmt: skip


# --- refusals and ownership -----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [GENERATE_URL, ASK_URL])
def test_anonymous_is_401_and_nothing_is_saved(anon, url):
    assert anon.post(url, {"question": "Top products?"}, format="json").status_code == 401
    assert anon.get(f"{EXPLAIN_URL}?queryId=00000000-0000-0000-0000-000000000000").status_code == 401
    assert not Message.objects.exists()


@pytest.mark.parametrize("url", [GENERATE_URL, ASK_URL])
def test_bob_cannot_continue_alices_thread_and_an_unknown_thread_is_404(alice, bob, granted, queued, url):
    Connector.objects.get(name="demo").users.add(bob)
    thread = Chat.objects.create(owner=alice, title="alice secret")
    response = key_client(bob).post(url, {"question": "More?", "threadId": str(thread.id)}, format="json")
    assert response.status_code == 403 and "alice secret" not in response.content.decode()
    missing = key_client(bob).post(url, {"question": "More?", "threadId": "abc-123"}, format="json")
    assert missing.status_code == 404
    assert not Message.objects.exists()


def test_bob_cannot_read_alices_explanation(alice, bob):
    reply = alice_reply(alice)
    response = key_client(bob).get(f"{EXPLAIN_URL}?queryId={reply.id}")
    assert response.status_code == 403 and "sales" not in response.content.decode()
    assert key_client(bob).get(f"{EXPLAIN_URL}?queryId=00000000-0000-0000-0000-000000000000").status_code == 404
    assert key_client(bob).get(f"{EXPLAIN_URL}?queryId=nope").status_code == 404
    assert key_client(bob).get(EXPLAIN_URL).json()["fields"]["queryId"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "question"),
        ({"question": ""}, "question"),
        ({"question": 42}, "question"),
        ({"question": "Top?", "sampleSize": 0}, "sampleSize"),
        ({"question": "Top?", "connector": "nowhere"}, "connector"),
        ({"question": "Top?", "modelId": "gpt-99"}, "modelId"),
    ],
)
def test_a_bad_body_is_400_naming_the_field(alice, granted, queued, body, field):
    response = key_client(alice).post(ASK_URL, body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request" and field in response.json()["fields"]
    assert not Message.objects.exists()


def test_a_connector_not_granted_is_refused_with_the_same_words_as_a_missing_one(bob, granted, queued):
    ungranted = key_client(bob).post(GENERATE_URL, {"question": "Top?"}, format="json")
    missing = key_client(bob).post(GENERATE_URL, {"question": "Top?", "connector": "ghost"}, format="json")
    assert ungranted.status_code == missing.status_code == 400
    assert "that you may use" in ungranted.json()["message"] and "that you may use" in missing.json()["message"]


def test_a_read_only_key_and_a_session_without_csrf_are_403(alice, granted, queued):
    assert key_client(alice, read_only=True).post(ASK_URL, {"question": "Top?"}, format="json").status_code == 403
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(ASK_URL, {"question": "Top?"}, format="json").status_code == 403
    assert not Message.objects.exists()


# --- the mapping onto a reply -------------------------------------------------------------------------------------


def test_ask_becomes_a_reply_in_a_new_thread_with_the_pipelines_steps(alice, granted, queued):
    body = {"question": "Revenue by month?", "language": "German", "sampleSize": 7, "modelId": "scripted"}
    response = logged_in_client(alice).post(ASK_URL, body, format="json")
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    reply = Message.objects.get(role="assistant")
    assert reply.chat.owner == alice and reply.chat.source == "text_to_sql" and reply.model_id == "scripted"
    steps = reply.options["steps"]
    assert [s["type"] for s in steps] == ["classify", "retrieve_schema", "generate_sql", "execute_sql", "summarize"]
    assert steps[0]["connector"] == "demo" and steps[0]["language"] == "German"
    assert steps[4]["sample_size"] == 7 and steps[4]["language"] == "German"


def test_generate_sql_continues_the_thread_it_is_given(alice, granted, queued):
    thread = Chat.objects.create(owner=alice, title="Sales questions")
    body = {"question": "Top products?", "threadId": str(thread.id), "modelId": "scripted"}
    assert key_client(alice).post(GENERATE_URL, body, format="json").status_code == 200
    reply = Message.objects.get(role="assistant")
    assert reply.chat == thread
    assert [s["type"] for s in reply.options["steps"]] == ["classify", "retrieve_schema", "generate_sql"]


# --- live: the seed's stream --------------------------------------------------------------------------------------


def stream(base_url: str, key: str, method: str, url: str, **kwargs) -> list[dict]:
    """The `data:` lines of a seed 001 stream, read as the seed's Python example reads them."""
    events = []
    with (
        httpx.Client(base_url=base_url, timeout=120) as client,
        client.stream(method, url, headers={"Authorization": f"Bearer {key}"}, **kwargs) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


@pytest.fixture
def carol_demo(live_stack, carol, sql_analyst) -> str:
    Connector.objects.get(name="demo").users.add(carol)
    _, key = actions.do_create_api_key(carol, name="seed001")
    return key


@pytest.mark.e2e
def test_ask_streams_every_state_in_order_then_finished_with_sql_summary_and_thread(live_stack, carol_demo, minilm):
    analyst([
        {"when": CLASSIFY, "script": ["SQL"]},
        {"when": GENERATE, "script": [TEA_SQL]},
        {"when": SUMMARIZE, "script": ["We sold ", "tea."]},
    ])  # fmt: skip
    body = {"question": "How much tea did we sell?", "modelId": "analyst"}
    events = stream(live_stack.base_url, carol_demo, "POST", ASK_URL, json=body)
    states = [e["state"] for e in events]
    assert states == ["UNDERSTANDING", "SEARCHING", "GENERATING", "EXECUTING", "SUMMARIZING", "FINISHED"], events
    assert all(e["message"] for e in events[:-1])
    final = events[-1]
    assert final["sql"] == TEA_SQL + "\nLIMIT 200" and final["summary"] == "We sold tea."
    chat = Chat.objects.get(id=final["threadId"])
    assert chat.source == "text_to_sql" and chat.owner.username.startswith("carol")

    follow = stream(live_stack.base_url, carol_demo, "POST", GENERATE_URL,
                    json={**body, "question": "And coffee?", "threadId": final["threadId"]})  # fmt: skip
    assert [e["state"] for e in follow] == ["UNDERSTANDING", "SEARCHING", "GENERATING", "FINISHED"]
    assert follow[-1]["threadId"] == final["threadId"] and "summary" not in follow[-1]
    assert chat.messages.filter(role="assistant").count() == 2


@pytest.mark.e2e
def test_a_non_sql_question_fails_with_an_explanation_to_stream(live_stack, carol_demo, minilm):
    analyst([{"when": CLASSIFY, "script": ["OTHER"]}, {"when": EXPLAIN, "script": ["I answer ", "sales questions."]}])
    events = stream(
        live_stack.base_url, carol_demo, "POST", GENERATE_URL, json={"question": "Hi!", "modelId": "analyst"}
    )
    assert [e["state"] for e in events] == ["UNDERSTANDING", "FAILED"]
    failed = events[-1]
    assert failed["error"]["code"] == "NON_SQL_QUERY" and failed["error"]["message"]
    explanation = stream(
        live_stack.base_url, carol_demo, "GET", f"{EXPLAIN_URL}?queryId={failed['explanationQueryId']}"
    )
    assert explanation[-1] == {"done": True}
    assert "".join(e["message"] for e in explanation[:-1]) == "I answer sales questions."


@pytest.mark.e2e
def test_a_failure_ends_failed_with_a_code_and_a_sentence(live_stack, carol_demo, minilm):
    analyst([{"when": CLASSIFY, "script": ["SQL"]}, {"when": GENERATE, "script": ["DELETE FROM sales"]}])
    body = {"question": "Delete it all", "modelId": "analyst"}
    events = stream(live_stack.base_url, carol_demo, "POST", ASK_URL, json=body)
    assert [e["state"] for e in events] == ["UNDERSTANDING", "SEARCHING", "GENERATING", "FAILED"]
    assert events[-1]["error"]["code"] == "sql_invalid" and "DELETE" in events[-1]["error"]["message"]
    assert events[-1]["threadId"]


@pytest.mark.e2e
def test_the_whole_pipeline_on_smollm2_keeps_the_protocol(live_stack, carol_demo, smollm2, minilm):
    events = stream(
        live_stack.base_url, carol_demo, "POST", ASK_URL,
        json={"question": "What are the top 10 products by sales?", "modelId": "smollm2-135m"},
    )  # fmt: skip
    states = [e["state"] for e in events]
    order = ["UNDERSTANDING", "SEARCHING", "GENERATING", "EXECUTING", "SUMMARIZING"]
    assert states[-1] in ("FINISHED", "FAILED") and states[:-1] == order[: len(states) - 1], events
    assert all(isinstance(e["message"], str) and e["message"] for e in events[:-1])
    final = events[-1]
    assert final["threadId"]
    if final["state"] == "FINISHED":
        assert final["sql"].lstrip().upper().startswith(("SELECT", "WITH")) and isinstance(final["summary"], str)
    else:
        assert set(final["error"]) == {"code", "message"}
        if final["error"]["code"] == "NON_SQL_QUERY":
            explanation = stream(
                live_stack.base_url, carol_demo, "GET", f"{EXPLAIN_URL}?queryId={final['explanationQueryId']}"
            )
            assert explanation[-1] == {"done": True}
