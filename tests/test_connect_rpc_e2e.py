"""Seed 000 on a live stack (daphne + Celery + Redis): a client generated from stream.proto (binary) and a raw
httpx client sending Connect JSON envelopes stream the seed's example request, with SQL cells and previews from
the demo sales database; Cancel stops a reply from both; refusals are Connect errors, never a 500."""

from __future__ import annotations

import json
import struct
from collections import defaultdict

import httpx
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from chats import actions
from chats.models import Chat, Message
from pipelines.management.commands.seed_demo_database import sample_rows
from pipelines.models import Connector, ModelConfig
from protocols.connect.stream_connect import ChatServiceClientSync
from protocols.connect.stream_pb import CancelRequest, ChatStatus, StreamRequest
from tests.test_connect_rpc import SEED_EXAMPLE

pytestmark = pytest.mark.e2e

PROCEDURE = "/chatsite.stream.v1.ChatService/Stream"
CANCEL = "/chatsite.stream.v1.ChatService/Cancel"
QUERY = "SELECT region, SUM(amount) AS revenue FROM sales GROUP BY region ORDER BY region"
ANSWER = ["The", " East", " sold", " most", "."]


def revenue_by_region() -> list[list]:
    totals: dict[str, float] = defaultdict(float)
    for _, region, amount, _ in sample_rows():
        totals[region] += amount
    return [[region, round(totals[region], 2)] for region in sorted(totals)]


@pytest.fixture
def sql_model(db) -> ModelConfig:
    """A scripted model that queries the demo database once with the sql_query tool, then answers."""
    model, _ = ModelConfig.objects.update_or_create(
        model_id="scripted-sql",
        defaults={
            "display_name": "Scripted SQL",
            "provider": "scripted",
            "context_window": 4000,
            "default_max_tokens": 100,
            "options": {
                "script": ANSWER,
                "tool_rounds": [[{"name": "sql_query", "arguments": {"connector": "demo", "query": QUERY}}]],
            },
        },
    )
    return model


@pytest.fixture
def slow_model(db) -> ModelConfig:
    model, _ = ModelConfig.objects.update_or_create(
        model_id="scripted-slow",
        defaults={"display_name": "Slow", "provider": "scripted", "context_window": 4000, "default_max_tokens": 500,
                  "options": {"script": [f" word{i}" for i in range(200)], "delay": 0.05}},
    )  # fmt: skip
    return model


@pytest.fixture
def demo(sql_analyst, carol) -> Connector:
    """The demo connector, granted to carol (seeded, it is granted to the demo-data group only)."""
    connector = Connector.objects.get(name="demo")
    connector.users.add(carol)
    return connector


@pytest.fixture
def key(carol) -> str:
    return actions.do_create_api_key(carol, name="seed000")[1]


def example_request(demo: Connector, **changes) -> dict:
    """The seed's example request, with the flags chatsite cannot honour off, the demo connector's id and a
    new chat (the seed's "optional-chat-id" placeholder left out); `model` picks the scripted model."""
    body = json.loads(json.dumps(SEED_EXAMPLE))
    body["tools"].update(connector_ids=[demo.id], web_search_enabled=False, python_enabled=False)
    del body["chat_id"]
    body["model"] = "scripted-sql"
    body.update(changes)
    return body


def kinds(messages: list[dict]) -> list[str]:
    return [next(iter(m)) for m in messages]


