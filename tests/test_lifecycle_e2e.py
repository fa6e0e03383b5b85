"""Streams that survive, on the live stack: resume, watch from another tab, stop, idempotent send, one reply
per chat, regenerate (in both modes), and, in full mode, replies whose worker dies before or after content went
out, the watchdog, expired streams and time limits."""

import json
import os
import signal
import time
from datetime import timedelta

import psycopg
import pytest
from django.utils import timezone

from chats.event_schema import start_event
from chats.models import Chat, Message
from pipelines.models import Workflow
from tests.conftest import E2E_PASSWORD
from tests.live import entry_key, login, new_chat, read_sse, resume, send

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def slow(model, count: int = 20, delay: float = 0.05, **options) -> list[str]:
    script = [f" w{i}" for i in range(count)]
    model.options = {"script": script, "delay": delay, **options}
    model.save()
    return script


def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def assert_exactly_once_in_order(ids: list[str]) -> None:
    keys = [entry_key(i) for i in ids]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), ids


def test_resume_after_a_disconnect_sees_every_event_once_in_order(contract_session, carol, scripted_model):
    script = slow(scripted_model)
    client, token = contract_session
    chat_id = new_chat(client, token)
    first = send(client, token, chat_id, carol, stop_after=4)
    message_id = first.events[0]["messageId"]
    rest = resume(client, chat_id, message_id, first.ids[-1])
    assert rest.status == 200
    assert_exactly_once_in_order(first.ids + rest.ids)
    assert (first.types + rest.types).count("start") == 1 and rest.types[-1] == "end"
    assert first.text + rest.text == "".join(script) == Message.objects.get(id=message_id).content


def test_resume_with_the_last_event_id_query_parameter(contract_session, carol, scripted_model):
    slow(scripted_model, count=10)
    client, token = contract_session
    chat_id = new_chat(client, token)
    first = send(client, token, chat_id, carol, stop_after=3)
    message_id = first.events[0]["messageId"]
    rest = read_sse(client, "GET", f"/api/chats/{chat_id}/messages/{message_id}/stream?lastEventId={first.ids[-1]}")
    assert_exactly_once_in_order(first.ids + rest.ids)
    assert first.text + rest.text == Message.objects.get(id=message_id).content


def test_another_tab_attaches_to_a_running_reply_and_sees_the_same_events(
    contract_stack, contract_session, carol, scripted_model
):
    slow(scripted_model, count=20, delay=0.05)
    client, token = contract_session
    chat_id = new_chat(client, token)
    started = send(client, token, chat_id, carol, stop_after=1)
    message_id = started.events[0]["messageId"]
    other_tab, _ = login(contract_stack.base_url, carol.username, E2E_PASSWORD)
    watched = resume(other_tab, chat_id, message_id)
    assert Message.objects.get(id=message_id).completed_at is not None
    replayed = resume(client, chat_id, message_id)
    assert watched.ids == replayed.ids and watched.events == replayed.events
    assert watched.ids[0] == started.ids[0] and watched.types[-1] == "end"
    other_tab.close()


def test_an_expired_stream_is_answered_from_the_database(live_stack, session, carol, scripted_model):
    client, token = session
    chat_id = new_chat(client, token)
    done = send(client, token, chat_id, carol)
    message_id = done.events[0]["messageId"]
    live_stack.redis().delete(f"{live_stack.key_prefix}{message_id}")

    replay = resume(client, chat_id, message_id)
    assert replay.ids == ["0-1", "0-2", "0-3"]
    assert replay.types == ["start", "content", "end"]
    assert replay.events[1]["delta"] == "Hello, world!" and replay.events[2] == done.events[-1]
    assert resume(client, chat_id, message_id, "0-1").ids == ["0-2", "0-3"]
    expired = resume(client, chat_id, message_id, done.ids[2])
    assert expired.status == 400 and "expired" in json.loads(expired.body)["fields"]["lastEventId"][0]


@pytest.mark.parametrize("last_id", ["garbage", "12-", "99999999999999-0"])
def test_a_last_event_id_outside_the_stream_is_400(contract_session, carol, scripted_model, last_id):
    client, token = contract_session
    chat_id = new_chat(client, token)
    message_id = send(client, token, chat_id, carol).events[0]["messageId"]
    refused = resume(client, chat_id, message_id, last_id)
    assert refused.status == 400
    body = json.loads(refused.body)
    assert body["error"] == "invalid_last_event_id" and body["message"] and "lastEventId" in body["fields"]


