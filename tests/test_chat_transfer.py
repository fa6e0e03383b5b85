"""Export and import of chats: chatsite's JSON (every branch) and Markdown (the shown branch) out; chatsite's own
JSON, ChatGPT's conversations.json and Open WebUI's export in (fixtures in tests/fixtures/, written from those
formats' real shapes). Nothing half-imported, nothing sent to a worker, nobody else's chats."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DatabaseError
from django.db.models import Manager

from chats.actions import running_reply
from chats.models import Chat, Message

FIXTURES = Path(__file__).parent / "fixtures"
T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
SOURCE = {
    "id": "17", "number": 1, "title": "Handbook", "snippet": "Forty-two is the answer.", "score": 0.91,
    "documentId": str(uuid.uuid4()), "collectionId": str(uuid.uuid4()), "page": 2, "start": 0, "end": 24,
}  # fmt: skip
TOOL_CALL = {"callId": "call_1", "toolName": "calculator", "toolArgs": {"expression": "6 * 7"}, "result": {"value": 42}}


def msg(chat, role, content, parent=None, minutes=0, **fields) -> Message:
    fields.setdefault("status", "completed")
    return Message.objects.create(
        chat=chat, role=role, content=content, parent=parent, created_at=T0 + timedelta(minutes=minutes), **fields
    )


@pytest.fixture
def arithmetic(alice) -> Chat:
    """A chat with branches: a regenerated reply (siblings), an edited question (a second root), a reply that
    called a tool and one with sources; its latest leaf is the cited reply."""
    chat = Chat.objects.create(owner=alice, title="Arithmetic", model_id="scripted", pinned=True)
    q1 = msg(chat, "user", "What is 6 times 7?")
    msg(chat, "assistant", "Forty-two, roughly.", q1, 1, model_id="scripted", finish_reason="stop")
    r1b = msg(
        chat, "assistant", "It is 42.", q1, 2, model_id="scripted", finish_reason="stop", prompt_tokens=30,
        completion_tokens=5, tool_calls=[TOOL_CALL], completed_at=T0 + timedelta(minutes=2, seconds=3),
    )  # fmt: skip
    edited = msg(chat, "user", "What is 6 x 7?", None, 3)
    msg(chat, "assistant", "", edited, 4, status="failed", error={"code": "provider_error", "message": "Boom."})
    q2 = msg(chat, "user", "Cite the handbook.", r1b, 5)
    msg(chat, "assistant", "See the handbook [1].", q2, 6, model_id="scripted", sources=[SOURCE], finish_reason="stop")
    return chat


def export(client, chat_id, fmt="json"):
    return client.get(f"/api/chats/{chat_id}/export", {"format": fmt})


def tree(chat: Chat) -> list[tuple]:
    """The chat's messages, oldest first, as what a user sees of them, parents named by position."""
    messages = list(chat.messages.order_by("created_at", "id"))
    position = {m.id: i for i, m in enumerate(messages)}
    return [
        (
            m.role, m.content, position.get(m.parent_id), m.tool_calls, m.sources, m.finish_reason, m.model_id,
            m.usage, m.created_at,
        )
        for m in messages
    ]  # fmt: skip


async def read_stream(response) -> bytes:
    """A streamed response's body, read as daphne reads it (the export streams from an async generator)."""
    return b"".join([chunk async for chunk in response])


def import_file(client, data: bytes | str, name: str = "chats.json"):
    raw = data.encode() if isinstance(data, str) else data
    return client.post(
        "/api/chats/import", {"file": SimpleUploadedFile(name, raw, "application/json")}, format="multipart"
    )


# --- Export ----------------------------------------------------------------------------------------------