def check_sql_stream(messages: list[dict], demo: Connector, *, continuation: bool = False) -> dict:
    """The seed's order: metadata first, a cell and its preview from the demo database, the text, last metadata
    with usage. Returns the first metadata."""
    # Text deltas may arrive batched (CHATSITE_DELTA_BATCH_MS): one text message or several.
    found = kinds(messages)
    assert found[:3] == ["metadata", "cell", "preview"] and found[-1] == "metadata", messages
    assert len(found) > 4 and set(found[3:-1]) == {"text"}, messages
    first, cell, preview, last = messages[0]["metadata"], messages[1]["cell"], messages[2]["preview"], messages[-1]
    assert first["status"] == "QUERY_STATUS_IN_PROGRESS" and first["model"] == "scripted-sql"
    assert bool(first.get("isContinuation")) is continuation and first["chatId"] and first["id"]
    assert cell["type"] == "CELL_TYPE_SQL" and cell["code"] == QUERY and cell["connector"] == "demo"
    assert preview["cellId"] == cell["id"] and preview["columns"] == ["region", "revenue"]
    assert preview["rows"] == revenue_by_region() and preview["rowCount"] == 4
    assert "".join(m["text"] for m in messages if "text" in m) == "".join(ANSWER)
    last = last["metadata"]
    assert last["status"] == "QUERY_STATUS_COMPLETED"
    assert last["id"] == first["id"] and last["chatId"] == first["chatId"]
    assert last["usage"]["promptTokens"] > 0 and last["usage"]["totalTokens"] > last["usage"]["promptTokens"]
    reply = Message.objects.get(id=first["id"])
    assert reply.status == "completed" and reply.content == "".join(ANSWER)
    return first


def test_a_generated_client_streams_the_seeds_example_from_the_demo_database(live_stack, demo, sql_model, key):
    auth = {"Authorization": f"Bearer {key}"}
    with ChatServiceClientSync(live_stack.base_url, timeout_ms=60_000) as client:
        with pytest.raises(ConnectError) as caught:
            list(client.stream(StreamRequest.from_json(json.dumps(SEED_EXAMPLE)), headers=auth))
        assert caught.value.code == Code.INVALID_ARGUMENT and "web_search_enabled" in caught.value.message
        request = StreamRequest.from_json(json.dumps(example_request(demo)))
        messages = [json.loads(r.to_json()) for r in client.stream(request, headers=auth)]
        first = check_sql_stream(messages, demo)
        chat = Chat.objects.get(id=first["chatId"])
        assert chat.source == Chat.Source.CONNECT_RPC and chat.owner.username.startswith("carol")
        # The same chat, continued.
        again = StreamRequest.from_json(json.dumps(example_request(demo, chat_id=first["chatId"])))
        followed = [json.loads(r.to_json()) for r in client.stream(again, headers=auth)]
        assert check_sql_stream(followed, demo, continuation=True)["chatId"] == first["chatId"]
        assert chat.messages.count() == 4
        with pytest.raises(ConnectError) as caught:
            list(client.stream(request))
        assert caught.value.code == Code.UNAUTHENTICATED


def envelope(message: dict) -> bytes:
    data = json.dumps(message).encode()
    return struct.pack(">BI", 0, len(data)) + data


def unpack(body: bytes) -> tuple[list[dict], dict]:
    """Connect streaming envelopes: the messages, and the end-of-stream message (flag 0x02)."""
    messages, end, offset = [], None, 0
    while offset < len(body):
        flags, size = struct.unpack(">BI", body[offset : offset + 5])
        data = json.loads(body[offset + 5 : offset + 5 + size])
        offset += 5 + size
        if flags & 0x02:
            end = data
        else:
            messages.append(data)
    assert end is not None, "no end-of-stream message"
    return messages, end


