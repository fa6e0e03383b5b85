"""The reply lifecycle in one process, on real PostgreSQL and Redis: attempts, fencing of a worker taken for dead,
exceptions that escape a reply (a database connection killed under it), the time budget, and per-user admission.
The live versions (a real Celery worker) are in tests/test_lifecycle_e2e.py."""

import asyncio
import json
import os
import time
from datetime import timedelta

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.db import connection, connections
from django.utils import timezone

from chats import actions, fencing, lifecycle
from chats.events import EventPublisher, StreamClosed, snapshot, stream_key, sync_redis
from chats.models import Chat, Message
from pipelines import admission
from pipelines.generation import ReplyGeneration
from pipelines.models import Connector, Workflow
from pipelines.runner import end_lost_replies, run_reply

DEMO_URL = os.environ.get("CHATSITE_DEMO_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/chatsite_demo")


def stream(message_id) -> list[tuple[str, dict]]:
    return [(i, json.loads(f["data"])) for i, f in sync_redis().xrange(stream_key(str(message_id)))]


def types(message_id) -> list[str]:
    return [e["type"] for _, e in stream(message_id)]


def send(chat, model, content="Hi there", workflow=None) -> Message:
    _, reply, _ = actions.do_send_message(chat.owner, chat, content=content, model=model, workflow=workflow)
    return reply


@pytest.fixture(autouse=True)
def _nothing_enqueued(monkeypatch):
    # Tests here run replies themselves: what would go to Celery is recorded instead.
    from pipelines import runner

    sent: list[str] = []
    monkeypatch.setattr(actions, "enqueue_reply", lambda message_id, lane=None: sent.append(message_id))
    monkeypatch.setattr(runner, "enqueue_reply", lambda message_id, lane=None: sent.append(message_id))
    monkeypatch.setattr("chatsite.jobs.submit", lambda kind, object_id, lane: sent.append(object_id))
    return sent


@pytest.fixture(autouse=True)
def _fast_heartbeats(settings):
    settings.CHATSITE_HEARTBEAT_SECONDS = 0.05


def as_streaming(reply: Message, *, attempts: int, started_ago: float = 0.0) -> Message:
    """Make `reply` look like one a worker claimed `attempts` times and that vanished after its `start`."""
    started = timezone.now() - timedelta(seconds=started_ago)
    Message.objects.filter(id=reply.id).update(status="streaming", attempts=attempts, started_at=started)
    entry_id = f"{int(started.timestamp() * 1000)}-{attempts}"
    start = {"type": "start", "messageId": str(reply.id)}
    sync_redis().xadd(stream_key(str(reply.id)), {"type": "start", "data": json.dumps(start)}, id=entry_id)
    reply.refresh_from_db()
    return reply


# --- attempts ------------------------------------------------------------------------------------------------


def test_each_claim_counts_an_attempt(alice_chat, scripted_model):
    reply = send(alice_chat, scripted_model)
    assert run_reply(str(reply.id)) == "completed"
    reply.refresh_from_db()
    assert reply.attempts == 1


def test_a_redelivered_reply_whose_worker_died_before_text_is_generated_again_as_a_new_attempt(
    alice_chat, scripted_model
):
    reply = as_streaming(send(alice_chat, scripted_model), attempts=1)
    assert run_reply(str(reply.id), redelivered=True) == "completed"
    reply.refresh_from_db()
    assert reply.attempts == 2 and reply.content == "Hello, world!"
    assert types(reply.id) == ["start", "content", "content", "content", "content", "end"]