def test_export_json_has_every_branch_and_everything_saved(alice_client, arithmetic):
    response = export(alice_client, arithmetic.id)
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response["Content-Disposition"].startswith('attachment; filename="chatsite-arithmetic-')
    document = json.loads(response.content)
    assert document["format"] == "chatsite" and document["version"] == 1 and document["exportedAt"]
    [chat] = document["chats"]
    assert chat["id"] == str(arithmetic.id) and chat["title"] == "Arithmetic"
    assert chat["pinned"] is True and chat["archived"] is False
    rows = {m.id: m for m in arithmetic.messages.all()}
    assert len(chat["messages"]) == len(rows) == 7
    for exported in chat["messages"]:
        saved = rows[uuid.UUID(exported["id"])]
        assert exported["parentId"] == (str(saved.parent_id) if saved.parent_id else None)
        assert (exported["role"], exported["content"], exported["status"]) == (saved.role, saved.content, saved.status)
        assert exported["toolCalls"] == saved.tool_calls and exported["sources"] == saved.sources
        assert exported["usage"] == saved.usage and exported["finishReason"] == saved.finish_reason
        assert datetime.fromisoformat(exported["createdAt"]) == saved.created_at
    called = next(m for m in chat["messages"] if m["toolCalls"])
    assert called["toolCalls"] == [TOOL_CALL] and called["usage"] == {"promptTokens": 30, "completionTokens": 5}
    assert next(m for m in chat["messages"] if m["status"] == "failed")["error"]["code"] == "provider_error"


def test_export_markdown_is_the_shown_branch(alice_client, arithmetic):
    response = export(alice_client, arithmetic.id, "markdown")
    assert response.status_code == 200 and response["Content-Type"] == "text/markdown; charset=utf-8"
    assert (
        response["Content-Disposition"].startswith("attachment;")
        and 'filename="chatsite-arithmetic-' in (response["Content-Disposition"])
    )
    text = response.content.decode()
    assert text.startswith("# Arithmetic\n")
    shown = ["What is 6 times 7?", "It is 42.", "Cite the handbook.", "See the handbook [1]."]
    positions = [text.index(line) for line in shown]
    assert positions == sorted(positions)
    assert "Forty-two, roughly." not in text and "6 x 7" not in text  # other branches
    assert "3 messages on other branches left out" in text
    assert "## You" in text and "## Assistant (scripted)" in text
    assert "Tool call `calculator`" in text and '"expression": "6 * 7"' in text and '"value": 42' in text
    assert "1. Handbook, p. 2" in text


def test_export_all_streams_every_chat_of_the_caller_only(alice_client, alice, arithmetic, bob_chat):
    Chat.objects.create(owner=alice, title="Empty chat")
    msg(bob_chat, "user", "bob secret message")
    response = alice_client.get("/api/chats/export", {"format": "json"})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"].startswith('attachment; filename="chatsite-chats-')
    document = json.loads(async_to_sync(read_stream)(response))
    assert document["format"] == "chatsite"
    assert {c["title"] for c in document["chats"]} == {"Arithmetic", "Empty chat"}
    assert "bob secret" not in json.dumps(document)
    assert len(next(c for c in document["chats"] if c["title"] == "Arithmetic")["messages"]) == 7


def test_export_formats_and_ownership(alice_client, bob_client, anon, arithmetic):
    assert export(bob_client, arithmetic.id).status_code == 403
    assert export(bob_client, arithmetic.id, "markdown").status_code == 403
    assert "Arithmetic" not in export(bob_client, arithmetic.id).content.decode()
    assert export(alice_client, uuid.uuid4()).status_code == 404
    assert export(anon, arithmetic.id).status_code == 401
    assert anon.get("/api/chats/export").status_code == 401
    bad = export(alice_client, arithmetic.id, "xml")
    assert bad.status_code == 400 and bad.json()["error"] == "unknown_format"
    bad = alice_client.get("/api/chats/export", {"format": "markdown"})
    assert bad.status_code == 400 and bad.json()["error"] == "unknown_format"


# --- Import ----------------------------------------------------------------------------------------------


@pytest.fixture
def no_worker(monkeypatch, django_capture_on_commit_callbacks):
    """Imports must never queue a reply: enqueueing fails the test, and no on-commit callback may be left."""

    def refuse(message_id, lane=None):
        raise AssertionError(f"an imported message was sent to a worker: {message_id}")

    monkeypatch.setattr("chats.actions.enqueue_reply", refuse)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        yield
    assert callbacks == []