def connect_post(client: httpx.Client, path: str, body: dict | bytes, key: str | None) -> tuple[list[dict], dict]:
    headers = {"Content-Type": "application/connect+json", "Connect-Protocol-Version": "1"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    content = body if isinstance(body, bytes) else envelope(body)
    response = client.post(path, content=content, headers=headers)
    assert response.status_code == 200 and response.headers["content-type"] == "application/connect+json"
    return unpack(response.content)


def test_raw_connect_json_at_v1_stream_gets_the_same(live_stack, demo, sql_model, scripted_model, key, sql_analyst):
    with httpx.Client(base_url=live_stack.base_url, timeout=60) as client:
        messages, end = connect_post(client, "/v1/stream", example_request(demo), key)
        assert end == {}
        first = check_sql_stream(messages, demo)
        # The procedure's own path serves the same; a workflow's sql step is a cell too (SQL analyst's step 3).
        body = {"question": "Which region sells most?", "chatId": first["chatId"], "model": "scripted",
                "workflowId": str(sql_analyst.id)}  # fmt: skip
        messages, end = connect_post(client, PROCEDURE, body, key)
        assert end == {} and messages[0]["metadata"]["isContinuation"] is True
        cells = [m["cell"] for m in messages if "cell" in m]
        previews = [m["preview"] for m in messages if "preview" in m]
        assert [c["id"] for c in cells] == ["step-3"] and cells[0]["code"].startswith("SELECT product, region")
        assert previews[0]["rowCount"] == 16 and previews[0]["columns"] == ["product", "region", "revenue", "sales"]
        assert messages[-1]["metadata"]["status"] == "QUERY_STATUS_COMPLETED"


def test_refusals_over_the_wire_are_connect_errors_never_500(live_stack, demo, sql_model, key, bob):
    bobs_chat = Chat.objects.create(owner=bob, title="Bob's")
    with httpx.Client(base_url=live_stack.base_url, timeout=30) as client:
        cases = [
            (example_request(demo), None, "unauthenticated"),
            ({"question": "Hi", "chatId": str(bobs_chat.id)}, key, "not_found"),
            (example_request(demo, tools={"connector_ids": [demo.id]}), key, "invalid_argument"),
            ({"question": "Hi", "tools": {"streamlitEnabled": True}}, key, "invalid_argument"),
            (b"\x00\x00\x00\x00\x05{oops", key, "invalid_argument"),
            ({"question": "Hi", "chatId": 12}, key, "invalid_argument"),
        ]
        for body, with_key, code in cases:
            messages, end = connect_post(client, "/v1/stream", body, with_key)
            assert messages == [] and end["error"]["code"] == code, (body, end)
            assert "Traceback" not in end["error"].get("message", "")
        assert not bobs_chat.messages.exists()
        # Cancel is unary: Connect maps its codes onto HTTP statuses.
        refused = client.post(CANCEL, json={"chatId": str(bobs_chat.id)}, headers={"Authorization": f"Bearer {key}"})
        assert refused.status_code == 404 and refused.json()["code"] == "not_found"
        assert client.get("/v1/stream").status_code < 500
        grpc = client.post("/v1/stream", content=b"", headers={"Content-Type": "application/grpc"})
        assert grpc.status_code == 415
        assert client.get("/api/models").status_code == 401  # Django still serves everything else


def test_cancel_stops_a_reply_from_both_clients(live_stack, carol, slow_model, key):
    auth = {"Authorization": f"Bearer {key}"}
    request = StreamRequest(question="Tell me a long story.", model="scripted-slow")
    with ChatServiceClientSync(live_stack.base_url, timeout_ms=60_000) as client:
        stream = client.stream(request, headers=auth)
        first = next(stream).response.value
        assert first.status == ChatStatus.QUERY_STATUS_IN_PROGRESS
        assert next(stream).response.field == "text"
        answer = client.cancel(CancelRequest(chat_id=first.chat_id), headers=auth)
        assert answer.status == ChatStatus.QUERY_STATUS_CANCELLED and answer.message_id == first.id
        rest = list(stream)
        assert rest[-1].response.value.status == ChatStatus.QUERY_STATUS_CANCELLED
        assert Message.objects.get(id=first.id).status == "cancelled"
    # Raw httpx: read the stream's first envelopes, cancel with Connect's unary JSON, read to the end.
    with (
        httpx.Client(base_url=live_stack.base_url, timeout=60) as client,
        client.stream(
            "POST", "/v1/stream", content=envelope({"question": "Another long story.", "model": "scripted-slow"}),
            headers={"Content-Type": "application/connect+json", **auth},
        ) as response,
    ):  # fmt: skip
        body = b""
        chunks = response.iter_bytes()
        while body.count(b'"text"') < 1:
            body += next(chunks)
        first = json.loads(body[5 : 5 + struct.unpack(">I", body[1:5])[0]])["metadata"]
        cancelled = client.post(CANCEL, json={"chatId": first["chatId"], "messageId": first["id"]}, headers=auth)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json() == {
            "chatId": first["chatId"],
            "messageId": first["id"],
            "status": "QUERY_STATUS_CANCELLED",
        }
        body += b"".join(chunks)
    messages, end = unpack(body)
    assert end == {} and messages[-1]["metadata"]["status"] == "QUERY_STATUS_CANCELLED"
    assert Message.objects.get(id=first["id"]).status == "cancelled"
