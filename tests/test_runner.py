"""The reply runner and the event bus, with the scripted provider and real Redis and PostgreSQL."""

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from chats import actions
from chats.events import EventPublisher, request_cancel, stream_key, sync_redis
from chats.models import Message
from chats.streaming import CONNECTED, relay
from pipelines.models import Workflow
from pipelines.providers.base import GenerationError
from pipelines.providers.scripted import ScriptedProvider
from pipelines.runner import branch_history, build_prompt, run_reply


def stream_events(message_id) -> list[tuple[str, dict]]:
    entries = sync_redis().xrange(stream_key(str(message_id)))
    return [(entry_id, json.loads(fields["data"])) for entry_id, fields in entries]


def send(chat, model, content="Hi there", workflow=None) -> Message:
    _, reply, _ = actions.do_send_message(chat.owner, chat, content=content, model=model, workflow=workflow)
    return reply


def test_a_reply_streams_start_content_end_and_is_saved_once(alice_chat, scripted_model):
    reply = send(alice_chat, scripted_model)
    assert reply.status == "queued"

    with CaptureQueriesContext(connection) as queries:
        assert run_reply(str(reply.id)) == "completed"
    writes = [q["sql"] for q in queries if q["sql"].split()[0] in ("INSERT", "UPDATE", "DELETE")]
    assert len(writes) == 2, writes  # the claim and the final save, whatever the number of tokens

    events = stream_events(reply.id)
    types = [e["type"] for _, e in events]
    assert types == ["start", "content", "content", "content", "content", "end"]
    ids = [entry_id for entry_id, _ in events]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == len(ids)
    start, end = events[0][1], events[-1][1]
    assert start == {
        "type": "start",
        "messageId": str(reply.id),
        "chatId": str(alice_chat.id),
        "userMessageId": str(reply.parent_id),
        "model": "scripted",
        "workflowId": None,
    }
    assert end["finishReason"] == "stop" and end["messageId"] == str(reply.id)

    reply.refresh_from_db()
    assert reply.content == "".join(e["delta"] for _, e in events if e["type"] == "content") == "Hello, world!"
    assert reply.status == "completed" and reply.finish_reason == "stop"
    assert end["usage"] == reply.usage == {"promptTokens": 2, "completionTokens": 4}
    assert 0 < sync_redis().ttl(stream_key(str(reply.id))) <= 3600


def test_a_second_delivery_of_the_same_reply_does_nothing(alice_chat, scripted_model):
    reply = send(alice_chat, scripted_model)
    assert run_reply(str(reply.id)) == "completed"
    assert run_reply(str(reply.id)) is None
    assert [e["type"] for _, e in stream_events(reply.id)].count("start") == 1


def test_a_provider_error_ends_in_one_error_event_and_keeps_the_partial_reply(alice_chat, scripted_model):
    scripted_model.options = {"script": ["one", " two", " three"], "fail_after": 2}
    scripted_model.save()
    reply = send(alice_chat, scripted_model)
    assert run_reply(str(reply.id)) == "failed"
    events = [e for _, e in stream_events(reply.id)]
    assert [e["type"] for e in events] == ["start", "content", "content", "error"]
    assert events[-1] == {
        "type": "error",
        "error": "provider_error",
        "message": "The scripted provider failed on purpose.",
        "retryable": True,
    }
    reply.refresh_from_db()
    assert reply.status == "failed" and reply.content == "one two"
    assert reply.error == {
        "code": "provider_error",
        "message": "The scripted provider failed on purpose.",
        "retryable": True,
    }


def test_an_unexpected_exception_is_an_internal_error_without_a_stack_trace(alice_chat, scripted_model):
    scripted_model.options = {"crash_after": 1}
    scripted_model.save()
    reply = send(alice_chat, scripted_model)
    assert run_reply(str(reply.id)) == "failed"
    error = stream_events(reply.id)[-1][1]
    assert error["type"] == "error" and error["error"] == "internal_error"
    assert "Traceback" not in error["message"] and "scripted crash" not in error["message"]


def test_a_model_disabled_after_the_send_fails_with_model_unavailable(alice_chat, scripted_model):
    reply = send(alice_chat, scripted_model)
    scripted_model.is_active = False
    scripted_model.save()
    assert run_reply(str(reply.id)) == "failed"
    assert stream_events(reply.id)[-1][1]["error"] == "model_unavailable"


def test_max_tokens_cuts_the_reply_with_finish_reason_length(alice_chat, scripted_model):
    scripted_model.default_max_tokens = 2
    scripted_model.save()
    reply = send(alice_chat, scripted_model)
    run_reply(str(reply.id))
    reply.refresh_from_db()
    assert reply.content == "Hello," and reply.finish_reason == "length"
    assert stream_events(reply.id)[-1][1]["finishReason"] == "length"