def test_round_trip_export_then_import_gives_the_same_tree(alice_client, bob_client, bob, arithmetic, no_worker):
    exported = export(alice_client, arithmetic.id).content
    response = import_file(bob_client, exported)
    assert response.status_code == 201, response.content
    report = response.json()
    assert report["format"] == "chatsite" and report["skipped"] == []
    [entry] = report["imported"]
    assert entry["title"] == "Arithmetic" and entry["messages"] == 7
    copy = Chat.objects.get(id=entry["chatId"])
    assert copy.owner == bob and copy.id != arithmetic.id and copy.pinned is True
    assert tree(copy) == tree(arithmetic)  # roles, contents, parents, tool calls, sources, usage, times
    original_ids = set(arithmetic.messages.values_list("id", flat=True))
    assert original_ids.isdisjoint(copy.messages.values_list("id", flat=True))
    assert set(copy.messages.values_list("status", flat=True)) == {"completed"}
    assert running_reply(copy) is None  # nothing in progress: the chat takes a new message at once
    # Exported again, it is the same file but for the ids and statuses.
    again = json.loads(export(bob_client, copy.id).content)["chats"][0]["messages"]
    first = json.loads(exported)["chats"][0]["messages"]
    keep = ("role", "content", "toolCalls", "sources", "usage", "finishReason", "createdAt", "modelId")
    assert [{k: m[k] for k in keep} for m in again] == [{k: m[k] for k in keep} for m in first]


def test_import_chatgpt_conversations(alice_client, alice, no_worker):
    response = import_file(alice_client, (FIXTURES / "chatgpt_conversations.json").read_bytes(), "conversations.json")
    assert response.status_code == 201, response.content
    report = response.json()
    assert report["format"] == "chatgpt"
    assert [(c["title"], c["messages"]) for c in report["imported"]] == [("Packing for Skye", 5)]
    skipped = {(s["title"], s.get("messageId")): s["reason"] for s in report["skipped"]}
    assert skipped[("Hidden instructions only", None)] == "This chat has no messages with text to import."
    assert skipped[("Packing for Skye", "msg-system")] == "Hidden system message left out."
    assert skipped[("Packing for Skye", "msg-code")] == "Tool call to python left out."
    assert skipped[("Packing for Skye", "msg-tool")] == "Tool output (python) left out."
    image_note = skipped[("Packing for Skye", "msg-u2")]
    assert "image" in image_note and "text was imported" in image_note
    chat = Chat.objects.get(id=report["imported"][0]["chatId"])
    assert chat.owner == alice and chat.model_id == "gpt-4o"
    assert chat.created_at == datetime.fromtimestamp(1717000000.123, tz=UTC)
    by_content = {m.content: m for m in chat.messages.all()}
    u1 = by_content["What should I pack for a week on Skye?"]
    a1, a1b = by_content["Waterproofs, warm layers and midge repellent."], by_content["A rain jacket and good boots."]
    u2, a2 = by_content["Is this jacket warm enough?"], by_content["Yes, with a fleece underneath it."]
    assert u1.parent is None and a1.parent == u1 and a1b.parent == u1  # a regenerated reply: siblings
    assert u2.parent == a1 and a2.parent == u2  # the tool traffic between them left out, the tree kept
    assert (a1.finish_reason, a1b.finish_reason, a1.model_id) == ("stop", "length", "gpt-4o")
    assert a2.created_at == datetime.fromtimestamp(1717000120, tz=UTC)
    assert {m.status for m in chat.messages.all()} == {"completed"}


def test_import_open_webui_chats(alice_client, no_worker):
    response = import_file(alice_client, (FIXTURES / "openwebui_chats.json").read_bytes())
    assert response.status_code == 201, response.content
    report = response.json()
    assert report["format"] == "open-webui"
    assert [(c["title"], c["messages"]) for c in report["imported"]] == [("Sourdough help", 5)]
    reasons = {(s["title"], s.get("messageId")): s["reason"] for s in report["skipped"]}
    assert reasons[("Only a system prompt", None)] == "This chat has no messages with text to import."
    assert reasons[("Sourdough help", "m-3")] == "Attached images or files left out; the text was imported."
    chat = Chat.objects.get(id=report["imported"][0]["chatId"])
    assert chat.pinned is True and chat.model_id == "llama3.1:8b"
    by_content = {m.content: m for m in chat.messages.all()}
    question = by_content["Why is my sourdough flat?"]
    weak, longer = by_content["Your starter may be too weak."], by_content["Try a longer bulk ferment."]
    assert weak.parent == question and longer.parent == question
    assert by_content["The crumb looks dense: proof it longer."].parent == by_content["Here is a photo of the crumb."]
    assert weak.usage == {"promptTokens": 20, "completionTokens": 7} and weak.model_id == "llama3.1:8b"
    assert question.created_at == datetime.fromtimestamp(1717100000, tz=UTC)


