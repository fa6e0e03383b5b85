"""Seed 003: search sessions and chat-stream, including the seed document's own example client run against a
live stack with only its URL and token changed."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from httpx_sse import EventSource
from rest_framework.test import APIClient

from chats import actions
from chats.models import Chat, Message
from pipelines.models import Workflow
from tests.live import resume

BASE = "/api/v1/workspaces/default"


def key_client(user, *, read_only: bool = False) -> APIClient:
    _, key = actions.do_create_api_key(user, name="seed003", read_only=read_only)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def pipeline(db, scripted_model) -> Workflow:
    return Workflow.objects.create(owner=None, name="Handbook QA", model=scripted_model)


def test_a_search_session_is_a_chat_of_the_caller(alice, bob, pipeline):
    created = key_client(alice).post(f"{BASE}/search_sessions", {"pipeline_name": "handbook-qa"}, format="json")
    assert created.status_code == 201
    session_id = created.json()["search_session_id"]
    chat = Chat.objects.get(id=session_id)
    assert chat.owner == alice and chat.source == "search_session" and chat.workflow == pipeline
    listed = key_client(alice).get(f"{BASE}/search_sessions").json()
    assert [s["search_session_id"] for s in listed["data"]] == [session_id] and listed["total"] == 1
    assert key_client(bob).get(f"{BASE}/search_sessions").json()["data"] == []


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/api/v1/workspaces/acme/search_sessions", {}, 404, "no workspace 'acme'"),
        (f"{BASE}/search_sessions", {"pipeline_name": "nope"}, 404, "no pipeline 'nope'"),
        (f"{BASE}/pipelines/nope/chat-stream", {"query": "Hi"}, 404, "no pipeline 'nope'"),
        (f"{BASE}/pipelines/handbook-qa/chat-stream", {"query": "Hi"}, 400, "search_session_id"),
        (f"{BASE}/pipelines/handbook-qa/chat-stream", {"search_session_id": "x", "query": "Hi"}, 400, "UUID"),
    ],
)
def test_refusals_answer_in_the_seeds_errors_shape(alice, pipeline, path, body, status, words):
    response = key_client(alice).post(path, body, format="json")
    assert response.status_code == status
    errors = response.json()["errors"]
    assert len(errors) == 1 and words in errors[0]


def test_bob_cannot_ask_in_alices_search_session(alice, bob, pipeline):
    session = Chat.objects.create(owner=alice, title="alice secret session")
    body = {"query": "What did alice ask?", "search_session_id": str(session.id)}
    response = key_client(bob).post(f"{BASE}/pipelines/handbook-qa/chat-stream", body, format="json")
    assert response.status_code == 403 and "alice secret" not in response.content.decode()
    assert not Message.objects.filter(chat=session).exists()


def test_a_read_only_key_cannot_ask(alice, pipeline):
    session = Chat.objects.create(owner=alice)
    body = {"query": "Hi", "search_session_id": str(session.id)}
    response = key_client(alice, read_only=True).post(f"{BASE}/pipelines/handbook-qa/chat-stream", body, format="json")
    assert response.status_code == 403 and response.json()["errors"]


def test_anothers_private_workflow_is_no_pipeline(alice, bob, scripted_model):
    Workflow.objects.create(owner=bob, name="Bob only", model=scripted_model)
    session = Chat.objects.create(owner=alice)
    body = {"query": "Hi", "search_session_id": str(session.id)}
    response = key_client(alice).post(f"{BASE}/pipelines/bob-only/chat-stream", body, format="json")
    assert response.status_code == 404


# --- live -----------------------------------------------------------------------------------------------


async def seed_example_client(PIPELINE_URL: str, TOKEN: str, SEARCH_SESSION_ID: str) -> None:
    """The example client of ../shared/seeds/003_*.txt, as written there; only its constants are parameters."""
    query = {
        "query": "How does streaming work with deepset Cloud?",
        "include_result": True,
        "search_session_id": SEARCH_SESSION_ID,
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=PIPELINE_URL, headers=headers) as client:  # noqa: SIM117 (as written)
        async with client.stream("POST", "/chat-stream", json=query) as response:
            # Check if the response is successful
            if response.status_code != 200:
                await response.aread()
                print(f"An error occured with status code: {response.status_code}")
                print(response.json()["errors"][0])
                return

            event_source = EventSource(response)
            # Stream the response
            async for event in event_source.aiter_sse():
                event_data = json.loads(event.data)
                chunk_type = event_data["type"]
                # Check the type of the chunk and print the data accordingly
                match chunk_type:
                    # Delta chunk contains the next text chunk of the answer
                    case "delta":
                        token: str = event_data["delta"]["text"]
                        print(token, flush=True, end="")
                    # Result chunk contains the final pipeline result
                    case "result":
                        print("\n\nPipeline result:")
                        print(json.dumps(event_data["result"]))
                    # Error chunk contains the error message
                    case "error":
                        print("\n\nAn error occurred while streaming:")
                        print(event_data["error"])


@pytest.mark.e2e
def test_the_seeds_example_client_streams_an_answer_and_its_result(live_stack, carol, pipeline, capsys, session):
    _, token = actions.do_create_api_key(carol, name="example")
    chat = actions.do_create_chat(carol, source=Chat.Source.SEARCH_SESSION)
    url = f"{live_stack.base_url}{BASE}/pipelines/handbook-qa"
    asyncio.run(seed_example_client(url, token, str(chat.id)))
    printed = capsys.readouterr().out
    text, _, result = printed.partition("\n\nPipeline result:\n")
    assert text == "Hello, world!"
    result = json.loads(result)
    reply = Message.objects.get(chat=chat, role="assistant")
    assert result["query_id"] == str(reply.id) and reply.content == text
    answer = result["results"][0]["answers"][0]
    assert answer["answer"] == text and result["results"][0]["query"] == "How does streaming work with deepset Cloud?"
    # The same reply over seed 004, from carol's session.
    client, _ = session
    assert resume(client, str(chat.id), str(reply.id)).text == text


@pytest.mark.e2e
def test_the_example_client_prints_the_refusal_for_a_wrong_session(live_stack, carol, pipeline, capsys):
    _, token = actions.do_create_api_key(carol, name="example")
    url = f"{live_stack.base_url}{BASE}/pipelines/handbook-qa"
    asyncio.run(seed_example_client(url, token, "00000000-0000-0000-0000-000000000000"))
    printed = capsys.readouterr().out
    assert "status code: 404" in printed and "does not exist" in printed