def test_the_prompt_carries_the_workflow_system_prompt_and_the_earlier_turns(alice, alice_chat, scripted_model):
    first = send(alice_chat, scripted_model, content="first question")
    run_reply(str(first.id))
    workflow = Workflow.objects.create(owner=alice, name="Pirate", system_prompt="Talk like a pirate.")
    second = send(alice_chat, scripted_model, content="second question", workflow=workflow)
    history = branch_history(second)
    assert [(m.role, m.content) for m in history] == [
        ("user", "first question"),
        ("assistant", "Hello, world!"),
        ("user", "second question"),
    ]
    prompt = build_prompt(
        workflow.system_prompt, history, ScriptedProvider(scripted_model), context_window=1000, max_tokens=100
    )
    assert prompt[0] == {"role": "system", "content": "Talk like a pirate."}
    assert [m["content"] for m in prompt[1:]] == ["first question", "Hello, world!", "second question"]


def test_the_prompt_follows_only_its_own_branch(alice_chat, scripted_model):
    first = send(alice_chat, scripted_model)
    run_reply(str(first.id))
    # An earlier sibling reply to the same question (as regenerate leaves behind) is another branch.
    sibling = Message.objects.create(
        chat=alice_chat,
        role="assistant",
        content="other branch",
        parent=first.parent,
        created_at=first.created_at - timedelta(milliseconds=1),
    )
    follow_up = send(alice_chat, scripted_model, content="follow-up")
    contents = [m.content for m in branch_history(follow_up)]
    assert contents == ["Hi there", "Hello, world!", "follow-up"]
    assert sibling.content not in contents


def test_old_turns_are_dropped_to_fit_the_context_window(alice_chat, scripted_model):
    turns = [Message(role="user", content="word " * 30), Message(role="assistant", content="word " * 30)]
    turns.append(Message(role="user", content="newest question"))
    provider = ScriptedProvider(scripted_model)
    # 30 words + 8 overhead per old turn; a 60-token budget holds the newest turn and one old turn only.
    prompt = build_prompt("", turns, provider, context_window=110, max_tokens=50)
    assert [m["content"] for m in prompt] == ["word " * 30, "newest question"]


def test_a_message_too_long_for_the_window_fails_clearly(scripted_model):
    provider = ScriptedProvider(scripted_model)
    with pytest.raises(GenerationError) as error:
        build_prompt("", [Message(role="user", content="word " * 200)], provider, context_window=100, max_tokens=50)
    assert error.value.code == "prompt_too_long"


def test_send_writes_both_rows_and_enqueues_only_after_commit(
    alice_chat, scripted_model, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        question, reply, created = actions.do_send_message(
            alice_chat.owner, alice_chat, content="Explain quantum computing", model=scripted_model, workflow=None
        )
    assert len(callbacks) == 1 and created
    assert reply.parent_id == question.id and reply.status == "queued" and question.status == "completed"
    assert list(alice_chat.messages.order_by("created_at")) == [question, reply]
    alice_chat.refresh_from_db()
    assert alice_chat.title == "Alice's chat" and alice_chat.model_id == "scripted"


def test_a_chat_without_a_title_is_named_after_its_first_message(alice, scripted_model):
    chat = actions.do_create_chat(alice)
    send(chat, scripted_model, content="  How do   tides work?\nThanks")
    chat.refresh_from_db()
    assert chat.title == "How do tides work? Thanks"


def collect(message_id: str, last_id: str = "0-0", limit: int = 50) -> list[bytes]:
    """The SSE messages (events and comments, each ending in a blank line) that the relay writes, one item
    each, whether they went out in one write or several."""

    async def run() -> list[bytes]:
        chunks = []
        async for chunk in relay(message_id, last_id):
            if chunk == CONNECTED:
                continue
            chunks += [part + b"\n\n" for part in chunk.split(b"\n\n")[:-1]]
            if len(chunks) >= limit:
                break
        # The relay's database checks ran on asgiref's worker thread: close that connection, or it would
        # keep the test database open.
        await sync_to_async(connections.close_all)()
        return chunks

    return asyncio.run(run())


def test_the_relay_writes_sse_with_ids_and_stops_after_the_terminal_event(alice_chat, scripted_model):
    reply = send(alice_chat, scripted_model)
    run_reply(str(reply.id))
    chunks = collect(str(reply.id))
    assert len(chunks) == 6
    entries = stream_events(reply.id)
    for chunk, (entry_id, event) in zip(chunks, entries, strict=True):
        text = chunk.decode()
        assert text.endswith("\n\n")
        id_line, data_line = text.strip().split("\n")
        assert id_line == f"id: {entry_id}"
        assert json.loads(data_line.removeprefix("data: ")) == event


def test_the_relay_resumes_after_a_given_id(alice_chat, scripted_model):
    reply = send(alice_chat, scripted_model)
    run_reply(str(reply.id))
    entries = stream_events(reply.id)
    chunks = collect(str(reply.id), last_id=entries[2][0])
    assert [c.decode().split("\n")[0] for c in chunks] == [f"id: {e[0]}" for e in entries[3:]]


def test_the_relay_pings_while_nothing_happens(settings, alice_chat, scripted_model):
    settings.CHATSITE_SSE_PING_SECONDS = 0.05
    reply = send(alice_chat, scripted_model)  # queued, never run: the stream stays silent
    chunks = collect(str(reply.id), limit=3)
    assert chunks == [b": ping\n\n"] * 3


def test_events_published_before_the_reader_attached_are_not_lost(alice_chat, scripted_model):
    reply = send(alice_chat, scripted_model)
    publisher = EventPublisher()
    run_reply(str(reply.id), publisher)  # everything is published first
    text = b"".join(collect(str(reply.id))).decode()
    assert text.count("data: ") == 6 and '"type":"start"' in text and '"type":"end"' in text


def test_the_relay_sends_a_comment_first_so_headers_leave_before_the_first_event(settings, alice_chat, scripted_model):
    settings.CHATSITE_SSE_PING_SECONDS = 0.05
    reply = send(alice_chat, scripted_model)  # queued: no event will come

    async def first_chunk() -> bytes:
        async for chunk in relay(str(reply.id)):
            return chunk
        return b""

    assert asyncio.run(first_chunk()) == CONNECTED


def test_deltas_within_the_batch_window_go_out_after_the_first_as_one_event(settings, alice_chat, scripted_model):
    settings.CHATSITE_DELTA_BATCH_MS = 60_000  # milliseconds: every delta after the first falls in the window
    reply = send(alice_chat, scripted_model)
    assert run_reply(str(reply.id)) == "completed"
    entries = stream_events(reply.id)
    assert [(e["type"], e.get("delta")) for _, e in entries] == [
        ("start", None),
        ("content", "Hello"),
        ("content", ", world!"),
        ("end", None),
    ]
    ids = [entry_id for entry_id, _ in entries]
    assert sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) == ids and len(set(ids)) == len(ids)
    reply.refresh_from_db()
    assert reply.content == "Hello, world!"
    # A stream resumed after the first delta replays exactly the rest of what was saved.
    resumed = b"".join(collect(str(reply.id), last_id=ids[1])).decode()
    deltas = [json.loads(line[6:]).get("delta", "") for line in resumed.splitlines() if line.startswith("data: ")]
    assert "Hello" + "".join(deltas) == reply.content