def test_import_takes_the_json_as_the_body_too(alice_client, no_worker):
    body = (FIXTURES / "openwebui_chats.json").read_text()
    response = alice_client.post("/api/chats/import", body, content_type="application/json")
    assert response.status_code == 201 and response.json()["imported"][0]["title"] == "Sourdough help"


def chatsite_file(*chats) -> str:
    return json.dumps({"format": "chatsite", "version": 1, "chats": list(chats)})


def one_chat(title="Fine", content="Hello there", **extra) -> dict:
    message = {"id": "m1", "parentId": None, "role": "user", "content": content, "status": "completed"}
    return {"title": title, "messages": [message], **extra}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"this is not json", "not_json"),
        (b"\xff\xfe\x00garbage", "not_utf8"),
        (b'{"hello": "world"}', "unknown_format"),
        (b'[{"some": "list"}]', "unknown_format"),
        (b'{"format": "chatsite", "version": 2, "chats": []}', "unknown_format"),
        (b"[]", "no_chats"),
        (b'{"format": "chatsite", "version": 1, "chats": []}', "no_chats"),
        (b"[" * 100_000 + b"]" * 100_000, "not_json"),
    ],
)
def test_bad_files_are_400_and_write_nothing(alice_client, alice_chat, payload, code):
    before = (Chat.objects.count(), Message.objects.count())
    response = import_file(alice_client, payload)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == code and response.json()["message"]
    assert (Chat.objects.count(), Message.objects.count()) == before