def test_a_reply_that_used_up_its_attempts_ends_once_as_worker_failed_not_retryable(
    alice_chat, scripted_model, settings
):
    settings.CHATSITE_MAX_REPLY_ATTEMPTS = 3
    reply = as_streaming(send(alice_chat, scripted_model), attempts=3)
    assert run_reply(str(reply.id), redelivered=True) is None
    assert run_reply(str(reply.id), redelivered=True) is None  # a further delivery changes nothing
    events = [e for _, e in stream(reply.id)]
    assert [e["type"] for e in events] == ["start", "error"]
    assert events[-1]["error"] == "worker_failed" and events[-1]["retryable"] is False
    assert "3 times" in events[-1]["message"]
    reply.refresh_from_db()
    assert reply.status == "failed" and reply.error["code"] == "worker_failed" and reply.attempts == 3


def test_the_watchdog_queues_a_lost_reply_again_until_its_attempts_are_used_up(
    alice_chat, scripted_model, settings, _nothing_enqueued
):
    settings.CHATSITE_MAX_REPLY_ATTEMPTS = 2
    settings.CHATSITE_WORKER_LOST_SECONDS = 1
    reply = as_streaming(send(alice_chat, scripted_model), attempts=1, started_ago=30)
    end_lost_replies()
    reply.refresh_from_db()
    assert reply.status == "queued" and _nothing_enqueued == [str(reply.id)]

    reply = as_streaming(reply, attempts=2, started_ago=30)
    assert end_lost_replies() == 1
    reply.refresh_from_db()
    assert reply.status == "failed" and reply.error["code"] == "worker_failed"
    assert types(reply.id).count("error") == 1 and _nothing_enqueued == [str(reply.id)]


def test_a_queued_reply_with_no_attempt_left_is_ended_by_its_delivery(alice_chat, scripted_model, settings):
    settings.CHATSITE_MAX_REPLY_ATTEMPTS = 2
    reply = send(alice_chat, scripted_model)
    Message.objects.filter(id=reply.id).update(attempts=2)
    assert run_reply(str(reply.id)) is None
    reply.refresh_from_db()
    assert reply.status == "failed" and reply.error["code"] == "worker_failed"
    assert types(reply.id) == ["start", "error"]


# --- fencing: a worker taken for dead ------------------------------------------------------------------------


def test_text_a_live_worker_writes_while_its_reply_is_ended_elsewhere_never_lands_after_the_read(
    alice_chat, scripted_model, monkeypatch
):
    # The bench/chaos.py failure of issue 13: a cancel (or the watchdog) took a worker for dead after a Redis
    # restart and ended the reply from its stream; the worker's delayed write landed between that read and the
    # terminal event, so readers saw text that was not saved.
    reply = send(alice_chat, scripted_model)
    claimed = lifecycle.do_claim_reply(str(reply.id))
    worker = EventPublisher()
    fencing.fenced(worker).write_as(str(reply.id), fencing.worker_token(claimed.attempts))
    worker.publish(str(reply.id), {"type": "start", "messageId": str(reply.id)})
    worker.publish(str(reply.id), {"type": "content", "delta": "Hello"})

    real_snapshot = lifecycle.events.snapshot
    late = []

    def snapshot_then_the_worker_writes(message_id):
        taken = real_snapshot(message_id)
        try:
            worker.publish(str(reply.id), {"type": "content", "delta": ", world"})
            late.append("landed")
        except StreamClosed:
            late.append("refused")
        return taken

    with monkeypatch.context() as patched:
        patched.setattr(lifecycle.events, "snapshot", snapshot_then_the_worker_writes)
        assert lifecycle.do_end_lost_reply(str(reply.id))

    assert late == ["refused"]
    reply.refresh_from_db()
    assert types(reply.id) == ["start", "content", "error"]
    assert snapshot(str(reply.id)).text == reply.content == "Hello"
    # Nor can the worker save its own ending any more.
    assert not lifecycle.do_finish_reply(str(reply.id), status="completed", content="Hello, world", attempt=1)