def test_pending_deltas_are_published_before_an_error_event(settings, alice_chat, scripted_model):
    settings.CHATSITE_DELTA_BATCH_MS = 60_000  # milliseconds
    scripted_model.options = {"script": ["one", " two", " three"], "fail_after": 2}
    scripted_model.save()
    reply = send(alice_chat, scripted_model)
    assert run_reply(str(reply.id)) == "failed"
    events = [e for _, e in stream_events(reply.id)]
    assert [(e["type"], e.get("delta")) for e in events] == [
        ("start", None),
        ("content", "one"),
        ("content", " two"),
        ("error", None),
    ]
    reply.refresh_from_db()
    assert reply.content == "one two"


def test_a_cancel_is_noticed_on_a_batched_publish_and_the_saved_text_is_what_was_streamed(
    settings, alice_chat, scripted_model
):
    settings.CHATSITE_DELTA_BATCH_MS = 60_000  # milliseconds

    class CancelAfterFirstContent(EventPublisher):
        def publish(self, message_id, event):
            published = super().publish(message_id, event)
            if event["type"] == "content":
                request_cancel(message_id)
            return published

    reply = send(alice_chat, scripted_model)
    assert run_reply(str(reply.id), CancelAfterFirstContent()) == "cancelled"
    events = [e for _, e in stream_events(reply.id)]
    assert [e["type"] for e in events] == ["start", "content", "content", "end"]
    assert events[-1]["finishReason"] == "cancelled"
    reply.refresh_from_db()
    assert reply.status == "cancelled"
    assert reply.content == "".join(e["delta"] for e in events if e["type"] == "content") == "Hello, world!"


def test_an_idle_relay_asks_the_database_only_when_no_worker_heartbeat_is_alive(
    settings, alice_chat, scripted_model, monkeypatch
):
    from chats import streaming
    from chats.events import bus, heartbeat_key

    settings.CHATSITE_SSE_PING_SECONDS = 0.05
    asked = []

    async def saved_terminal(message_id):
        asked.append(message_id)
        return None

    monkeypatch.setattr(streaming, "_saved_terminal", saved_terminal)
    reply = send(alice_chat, scripted_model)  # queued, never run: the stream stays silent
    bus().set_flag(heartbeat_key(str(reply.id)), "1", 30)  # as a worker generating it would
    assert collect(str(reply.id), limit=3) == [b": ping\n\n"] * 3
    assert asked == []
    bus().delete(heartbeat_key(str(reply.id)))  # the worker is gone: the database may know how it ended
    assert collect(str(reply.id), limit=3) == [b": ping\n\n"] * 3
    assert len(asked) >= 2
