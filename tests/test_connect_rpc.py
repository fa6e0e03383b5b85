"""Seed 000, without a server: the generated code matches stream.proto, the encoder maps reply events onto
StreamResponse messages, and a Stream request is checked (and refused with the right Connect code) before
anything is written. The live protocol (generated client, raw Connect JSON, cancel) is in test_connect_rpc_e2e.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from chats import actions
from chats.models import Chat, Message
from pipelines.models import Connector
from protocols.connect.encoder import PREVIEW_ROWS, ReplyEncoder, ReplyInfo
from protocols.connect.start import reply_to_cancel, start_reply
from protocols.connect.stream_pb import ChatStatus, ChatTools, StreamRequest

BASE_DIR = Path(__file__).resolve().parent.parent

# Seed 000's example request body, as the seed writes it.
SEED_EXAMPLE = {
    "question": "Your question here",
    "chat_id": "optional-chat-id",
    "tools": {
        "connector_ids": [1, 2],
        "web_search_enabled": True,
        "sql_enabled": True,
        "ontology_enabled": False,
        "python_enabled": True,
        "streamlit_enabled": False,
        "google_drive_enabled": False,
        "powerbi_enabled": False,
    },
}


def test_the_committed_generated_code_matches_the_proto(tmp_path):
    # `make proto`'s command, into a scratch folder: the plugins are the venv's console scripts.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--py_out={tmp_path}", "--py_opt=init_files=false",
         f"--connectrpc_out={tmp_path}", "protocols/connect/stream.proto"],
        cwd=BASE_DIR, env=env, check=True, capture_output=True,
    )  # fmt: skip
    for name in ("stream_pb.py", "stream_connect.py"):
        fresh = (tmp_path / "protocols" / "connect" / name).read_text()
        assert fresh == (BASE_DIR / "protocols" / "connect" / name).read_text(), f"run `make proto`: {name} is stale"
    # The protobuf-py runtime, not google.protobuf.
    imports = [
        line.strip()
        for name in ("stream_pb.py", "stream_connect.py")
        for line in (BASE_DIR / "protocols" / "connect" / name).read_text().splitlines()
        if line.strip().startswith(("import ", "from "))
    ]
    assert "from protobuf import Enum, Message" in imports
    assert not [line for line in imports if line.startswith(("from google", "import google"))], imports


def _encoder() -> ReplyEncoder:
    info = ReplyInfo("m-1", datetime(2026, 1, 2, tzinfo=UTC), "scripted", "c-1", False, "q-1")
    return ReplyEncoder(info)


def _json(responses) -> list[dict]:
    import json

    return [json.loads(r.to_json()) for r in responses]


def test_events_become_metadata_text_cells_previews_and_final_metadata():
    encoder = _encoder()
    first = _json([encoder.first()])[0]["metadata"]
    assert first["status"] == "QUERY_STATUS_IN_PROGRESS" and first["chatId"] == "c-1" and first["id"] == "m-1"
    assert first["createdAt"] == "2026-01-02T00:00:00Z" and first["metadata"] == {"user_message_id": "q-1"}
    rows = [[f"r{i}", i] for i in range(PREVIEW_ROWS + 5)]
    events = [
        {"type": "start", "messageId": "m-1", "chatId": "c-1", "userMessageId": "q-1", "model": "s",
         "workflowId": None},
        {"type": "tool_call", "callId": "k1", "toolName": "sql_query",
         "toolArgs": {"connector": "demo", "query": "SELECT 1"}},
        {"type": "tool_call", "callId": "k2", "toolName": "calculator", "toolArgs": {"expression": "1+1"}},
        {"type": "tool_result", "callId": "k2", "toolName": "calculator", "result": 2},
        {"type": "tool_result", "callId": "k1", "toolName": "sql_query",
         "result": {"columns": ["name", "n"], "rows": rows, "rowCount": len(rows), "truncated": True}},
        {"type": "step", "step": "sql", "state": "started", "index": 3},
        {"type": "step", "step": "sql", "state": "finished", "index": 3, "sql": "SELECT 2 AS b", "connector": "demo",
         "columns": ["b"], "rows": [[2]], "rowCount": 1},
        {"type": "content", "delta": "Two"},
        {"type": "end", "messageId": "m-1", "finishReason": "stop",
         "usage": {"promptTokens": 5, "completionTokens": 3}},
    ]  # fmt: skip
    out = _json(response for event in events for response in encoder.encode(event))
    assert [next(iter(o)) for o in out] == ["cell", "preview", "cell", "preview", "text", "metadata"]
    assert out[0]["cell"] == {"id": "k1", "type": "CELL_TYPE_SQL", "code": "SELECT 1", "connector": "demo"}
    preview = out[1]["preview"]
    assert preview["cellId"] == "k1" and preview["columns"] == ["name", "n"] and preview["truncated"] is True
    assert len(preview["rows"]) == PREVIEW_ROWS and preview["rows"][1] == ["r1", 1] and preview["rowCount"] == 25
    assert out[2]["cell"]["id"] == "step-3" and out[2]["cell"]["code"] == "SELECT 2 AS b"
    assert out[3]["preview"] == {"cellId": "step-3", "columns": ["b"], "rows": [[2]], "rowCount": 1}
    assert out[4] == {"text": "Two"}
    last = out[5]["metadata"]
    assert last["status"] == "QUERY_STATUS_COMPLETED" and last["metadata"]["finish_reason"] == "stop"
    assert last["usage"] == {"promptTokens": 5, "completionTokens": 3, "totalTokens": 8}


def test_a_failed_query_previews_its_error_and_a_failed_reply_ends_failed():
    encoder = _encoder()
    call = {"type": "tool_call", "callId": "k", "toolName": "sql_query", "toolArgs": {"connector": "d", "query": "x"}}
    result = {"type": "tool_result", "callId": "k", "toolName": "sql_query", "result": None, "error": "Refused."}
    failed = {"type": "error", "error": "provider_error", "message": "The model failed.", "retryable": True}
    out = _json([*encoder.encode(call), *encoder.encode(result), *encoder.encode(failed)])
    assert out[1]["preview"] == {"cellId": "k", "error": "Refused."}
    last = out[2]["metadata"]
    assert last["status"] == "QUERY_STATUS_FAILED" and last["error"] == "The model failed."
    assert last["metadata"]["error_code"] == "provider_error"


def test_a_cancelled_reply_ends_cancelled():
    usage = {"promptTokens": 1, "completionTokens": 1}
    end = {"type": "end", "messageId": "m", "finishReason": "cancelled", "usage": usage}
    assert _json(_encoder().encode(end))[0]["metadata"]["status"] == "QUERY_STATUS_CANCELLED"


# --- Checking requests (start.py), in-process -------------------------------------------------------------


def _key(user, read_only: bool = False) -> str:
    return "Bearer " + actions.do_create_api_key(user, name="seed000", read_only=read_only)[1]


def _refused(code: Code, authorization: str, **request) -> str:
    body = StreamRequest.from_json(__import__("json").dumps(request)) if request else StreamRequest()
    with pytest.raises(ConnectError) as caught:
        start_reply(authorization, body)
    assert caught.value.code == code, caught.value.message
    return caught.value.message


@pytest.fixture
def connectors(db, alice, bob) -> tuple[Connector, Connector]:
    mine = Connector.objects.create(name="alices-db", description="Alice's sales.", url_env="ALICE_DB_URL")
    mine.users.add(alice)
    theirs = Connector.objects.create(name="bobs-db", url_env="BOB_DB_URL")
    theirs.users.add(bob)
    return mine, theirs


def test_no_key_or_a_bad_key_is_unauthenticated_and_a_read_only_key_is_permission_denied(alice, scripted_model):
    _refused(Code.UNAUTHENTICATED, "", question="Hi")
    _refused(Code.UNAUTHENTICATED, "Bearer cs_not-a-key", question="Hi")
    _refused(Code.PERMISSION_DENIED, _key(alice, read_only=True), question="Hi")
    assert not Chat.objects.exists()


def test_the_seeds_example_as_written_is_refused_naming_the_flags_chatsite_cannot_honour(alice, scripted_model):
    message = _refused(Code.INVALID_ARGUMENT, _key(alice), **SEED_EXAMPLE)
    assert "web_search_enabled" in message and "python_enabled" in message and "ontology" not in message
    for flag in ("ontology_enabled", "streamlit_enabled", "google_drive_enabled", "powerbi_enabled"):
        assert flag in _refused(Code.INVALID_ARGUMENT, _key(alice), question="Hi", tools={flag: True})
    assert not Chat.objects.exists()


@pytest.mark.parametrize(
    "request_body",
    [
        {},
        {"question": "   "},
        {"question": "Hi", "model": "no-such-model"},
        {"question": "Hi", "tools": {"connector_ids": [1]}},
    ],
)
def test_bad_requests_are_invalid_argument(alice, scripted_model, request_body):
    _refused(Code.INVALID_ARGUMENT, _key(alice), **request_body)
    assert not Message.objects.exists()


def test_bobs_chat_is_not_found_for_alice_like_an_unknown_one(alice, bob, bob_chat, scripted_model):
    key = _key(alice)
    mine = _refused(Code.NOT_FOUND, key, question="Hi", chat_id=str(bob_chat.id))
    assert str(bob_chat.id) in mine
    _refused(Code.NOT_FOUND, key, question="Hi", chat_id="00000000-0000-0000-0000-000000000000")
    _refused(Code.NOT_FOUND, key, question="Hi", chat_id="optional-chat-id")
    assert not bob_chat.messages.exists()
    with pytest.raises(ConnectError) as caught:
        reply_to_cancel(key, str(bob_chat.id), "")
    assert caught.value.code == Code.NOT_FOUND
    with pytest.raises(ConnectError) as caught:
        reply_to_cancel("", str(bob_chat.id), "")
    assert caught.value.code == Code.UNAUTHENTICATED


def test_connectors_are_those_the_caller_may_use(alice, scripted_model, connectors):
    mine, theirs = connectors
    key = _key(alice)
    assert "9999" in _refused(Code.NOT_FOUND, key, question="Hi", tools={"sql_enabled": True, "connector_ids": [9999]})
    # bob's connector reads as an unknown one.
    refused = _refused(Code.NOT_FOUND, key, question="Hi", tools={"sql_enabled": True, "connector_ids": [theirs.id]})
    assert "bobs-db" not in refused
    tools = ChatTools(sql_enabled=True, connector_ids=[mine.id])
    info = start_reply(key, StreamRequest(question="Sales?", tools=tools, model="scripted"))
    reply = Message.objects.get(id=info.message_id)
    assert reply.options["connectors"] == ["alices-db"] and reply.chat.source == Chat.Source.CONNECT_RPC
    steps = reply.options["steps"]
    assert steps[0]["type"] == "system_prompt" and "alices-db: Alice's sales." in steps[0]["text"]
    assert steps[-1]["type"] == "generate" and steps[-1]["tools"] == ["sql_query"]
    assert not info.is_continuation and info.chat_id == str(reply.chat_id) and info.model == "scripted"


def test_sql_enabled_without_any_granted_connector_is_permission_denied(bob, scripted_model):
    _refused(Code.PERMISSION_DENIED, _key(bob), question="Hi", tools={"sql_enabled": True})


def test_a_chat_with_a_reply_in_progress_is_failed_precondition_and_limits_are_resource_exhausted(
    alice, alice_chat, scripted_model, settings
):
    key = _key(alice)
    info = start_reply(key, StreamRequest(question="First", chat_id=str(alice_chat.id)))
    assert info.is_continuation and info.chat_id == str(alice_chat.id)
    _refused(Code.FAILED_PRECONDITION, key, question="Second", chat_id=str(alice_chat.id))
    settings.CHATSITE_MAX_CONCURRENT_REPLIES = 1
    assert "in progress" in _refused(Code.RESOURCE_EXHAUSTED, key, question="Elsewhere")
    # Cancel finds the chat's reply in progress; an unknown reply id is not_found.
    assert str(reply_to_cancel(key, str(alice_chat.id), "").id) == info.message_id
    with pytest.raises(ConnectError) as caught:
        reply_to_cancel(key, str(alice_chat.id), "00000000-0000-0000-0000-000000000000")
    assert caught.value.code == Code.NOT_FOUND


def test_the_status_enum_keeps_the_seeds_names():
    assert ChatStatus.QUERY_STATUS_IN_PROGRESS.value == 1 and ChatStatus.QUERY_STATUS_FAILED.value == 3