def test_cancel_stops_the_reply_at_the_next_token_and_answers_with_the_saved_message(
    contract_session, carol, scripted_model
):
    script = slow(scripted_model, count=60, delay=0.1)
    client, token = contract_session
    chat_id = new_chat(client, token)
    first = send(client, token, chat_id, carol, stop_after=4)
    message_id = first.events[0]["messageId"]

    response = client.post(f"/api/chats/{chat_id}/messages/{message_id}/cancel", headers={"X-CSRFToken": token})
    assert response.status_code == 200, response.text
    saved = response.json()
    assert saved["status"] == "cancelled" and saved["finishReason"] == "cancelled"

    # The answer came after the end event was published and the row saved.
    rest = resume(client, chat_id, message_id, first.ids[-1])
    assert rest.types[-1] == "end" and rest.events[-1]["finishReason"] == "cancelled"
    assert rest.types.count("end") == 1 and set(rest.types[:-1]) <= {"content"}
    assert saved["content"] == first.text + rest.text
    assert len(saved["content"]) < len("".join(script))

    time.sleep(1)  # long enough for several more tokens, had generation gone on
    message = Message.objects.get(id=message_id)
    assert message.status == "cancelled" and message.content == saved["content"]
    whole = resume(client, chat_id, message_id)
    assert whole.types.count("end") == 1 and whole.types[-1] == "end" and whole.text == saved["content"]


def test_cancelling_a_finished_reply_is_409_and_a_second_cancel_is_harmless(contract_session, carol, scripted_model):
    client, token = contract_session
    chat_id = new_chat(client, token)
    done = send(client, token, chat_id, carol)
    message_id = done.events[0]["messageId"]
    url = f"/api/chats/{chat_id}/messages/{message_id}/cancel"
    refused = client.post(url, headers={"X-CSRFToken": token})
    assert refused.status_code == 409
    assert refused.json()["error"] == "reply_finished" and refused.json()["status"] == "completed"

    slow(scripted_model, count=40, delay=0.1)
    running = send(client, token, chat_id, carol, stop_after=2)
    url = f"/api/chats/{chat_id}/messages/{running.events[0]['messageId']}/cancel"
    first, second = client.post(url, headers={"X-CSRFToken": token}), client.post(url, headers={"X-CSRFToken": token})
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()


def test_cancelling_a_queued_reply_ends_it_before_any_worker_runs_it(
    one_slot_stack, one_slot_session, carol, scripted_model
):
    slow(scripted_model, count=30, delay=0.05)
    client, token = one_slot_session
    busy_chat, queued_chat = new_chat(client, token), new_chat(client, token)
    send(client, token, busy_chat, carol, stop_after=2)  # takes the lane's only slot
    with client.stream(
        "POST",
        f"/api/chats/{queued_chat}/messages/stream",
        json={"content": "later", "modelId": "scripted", "userId": str(carol.id)},
        headers={"X-CSRFToken": token},
    ) as response:
        assert response.status_code == 200
    queued = Message.objects.get(chat_id=queued_chat, role="assistant")
    assert queued.status == "queued"

    response = client.post(f"/api/chats/{queued_chat}/messages/{queued.id}/cancel", headers={"X-CSRFToken": token})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    stream = resume(client, queued_chat, str(queued.id))
    # It said it waited (one reply ahead of it holds the slot), then ended.
    assert stream.types == ["start", "queued", "end"] and stream.events[-1]["finishReason"] == "cancelled"
    assert stream.events[1] == {"type": "queued", "position": 0}

    wait_until(lambda: Message.objects.get(chat_id=busy_chat, role="assistant").status == "completed")
    time.sleep(1)  # the queued task has run by now, and found nothing to do
    queued.refresh_from_db()
    assert queued.status == "cancelled" and queued.content == ""
    assert one_slot_stack.redis().xlen(f"{one_slot_stack.key_prefix}{queued.id}") == 3


def test_the_same_idempotency_key_returns_the_same_reply_and_generates_it_once(contract_session, carol, scripted_model):
    script = slow(scripted_model, count=10)
    client, token = contract_session
    chat_id = new_chat(client, token)
    key = {"Idempotency-Key": "send-42"}
    first = send(client, token, chat_id, carol, "Hello?", headers=key, stop_after=2)
    again = send(client, token, chat_id, carol, "Hello?", headers=key)
    assert again.status == 200
    assert again.events[0] == first.events[0] and again.ids[:2] == first.ids
    assert again.types[-1] == "end" and again.text == "".join(script)
    assert Chat.objects.get(id=chat_id).messages.count() == 2

    reused = send(client, token, chat_id, carol, "Something else", headers=key)
    assert reused.status == 409 and json.loads(reused.body)["error"] == "idempotency_key_reused"
    assert Chat.objects.get(id=chat_id).messages.count() == 2