def test_limits_on_size_and_chats_per_file(alice_client, alice_chat, settings):
    settings.CHATSITE_IMPORT_MAX_CHATS = 2
    response = import_file(alice_client, chatsite_file(one_chat(), one_chat(), one_chat()))
    assert response.status_code == 400 and response.json()["error"] == "too_many_chats"
    settings.CHATSITE_IMPORT_MAX_BYTES = 100
    big = chatsite_file(one_chat(content="x" * 200))
    assert import_file(alice_client, big).json()["error"] == "file_too_large"
    response = alice_client.post("/api/chats/import", big, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"] == "file_too_large"
    response = alice_client.post("/api/chats/import", {"other": "field"}, format="multipart")
    assert response.status_code == 400 and response.json()["error"] == "no_file"
    assert Chat.objects.count() == 1


def test_a_bad_chat_is_skipped_whole_and_the_others_are_imported(alice_client, alice, settings, no_worker):
    settings.CHATSITE_IMPORT_MAX_MESSAGE_CHARS = 50
    settings.CHATSITE_IMPORT_MAX_MESSAGES = 3
    many = {"title": "Too many", "messages": [{**one_chat()["messages"][0], "id": f"m{i}"} for i in range(4)]}
    payload = chatsite_file(
        one_chat("Good"),
        one_chat("Too long", content="y" * 51),
        {"title": "No list", "messages": "nope"},
        many,
        "not a chat",
    )
    report = import_file(alice_client, payload).json()
    assert [c["title"] for c in report["imported"]] == ["Good"]
    assert [(s["index"], s["title"]) for s in report["skipped"]] == [
        (1, "Too long"), (2, "No list"), (3, "Too many"), (4, ""),
    ]  # fmt: skip
    assert "51 characters" in report["skipped"][0]["reason"] and "at most 3" in report["skipped"][2]["reason"]
    assert list(Chat.objects.filter(owner=alice).values_list("title", flat=True)) == ["Good"]
    assert Message.objects.filter(chat__owner=alice).count() == 1


def test_a_chat_whose_write_fails_leaves_nothing_behind(alice_client, alice, monkeypatch, no_worker):
    calls = []
    real = Manager.bulk_create

    def flaky(self, objs, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise DatabaseError("disk full")
        return real(self, objs, *args, **kwargs)

    monkeypatch.setattr(Manager, "bulk_create", flaky)
    report = import_file(alice_client, chatsite_file(one_chat("First"), one_chat("Second"), one_chat("Third"))).json()
    assert [c["title"] for c in report["imported"]] == ["First", "Third"]
    assert report["skipped"] == [{"index": 1, "title": "Second", "reason": "This chat could not be saved."}]
    assert sorted(Chat.objects.filter(owner=alice).values_list("title", flat=True)) == ["First", "Third"]
    assert Message.objects.filter(chat__owner=alice).count() == 2


def test_ids_in_a_file_are_never_database_ids(alice_client, alice, bob, bob_chat, no_worker):
    bobs = msg(bob_chat, "user", "bob secret message")
    hostile = {
        "id": str(bob_chat.id),
        "title": "Hijack",
        "messages": [
            {"id": str(bobs.id), "parentId": None, "role": "user", "content": "mine now", "status": "streaming"},
            {"id": "x", "parentId": str(bobs.id), "role": "assistant", "content": "ok", "status": "queued",
             "attachments": [str(uuid.uuid4())]},
            {"id": "loop-a", "parentId": "loop-b", "role": "user", "content": "a"},
            {"id": "loop-b", "parentId": "loop-a", "role": "user", "content": "b"},
            {"id": "y", "parentId": None, "role": "wizard", "content": "abracadabra"},
        ],
    }  # fmt: skip
    report = import_file(alice_client, chatsite_file(hostile)).json()
    [entry] = report["imported"]
    chat = Chat.objects.get(id=entry["chatId"])
    assert chat.id != bob_chat.id and chat.owner == alice and entry["messages"] == 2
    assert Message.objects.get(id=bobs.id).chat_id == bob_chat.id and bob_chat.messages.count() == 1
    mine = list(chat.messages.order_by("created_at"))
    assert [m.content for m in mine] == ["mine now", "ok"] and mine[1].parent_id == mine[0].id
    assert bobs.id not in {m.id for m in mine} and {m.status for m in mine} == {"completed"}
    assert mine[1].attachments == []
    reasons = {s.get("messageId"): s["reason"] for s in report["skipped"]}
    assert "Attached documents left out" in reasons["x"] and reasons["y"] == "Unknown role 'wizard'; left out."
    assert reasons["loop-a"] == reasons["loop-b"] == "Part of a loop of parents; left out."
    assert alice_client.get(f"/api/chats/{chat.id}").status_code == 200
    assert import_file(alice_client, chatsite_file(hostile)).json()["imported"][0]["chatId"] != str(chat.id)


def test_importing_needs_a_session_and_gives_the_caller_the_chats(anon, bob_client, alice_client, no_worker):
    assert import_file(anon, chatsite_file(one_chat())).status_code == 401
    chat_id = import_file(alice_client, chatsite_file(one_chat("Alice's import"))).json()["imported"][0]["chatId"]
    assert bob_client.get(f"/api/chats/{chat_id}").status_code == 403
    assert "Alice's import" not in json.dumps(bob_client.get("/api/chats").json())


def test_text_the_database_cannot_hold_is_cleaned(alice_client, no_worker):
    bad = one_chat("Nul\u0000title", content="a\u0000b \ud800 c")
    bad["messages"][0]["toolCalls"] = [{"callId": "c\u0000", "toolName": "t", "toolArgs": {"k\u0000": "v\u0000"}}]
    bad["messages"][0]["sources"] = [{"title": "s\u0000"}, "not a source"]
    report = import_file(alice_client, chatsite_file(bad).encode()).json()
    message = Message.objects.get(chat_id=report["imported"][0]["chatId"])
    assert message.content == "ab ? c" and message.chat.title == "Nultitle"
    assert message.tool_calls == [{"callId": "c", "toolName": "t", "toolArgs": {"k": "v"}, "result": None}]
    assert message.sources == [{"title": "s"}]