def test_a_worker_whose_reply_is_ended_elsewhere_stops_without_saving_or_writing_after_the_end(
    alice_chat, scripted_model
):
    reply = send(alice_chat, scripted_model)

    class EndedElsewhereAfterFirstContent(EventPublisher):
        def publish(self, message_id, event):
            published = super().publish(message_id, event)
            if event["type"] == "content":
                lifecycle.do_end_lost_reply(message_id)  # the watchdog, thinking the worker dead
            return published

    assert run_reply(str(reply.id), EndedElsewhereAfterFirstContent()) is None
    reply.refresh_from_db()
    assert types(reply.id) == ["start", "content", "error"]  # nothing after the terminal event
    assert reply.status == "failed" and reply.content == snapshot(str(reply.id)).text == "Hello"


def test_a_worker_taken_over_can_neither_write_nor_save(alice_chat, scripted_model):
    reply = send(alice_chat, scripted_model)
    first = lifecycle.do_claim_reply(str(reply.id))
    stale = EventPublisher()
    fencing.fenced(stale).write_as(str(reply.id), fencing.worker_token(first.attempts))
    stale.publish(str(reply.id), {"type": "start", "messageId": str(reply.id)})

    # Its heartbeat is gone (it never had one here): a redelivered task takes the reply over and generates it.
    assert run_reply(str(reply.id), redelivered=True) == "completed"
    with pytest.raises(StreamClosed):
        stale.publish(str(reply.id), {"type": "content", "delta": "stale text"})
    assert not lifecycle.do_finish_reply(str(reply.id), status="completed", content="stale text", attempt=1)
    reply.refresh_from_db()
    assert reply.attempts == 2 and reply.content == "Hello, world!" == snapshot(str(reply.id)).text
    assert types(reply.id).count("start") == 1 and types(reply.id).count("end") == 1


def test_a_stream_takes_one_terminal_event_only(alice_chat, scripted_model):
    reply = send(alice_chat, scripted_model)
    first = fencing.publish_terminal(str(reply.id), {"type": "error", "error": "x", "message": "x", "retryable": True})
    # A retry whose first try landed (a Redis restart lost the answer), or a recovery racing the winner.
    again = fencing.publish_terminal(str(reply.id), {"type": "end", "messageId": str(reply.id)})
    assert first and again is None and types(reply.id) == ["error"] and fencing.is_closed(str(reply.id))
    # Nor does anything come after it.
    late = EventPublisher()
    fencing.fenced(late).write_as(str(reply.id), fencing.worker_token(5))
    with pytest.raises(StreamClosed):
        late.publish(str(reply.id), {"type": "content", "delta": "late"})


def test_a_worker_stopped_between_its_save_and_its_end_event_still_gets_the_end_into_the_stream(
    alice_chat, scripted_model
):
    from celery.exceptions import SoftTimeLimitExceeded

    class TimeLimitBeforeTheEnd(EventPublisher):
        def publish(self, message_id, event):
            if event["type"] == "end":
                raise SoftTimeLimitExceeded  # the row is saved as completed; the end event is not out
            return super().publish(message_id, event)

    reply = send(alice_chat, scripted_model)
    run_reply(str(reply.id), TimeLimitBeforeTheEnd())
    reply.refresh_from_db()
    events = [e for _, e in stream(reply.id)]
    assert [e["type"] for e in events] == ["start", "content", "content", "content", "content", "end"]
    assert reply.status == "completed" and events[-1]["finishReason"] == "stop"
    assert reply.content == snapshot(str(reply.id)).text


def test_a_redelivery_after_a_worker_died_between_its_save_and_its_end_event_publishes_the_saved_end(
    alice_chat, scripted_model
):
    reply = as_streaming(send(alice_chat, scripted_model), attempts=1)
    assert lifecycle.do_finish_reply(str(reply.id), status="completed", content="", finish_reason="stop", attempt=1)
    assert run_reply(str(reply.id), redelivered=True) is None
    assert run_reply(str(reply.id), redelivered=True) is None
    assert types(reply.id) == ["start", "end"]


# --- exceptions that escape a reply --------------------------------------------------------------------------