def test_a_send_while_a_reply_is_running_is_409_with_the_running_reply(contract_session, carol, scripted_model):
    slow(scripted_model, count=30, delay=0.05)
    client, token = contract_session
    chat_id = new_chat(client, token)
    running = send(client, token, chat_id, carol, stop_after=1)
    refused = send(client, token, chat_id, carol, "another")
    assert refused.status == 409
    body = json.loads(refused.body)
    assert body["error"] == "reply_in_progress" and body["messageId"] == running.events[0]["messageId"]
    assert Chat.objects.get(id=chat_id).messages.count() == 2


def test_regenerate_streams_a_sibling_reply_to_the_same_question(contract_session, carol, scripted_model):
    client, token = contract_session
    chat_id = new_chat(client, token)
    first = send(client, token, chat_id, carol, "Question?")
    old_id = first.events[0]["messageId"]
    scripted_model.options = {"script": ["Another", " answer"]}
    scripted_model.save()
    again = read_sse(client, "POST", f"/api/chats/{chat_id}/messages/{old_id}/regenerate", token=token, json={})
    assert again.status == 200 and again.types[0] == "start" and again.types[-1] == "end"
    new_id = again.events[0]["messageId"]
    assert new_id != old_id and again.events[0]["userMessageId"] == first.events[0]["userMessageId"]
    messages = client.get(f"/api/chats/{chat_id}/messages").json()["results"]
    replies = [m for m in messages if m["role"] == "assistant"]
    assert [r["content"] for r in replies] == ["Hello, world!", "Another answer"]
    assert replies[0]["parentId"] == replies[1]["parentId"] == first.events[0]["userMessageId"]


def test_a_worker_killed_before_any_content_generates_the_reply_once_after_redelivery(
    live_stack, session, carol, scripted_model
):
    script = slow(scripted_model, count=5, delay=0.05, first_delay=2.0)
    client, token = session
    chat_id = new_chat(client, token)
    started = send(client, token, chat_id, carol, stop_after=1)
    message_id = started.events[0]["messageId"]
    live_stack.wait_for(lambda: live_stack.heartbeat_pid(message_id), 10, "the reply's heartbeat")
    os.kill(live_stack.heartbeat_pid(message_id), signal.SIGKILL)

    stream = resume(client, chat_id, message_id)
    assert stream.types == ["start"] + ["content"] * len(script) + ["end"], stream.types
    assert_exactly_once_in_order(stream.ids)
    message = Message.objects.get(id=message_id)
    assert message.status == "completed" and message.content == "".join(script) == stream.text


def test_a_worker_killed_after_content_went_out_ends_the_reply_as_worker_lost(
    live_stack, session, carol, scripted_model
):
    slow(scripted_model, count=60, delay=0.1)
    client, token = session
    chat_id = new_chat(client, token)
    first = send(client, token, chat_id, carol, stop_after=3)
    message_id = first.events[0]["messageId"]
    os.kill(live_stack.heartbeat_pid(message_id), signal.SIGKILL)

    rest = resume(client, chat_id, message_id, first.ids[-1])
    assert rest.types[-1] == "error" and rest.types.count("error") == 1
    assert rest.events[-1]["error"] == "worker_lost" and rest.events[-1]["retryable"] is True
    message = Message.objects.get(id=message_id)
    assert message.status == "failed" and message.error["code"] == "worker_lost"
    assert message.content == first.text + rest.text != ""


def test_the_watchdog_ends_a_reply_whose_worker_vanished(live_stack, session, carol, scripted_model):
    client, token = session
    chat = Chat.objects.get(id=new_chat(client, token))
    long_ago = timezone.now() - timedelta(seconds=30)
    question = Message.objects.create(chat=chat, role="user", content="Hi", created_at=long_ago)
    reply = Message.objects.create(
        chat=chat, role="assistant", status="streaming", model_id="scripted", parent=question,
        created_at=long_ago, started_at=long_ago,
    )  # fmt: skip
    key = f"{live_stack.key_prefix}{reply.id}"
    redis = live_stack.redis()
    old_ms = int(long_ago.timestamp() * 1000)
    start = start_event(
        message_id=str(reply.id), chat_id=str(chat.id), user_message_id=str(question.id), model="scripted",
        workflow_id=None,
    )  # fmt: skip
    redis.xadd(key, {"type": "start", "data": json.dumps(start)}, id=f"{old_ms}-0")
    redis.xadd(key, {"type": "content", "data": json.dumps({"type": "content", "delta": "partial"})}, id=f"{old_ms}-1")

    stream = resume(client, str(chat.id), str(reply.id))  # follows live until the watchdog ends it
    assert stream.types == ["start", "content", "error"] and stream.events[-1]["error"] == "worker_lost"
    reply.refresh_from_db()
    assert reply.status == "failed" and reply.content == "partial"


