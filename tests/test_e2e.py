"""End to end, in both modes: a real daphne server with a Celery worker and beat and Redis (full mode), or daphne
alone with no Redis (embedded mode); real PostgreSQL and the real SmolLM2 model. A client logs in over HTTP and
reads the SSE stream with httpx-sse: the API contract is the same in both modes."""

import time
import uuid
from datetime import UTC, datetime

import pytest

from chats.models import Chat, Message
from tests.live import entry_key, new_chat, read_sse, send

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_real_model_reply_streams_token_by_token(contract_session, carol, smollm2):
    smollm2.default_max_tokens = 80
    smollm2.save()
    client, token = contract_session
    chat_id = new_chat(client, token)
    posted = time.time()
    received = send(client, token, chat_id, carol, "Write a short poem about the sea.", "smollm2-135m")

    assert received.status == 200
    assert received.headers["content-type"].startswith("text/event-stream")
    assert received.headers["cache-control"] == "no-cache"
    assert received.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in received.headers

    types = received.types
    assert types[0] == "start" and types[-1] == "end", types
    assert set(types[1:-1]) == {"content"} and len(types) > 5, types
    assert all(received.ids) and received.ids == sorted(received.ids, key=entry_key)
    assert len(set(received.ids)) == len(received.ids)

    message = Message.objects.get(id=received.events[0]["messageId"])
    assert received.text and message.content == received.text
    assert message.status == "completed" and message.chat_id == uuid.UUID(chat_id)
    end = received.events[-1]
    assert end["usage"] == message.usage and message.prompt_tokens > 10 and message.completion_tokens > 0
    assert end["finishReason"] == message.finish_reason in ("stop", "length")

    # It streams: the first token reached the client before the worker finished the reply.
    first_content = received.arrived[types.index("content")]
    assert first_content < message.completed_at.timestamp(), "the first token arrived only after the reply was done"
    tokens = message.completion_tokens
    seconds = (message.completed_at - message.started_at).total_seconds()
    print(
        f"\nSmolLM2 through the whole path: first token {first_content - posted:.3f} s after the POST, "
        f"{tokens} tokens in {seconds:.2f} s = {tokens / seconds:.1f} tokens/s, {types.count('content')} events"
    )


def test_a_scripted_reply_arrives_piece_by_piece_while_it_is_generated(contract_session, carol, scripted_model):
    scripted_model.options = {"script": ["one", " two", " three", " four"], "delay": 0.3}
    scripted_model.save()
    client, token = contract_session
    received = send(client, token, new_chat(client, token), carol, "count")
    assert [e.get("delta") for e in received.events[1:-1]] == ["one", " two", " three", " four"]
    gaps = [b - a for a, b in zip(received.arrived[1:-1], received.arrived[2:-1], strict=False)]
    assert min(gaps) > 0.15, f"deltas arrived together, not as generated: {gaps}"
    assert received.events[0]["userMessageId"] == str(Message.objects.get(role="user", chat__owner=carol).id)


def test_a_provider_failure_reaches_the_client_as_one_error_event(contract_session, carol, scripted_model):
    scripted_model.options = {"script": ["a", "b", "c"], "fail_after": 1}
    scripted_model.save()
    client, token = contract_session
    received = send(client, token, new_chat(client, token), carol)
    assert received.types == ["start", "content", "error"]
    assert received.events[-1]["error"] == "provider_error" and received.events[-1]["retryable"] is True
    message = Message.objects.get(id=received.events[0]["messageId"])
    assert message.status == "failed" and message.content == "a"


def test_a_client_that_disconnects_does_not_stop_the_generation(contract_session, carol, scripted_model):
    script = [f" {i}" for i in range(15)]
    scripted_model.options = {"script": script, "delay": 0.1}
    scripted_model.save()
    client, token = contract_session
    chat_id = new_chat(client, token)
    received = send(client, token, chat_id, carol, "count", stop_after=2)
    message_id = received.events[0]["messageId"]
    deadline = time.monotonic() + 30
    while Message.objects.get(id=message_id).status != "completed" and time.monotonic() < deadline:
        time.sleep(0.1)
    message = Message.objects.get(id=message_id)
    assert message.status == "completed" and message.content == "".join(script)
    assert Chat.objects.get(id=chat_id).messages.count() == 2


def test_the_message_list_shows_the_finished_reply(contract_session, carol, scripted_model):
    client, token = contract_session
    chat_id = new_chat(client, token)
    send(client, token, chat_id, carol)
    messages = client.get(f"/api/chats/{chat_id}/messages").json()["results"]
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "Hi!", "completed"),
        ("assistant", "Hello, world!", "completed"),
    ]
    assert messages[1]["usage"] == {"promptTokens": 1, "completionTokens": 4}
    assert datetime.fromisoformat(messages[1]["completedAt"]) <= datetime.now(UTC)


def test_the_sql_analyst_workflow_streams_its_steps_and_a_summary_from_smollm2(
    contract_session, carol, smollm2, sql_analyst
):
    client, token = contract_session
    chat_id = new_chat(client, token)
    body = {
        "content": "Which product sold the most?",
        "modelId": "smollm2-135m",
        "userId": str(carol.id),
        "workflowId": str(sql_analyst.id),
    }
    received = read_sse(client, "POST", f"/api/chats/{chat_id}/messages/stream", token=token, json=body)
    steps = [(e["step"], e["state"]) for e in received.events if e["type"] == "step"]
    assert steps == [
        ("system_prompt", "started"), ("system_prompt", "finished"),
        ("rewrite_query", "started"), ("rewrite_query", "finished"),
        ("sql", "started"), ("sql", "finished"),
        ("generate", "started"), ("generate", "finished"),
    ]  # fmt: skip
    sql_done = next(
        e for e in received.events if e["type"] == "step" and e["step"] == "sql" and e["state"] == "finished"
    )
    assert sql_done["rowCount"] == 16
    assert received.types[-1] == "end" and received.text.strip()
    assert received.events[0]["workflowId"] == str(sql_analyst.id)