def kill_my_database_connection() -> None:
    """pg_terminate_backend on this thread's Django connection, from a superuser connection of its own."""
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.mark.django_db(transaction=True)
def test_a_database_connection_killed_mid_reply_is_saved_once_on_a_fresh_connection(alice, scripted_model):
    chat = Chat.objects.create(owner=alice)
    reply = send(chat, scripted_model)

    class KillTheConnectionAfterFirstContent(EventPublisher):
        def publish(self, message_id, event):
            published = super().publish(message_id, event)
            if event["type"] == "content" and event["delta"] == "Hello":
                kill_my_database_connection()
            return published

    # The final save meets the dead connection and tries again on a new one (as across a database restart).
    assert run_reply(str(reply.id), KillTheConnectionAfterFirstContent()) == "completed"
    events = [e for _, e in stream(reply.id)]
    assert [e["type"] for e in events].count("end") == 1 and events[-1]["type"] == "end"
    assert "error" not in [e["type"] for e in events]
    reply.refresh_from_db()  # the connection was replaced: this works
    assert reply.status == "completed" and reply.content == snapshot(str(reply.id)).text == "Hello, world!"


@pytest.mark.django_db(transaction=True)
def test_an_exception_escaping_the_generation_ends_the_reply_at_once(alice, scripted_model, monkeypatch):
    chat = Chat.objects.create(owner=alice)
    reply = send(chat, scripted_model)

    def run_and_die(self):
        self.publisher.publish(self.message_id, {"type": "content", "delta": "partial"})
        kill_my_database_connection()
        Message.objects.filter(id=self.message.id).exists()  # OperationalError, outside the generation's handlers

    monkeypatch.setattr(ReplyGeneration, "run", run_and_die)
    assert run_reply(str(reply.id)) == "failed"
    events = [e for _, e in stream(reply.id)]
    assert [e["type"] for e in events] == ["start", "content", "error"]
    assert events[-1]["error"] == "internal_error" and events[-1]["retryable"] is True
    reply.refresh_from_db()
    assert reply.status == "failed" and reply.content == "partial" and reply.attempts == 1


# --- the time budget -----------------------------------------------------------------------------------------


@pytest.fixture
def demo_connector(db, monkeypatch) -> Connector:
    monkeypatch.setenv("CHATSITE_DEMO_DATABASE_URL", DEMO_URL)
    call_command("seed_demo_database")
    return Connector.objects.get(name="demo")


def test_sql_steps_that_sleep_past_the_budget_end_the_reply_within_about_the_budget(
    alice, alice_chat, scripted_model, demo_connector, settings
):
    settings.CHATSITE_REPLY_TIME_BUDGET_SECONDS = 1.0
    demo_connector.users.add(alice)  # connectors are granted, never usable by all
    sleep = {"type": "sql", "connector": "demo", "query": "SELECT pg_sleep(0.7)"}
    workflow = Workflow.objects.create(owner=alice, name="Slow", steps=[sleep] * 3 + [{"type": "generate"}])
    reply = send(alice_chat, scripted_model, workflow=workflow)
    began = time.monotonic()
    assert run_reply(str(reply.id)) == "failed"
    took = time.monotonic() - began
    assert took > 0.9, took  # the budget was used up; the events below show the second query was cut short
    # (its step failed rather than finished: it was stopped when the budget ran out, not after its 0.7 s)
    events = [e for _, e in stream(reply.id)]
    steps = [(e["index"], e["state"]) for e in events if e["type"] == "step"]
    assert steps == [(1, "started"), (1, "finished"), (2, "started"), (2, "failed")]
    assert events[-1] == {
        "type": "error",
        "error": "time_budget_exceeded",
        "message": "The reply used up the 1 seconds it may take across its steps, and was stopped.",
        "retryable": False,
    }
    reply.refresh_from_db()
    assert reply.status == "failed" and reply.error["code"] == "time_budget_exceeded"