def test_a_reply_lost_from_the_queue_is_queued_again_by_the_watchdog(session, carol, scripted_model):
    client, token = session
    chat = Chat.objects.get(id=new_chat(client, token))
    a_while_ago = timezone.now() - timedelta(seconds=10)
    question = Message.objects.create(chat=chat, role="user", content="Hi", created_at=a_while_ago)
    reply = Message.objects.create(
        chat=chat, role="assistant", status="queued", model_id="scripted", parent=question,
        created_at=a_while_ago + timedelta(microseconds=1),
    )  # fmt: skip
    stream = resume(client, str(chat.id), str(reply.id))
    assert stream.types[0] == "start" and stream.types[-1] == "end"
    reply.refresh_from_db()
    assert reply.status == "completed" and reply.content == "Hello, world!"


def test_a_reply_that_runs_past_its_time_limit_ends_with_a_timeout_error(session, carol, scripted_model):
    slow(scripted_model, count=40, delay=0.5)  # 20 s, past the stack's 12 s soft time limit
    client, token = session
    chat_id = new_chat(client, token)
    received = send(client, token, chat_id, carol)
    assert received.types[-1] == "error" and received.types.count("error") == 1
    assert received.events[-1]["error"] == "timeout" and received.events[-1]["retryable"] is True
    message = Message.objects.get(id=received.events[0]["messageId"])
    assert message.status == "failed" and message.content == received.text != ""


def test_the_watchdog_queues_again_a_reply_whose_worker_vanished_before_any_text(live_stack, session, scripted_model):
    client, token = session
    chat = Chat.objects.get(id=new_chat(client, token))
    long_ago = timezone.now() - timedelta(seconds=30)
    question = Message.objects.create(chat=chat, role="user", content="Hi", created_at=long_ago)
    reply = Message.objects.create(
        chat=chat, role="assistant", status="streaming", model_id="scripted", parent=question,
        created_at=long_ago, started_at=long_ago,
    )  # fmt: skip
    start = start_event(
        message_id=str(reply.id), chat_id=str(chat.id), user_message_id=str(question.id), model="scripted",
        workflow_id=None,
    )  # fmt: skip
    old_ms = int(long_ago.timestamp() * 1000)
    live_stack.redis().xadd(
        f"{live_stack.key_prefix}{reply.id}", {"type": "start", "data": json.dumps(start)}, id=f"{old_ms}-0"
    )

    stream = resume(client, str(chat.id), str(reply.id))
    # One start, the text (its deltas may be joined: CHATSITE_DELTA_BATCH_MS), one end.
    assert stream.types[0] == "start" and stream.types[-1] == "end" and set(stream.types[1:-1]) == {"content"}
    assert_exactly_once_in_order(stream.ids)
    reply.refresh_from_db()
    assert reply.status == "completed" and reply.content == "Hello, world!" == stream.text


# --- issue 13: attempts, killed database connections, per-user fairness ----------------------------------------


def kill_backends(application_name: str) -> int:
    """pg_terminate_backend on every connection of the test database held by `application_name` (the live stack
    names each process's connections: chatsite-web, chatsite-worker, chatsite-beat), as the test's superuser.
    Returns how many it killed."""
    from django.db import connection

    db = connection.settings_dict
    where = {"host": db["HOST"], "port": db["PORT"], "user": db["USER"], "dbname": db["NAME"]}
    with psycopg.connect(**where, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (application_name,),
        ).fetchall()
    return len(killed)


