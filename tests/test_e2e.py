"""End to end: a real daphne server and a real Celery worker (subprocesses on free ports), real PostgreSQL
and Redis, the real SmolLM2 model; a client logs in over HTTP and reads the SSE stream with httpx-sse."""

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection
from httpx_sse import connect_sse

from chats.models import Chat, Message, User

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "e2e password 1234"
BASE_DIR = Path(settings.BASE_DIR)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    base_url: str
    logs: dict[str, Path]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def dump_logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{path.read_text()[-4000:]}" for name, path in self.logs.items())


def wait_for(predicate, timeout: float, what: str, stack: Stack) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in stack.processes.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode} while waiting for {what}\n{stack.dump_logs()}")
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}\n{stack.dump_logs()}")


@pytest.fixture(scope="session")
def live_stack(django_db_setup, django_db_blocker) -> Iterator[Stack]:
    """daphne and a Celery worker on the test database, a Redis queue of their own; stopped at the end."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "CHATSITE_CELERY_QUEUE": f"e2e-{uuid.uuid4().hex}",
        "PYTHONUNBUFFERED": "1",
    }
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="chatsite-e2e-"))
    stack = Stack(
        base_url=f"http://127.0.0.1:{port}", logs={"web": log_dir / "web.log", "worker": log_dir / "worker.log"}
    )
    commands = {
        "web": [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"],
        "worker": [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "chatsite",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=INFO",
        ],
    }
    for name, command in commands.items():
        log = stack.logs[name].open("w")
        stack.processes[name] = subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)

    def web_up() -> bool:
        try:
            return httpx.get(f"{stack.base_url}/api/auth/csrf", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(web_up, 30, "daphne to answer", stack)
    wait_for(lambda: "ready." in stack.logs["worker"].read_text(), 60, "the Celery worker", stack)
    yield stack
    for process in stack.processes.values():
        process.terminate()
    for process in stack.processes.values():
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def carol(transactional_db) -> User:
    # Hashed with Django's default hasher: the server processes do not share the tests' fast one.
    user = User(username=f"carol-{uuid.uuid4().hex[:8]}")
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())
    user.save()
    return user


@pytest.fixture
def session(live_stack, carol) -> Iterator[tuple[httpx.Client, str]]:
    """An HTTP client logged in as carol over the real API, and its CSRF token."""
    with httpx.Client(base_url=live_stack.base_url, timeout=30) as client:
        token = client.get("/api/auth/csrf").json()["csrfToken"]
        response = client.post(
            "/api/auth/login", json={"username": carol.username, "password": PASSWORD}, headers={"X-CSRFToken": token}
        )
        assert response.status_code == 200, response.text
        yield client, response.json()["csrfToken"]


@dataclass
class Received:
    events: list[dict]
    ids: list[str]
    arrived: list[float]  # time.time() at arrival of each event
    headers: httpx.Headers


def stream_reply(client: httpx.Client, token: str, chat_id: str, body: dict, stop_after: int | None = None) -> Received:
    received = Received([], [], [], httpx.Headers())
    with connect_sse(
        client,
        "POST",
        f"/api/chats/{chat_id}/messages/stream",
        json=body,
        headers={"X-CSRFToken": token},
        timeout=httpx.Timeout(30, read=120),
    ) as source:
        assert source.response.status_code == 200, source.response.read()
        received.headers = source.response.headers
        for sse in source.iter_sse():
            received.events.append(sse.json())
            received.ids.append(sse.id)
            received.arrived.append(time.time())
            if stop_after is not None and len(received.events) >= stop_after:
                break
    return received


def new_chat(client: httpx.Client, token: str) -> str:
    response = client.post("/api/chats", json={}, headers={"X-CSRFToken": token})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def as_tuple(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def test_a_real_model_reply_streams_token_by_token(session, carol, smollm2):
    smollm2.default_max_tokens = 80
    smollm2.save()
    client, token = session
    chat_id = new_chat(client, token)
    body = {"content": "Write a short poem about the sea.", "modelId": "smollm2-135m", "userId": str(carol.id)}
    posted = time.time()
    received = stream_reply(client, token, chat_id, body)

    assert received.headers["content-type"].startswith("text/event-stream")
    assert received.headers["cache-control"] == "no-cache"
    assert received.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in received.headers

    types = [e["type"] for e in received.events]
    assert types[0] == "start" and types[-1] == "end", types
    assert set(types[1:-1]) == {"content"} and len(types) > 5, types
    assert all(received.ids) and received.ids == sorted(received.ids, key=as_tuple)
    assert len(set(received.ids)) == len(received.ids)

    message = Message.objects.get(id=received.events[0]["messageId"])
    text = "".join(e["delta"] for e in received.events if e["type"] == "content")
    assert text and message.content == text
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


def test_a_scripted_reply_arrives_piece_by_piece_while_it_is_generated(session, carol, scripted_model):
    scripted_model.options = {"script": ["one", " two", " three", " four"], "delay": 0.3}
    scripted_model.save()
    client, token = session
    received = stream_reply(
        client, token, new_chat(client, token), {"content": "count", "modelId": "scripted", "userId": str(carol.id)}
    )
    assert [e.get("delta") for e in received.events[1:-1]] == ["one", " two", " three", " four"]
    gaps = [b - a for a, b in zip(received.arrived[1:-1], received.arrived[2:-1], strict=False)]
    assert min(gaps) > 0.15, f"deltas arrived together, not as generated: {gaps}"
    assert received.events[0]["userMessageId"] == str(Message.objects.get(role="user", chat__owner=carol).id)


def test_a_provider_failure_reaches_the_client_as_one_error_event(session, carol, scripted_model):
    scripted_model.options = {"script": ["a", "b", "c"], "fail_after": 1}
    scripted_model.save()
    client, token = session
    received = stream_reply(
        client, token, new_chat(client, token), {"content": "hi", "modelId": "scripted", "userId": str(carol.id)}
    )
    assert [e["type"] for e in received.events] == ["start", "content", "error"]
    assert received.events[-1]["error"] == "provider_error" and received.events[-1]["retryable"] is True
    message = Message.objects.get(id=received.events[0]["messageId"])
    assert message.status == "failed" and message.content == "a"


def test_a_client_that_disconnects_does_not_stop_the_generation(session, carol, scripted_model):
    script = [f" {i}" for i in range(15)]
    scripted_model.options = {"script": script, "delay": 0.1}
    scripted_model.save()
    client, token = session
    chat_id = new_chat(client, token)
    received = stream_reply(
        client, token, chat_id, {"content": "count", "modelId": "scripted", "userId": str(carol.id)}, stop_after=2
    )
    message_id = received.events[0]["messageId"]
    deadline = time.monotonic() + 30
    while Message.objects.get(id=message_id).status != "completed" and time.monotonic() < deadline:
        time.sleep(0.1)
    message = Message.objects.get(id=message_id)
    assert message.status == "completed" and message.content == "".join(script)
    assert Chat.objects.get(id=chat_id).messages.count() == 2


def test_the_message_list_shows_the_finished_reply(session, carol, scripted_model):
    client, token = session
    chat_id = new_chat(client, token)
    stream_reply(client, token, chat_id, {"content": "Hi!", "modelId": "scripted", "userId": str(carol.id)})
    messages = client.get(f"/api/chats/{chat_id}/messages").json()["results"]
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "Hi!", "completed"),
        ("assistant", "Hello, world!", "completed"),
    ]
    assert messages[1]["usage"] == {"promptTokens": 1, "completionTokens": 4}
    assert datetime.fromisoformat(messages[1]["completedAt"]) <= datetime.now(UTC)