def test_an_answer_past_the_budget_ends_with_its_text_kept(alice_chat, scripted_model, settings):
    settings.CHATSITE_REPLY_TIME_BUDGET_SECONDS = 0.3
    scripted_model.options = {"script": [f" w{i}" for i in range(40)], "delay": 0.02}
    scripted_model.save()
    reply = send(alice_chat, scripted_model)
    assert run_reply(str(reply.id)) == "failed"
    reply.refresh_from_db()
    assert reply.error["code"] == "time_budget_exceeded"
    assert reply.content == snapshot(str(reply.id)).text and 0 < len(reply.content.split()) < 40
    assert types(reply.id)[-1] == "error" and types(reply.id).count("error") == 1


# --- admission: per-user fairness ----------------------------------------------------------------------------


def test_the_fair_order_puts_the_less_served_user_first_and_keeps_each_users_order():
    waiting = [("b2", "bob", 1), ("b3", "bob", 2), ("a1", "alice", 3), ("a2", "alice", 4), ("c1", "carol", 5)]
    order = [m for m, _ in admission.fair_order(waiting, {"bob": 1}, {"alice": 10, "carol": 5})]
    # Level 0: alice's and carol's first (carol served longer ago); level 1: bob's first, alice's second.
    assert order == ["c1", "a1", "b2", "a2", "b3"]
    assert [m for m, _ in admission.fair_order(waiting[:2], {}, {})] == ["b2", "b3"]


def test_a_lone_users_replies_take_the_slot_at_once_in_the_order_they_were_sent(alice_chat, scripted_model):
    replies = [str(send(Chat.objects.create(owner=alice_chat.owner), scripted_model).id) for _ in range(3)]
    assert admission.choose(replies[0]) == admission.Choice(replies[0])
    # A delivery of a later reply (the first one's was queued again) runs the first one.
    assert admission.choose(replies[1]) == admission.Choice(replies[0], passed_over=replies[1])


@pytest.mark.django_db(transaction=True)  # the cancel reads the rows from another thread
def test_a_slot_goes_to_another_users_waiting_reply_and_the_passed_over_one_waits_and_can_be_cancelled(
    alice, bob, scripted_model, _nothing_enqueued
):
    bobs = [send(Chat.objects.create(owner=bob), scripted_model) for _ in range(3)]
    assert run_reply(str(bobs[0].id)) == "completed"  # bob was just served
    alices = send(Chat.objects.create(owner=alice), scripted_model)
    _nothing_enqueued.clear()

    # The slot a delivery of bob's second reply holds goes to alice's.
    assert run_reply(str(bobs[1].id)) == "completed"
    alices.refresh_from_db()
    assert alices.status == "completed" and alices.attempts == 1
    bobs[1].refresh_from_db()
    assert bobs[1].status == "queued" and bobs[1].attempts == 0  # waiting is not an attempt
    assert _nothing_enqueued == [str(bobs[1].id)]  # back in the queue, behind the others
    events = [e for _, e in stream(bobs[1].id)]
    assert [e["type"] for e in events] == ["start", "queued"]
    # Next in line: bob's 2nd, then his 3rd.
    assert events[0]["messageId"] == str(bobs[1].id) and events[1] == {"type": "queued", "position": 0}

    # Cancelled while it waits: one end, cancelled, and its next delivery does nothing.
    async def cancel() -> Message:
        try:
            return await lifecycle.do_cancel_reply(bobs[1])
        finally:
            await sync_to_async(connections.close_all)()  # the thread it used lets go of its connection

    cancelled = asyncio.run(cancel())
    assert cancelled.status == "cancelled"
    assert types(bobs[1].id) == ["start", "queued", "end"]
    assert run_reply(str(bobs[1].id)) is None
    assert types(bobs[1].id) == ["start", "queued", "end"]
    # Bob's third reply, alone now, runs as soon as a delivery asks.
    assert run_reply(str(bobs[2].id)) == "completed"