def test_database_connections_killed_mid_reply_end_it_once_and_the_next_requests_answer(
    live_stack, session, carol, scripted_model
):
    # Issue 13, finding 2: a query killed the database's connections while a reply ran; the worker's task died,
    # the watchdog queued the reply again and again, and the next login answered 500.
    slow(scripted_model, count=5, delay=0.05, first_delay=1.5)
    workflow = Workflow.objects.create(
        owner=carol, name="Rewrite", steps=[{"type": "rewrite_query"}, {"type": "generate"}]
    )
    client, token = session
    chat_id = new_chat(client, token)
    body = {"content": "Hi", "modelId": "scripted", "userId": str(carol.id), "workflowId": str(workflow.id)}
    path = f"/api/chats/{chat_id}/messages/stream"
    first = read_sse(client, "POST", path, token=token, json=body, stop_after=2)  # start, the step started
    message_id = first.events[0]["messageId"]
    assert kill_backends("chatsite-worker") >= 1  # while the rewrite step waits for its model

    rest = resume(client, chat_id, message_id, first.ids[-1])
    assert_exactly_once_in_order(first.ids + rest.ids)
    every = first.types + rest.types
    assert sum(t in ("end", "error") for t in every) == 1 and every[-1] in ("end", "error")
    message = Message.objects.get(id=message_id)
    # A reply holds no database connection while it waits on its model (the network lane gives it back to the
    # pool, which checks each one it hands out): the killed connections are replaced, and the reply finishes once,
    # with its one attempt, never left for the watchdog to retry. (A database error escaping the generation ends
    # it at once as `internal_error`: tests/test_reply_lifecycle.py.)
    assert message.attempts == 1
    assert message.status == "completed" and every[-1] == "end", (message.status, message.error)

    # The web process's pooled connections die too: the next login and API requests still answer.
    assert kill_backends("chatsite-web") >= 1
    again, _ = login(live_stack.base_url, carol.username, E2E_PASSWORD)  # asserts the login answered 200
    assert again.get("/api/chats").status_code == 200
    assert again.get(f"/api/chats/{chat_id}/messages").status_code == 200
    again.close()
    # And the worker, on fresh connections, generates the next reply.
    slow(scripted_model, count=3, delay=0.01)
    next_reply = send(client, token, new_chat(client, token), carol)
    assert next_reply.types[-1] == "end"


def test_a_reply_whose_worker_dies_on_every_attempt_ends_after_the_last_as_worker_failed(
    live_stack, session, carol, scripted_model
):
    # Each attempt SIGKILLs the worker process before any text (a native crash); Celery delivers the task again.
    slow(scripted_model, count=3, kill_process_after=0)
    client, token = session
    chat_id = new_chat(client, token)
    received = send(client, token, chat_id, carol)
    assert received.types == ["start", "error"], received.types
    error = received.events[-1]
    assert error["error"] == "worker_failed" and error["retryable"] is False
    message = Message.objects.get(id=received.events[0]["messageId"])
    assert message.status == "failed" and message.attempts == 3 and message.content == ""
    live_stack.wait_worker_ready()


def test_a_users_reply_starts_before_another_users_queued_replies(
    one_slot_stack, one_slot_session, carol, scripted_model
):
    # One worker slot: bob (carol here) has three long replies running or queued, then alice (dave) sends one.
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from chats.models import User

    dave = User(username=f"dave-{carol.username[6:]}")
    dave.password = PBKDF2PasswordHasher().encode(E2E_PASSWORD, PBKDF2PasswordHasher().salt())
    dave.save()
    slow(scripted_model, count=10, delay=0.1)
    client, token = one_slot_session
    dave_client, dave_token = login(one_slot_stack.base_url, dave.username, E2E_PASSWORD)

    def send_and_leave(http, csrf, user) -> None:
        chat_id = new_chat(http, csrf)
        with http.stream(
            "POST",
            f"/api/chats/{chat_id}/messages/stream",
            json={"content": "long", "modelId": "scripted", "userId": str(user.id)},
            headers={"X-CSRFToken": csrf},
        ) as response:
            assert response.status_code == 200

    for _ in range(3):
        send_and_leave(client, token, carol)
    wait_until(lambda: Message.objects.filter(chat__owner=carol, role="assistant", status="streaming").exists())
    send_and_leave(dave_client, dave_token, dave)
    wait_until(
        lambda: not Message.objects.filter(role="assistant", status__in=("queued", "streaming")).exists(), timeout=60
    )

    carols = list(Message.objects.filter(chat__owner=carol, role="assistant").order_by("created_at"))
    daves = Message.objects.get(chat__owner=dave, role="assistant")
    assert all(m.status == "completed" for m in [*carols, daves])
    assert daves.started_at < carols[1].started_at and daves.started_at < carols[2].started_at
    # Carol's second reply was passed over for dave's, and said so.
    redis = one_slot_stack.redis()
    second = [json.loads(f["data"]) for _, f in redis.xrange(f"{one_slot_stack.key_prefix}{carols[1].id}")]
    # (at its send, one or two replies were ahead of it, as the first had been claimed yet or not; when dave's
    # took the slot, it was next)
    assert [e["type"] for e in second][:2] == ["start", "queued"]
    assert [e["position"] for e in second if e["type"] == "queued"][-1] == 0
    assert carols[1].attempts == 1
    dave_client.close()
