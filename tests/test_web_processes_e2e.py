"""The web role as the Procfile runs it (scripts/serve_web.py): several daphne processes on one port, any of
which serves any stream; a process that dies is replaced; SIGTERM stops them all; embedded mode runs one."""

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from chats.models import Message
from tests.live import BASE_DIR, LIFECYCLE_ENV, Received, entry_key, free_port, new_chat, resume, send

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def script_of(model, count: int, delay: float) -> list[str]:
    script = [f" w{i}" for i in range(count)]
    model.options = {"script": script, "delay": delay}
    model.save()
    return script


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_stream_whose_web_process_is_killed_resumes_on_another_and_the_process_is_replaced(
    live_stack, session, carol, scripted_model
):
    script = script_of(scripted_model, count=30, delay=0.1)
    client, token = session
    chat_id = new_chat(client, token)
    webs = live_stack.web_pids()
    assert len(webs) == 2, webs
    log_start = len(live_stack.log("web"))
    served: list[int | None] = []

    def kill_its_server(received: Received) -> bool:
        if not served:
            served.append(live_stack.web_pid_serving(received.client_port))
        if len(received.events) == 3:
            os.kill(served[0], signal.SIGKILL)
        return False

    first = send(client, token, chat_id, carol, until=kill_its_server, allow_break=True)
    killed = served[0]
    assert killed in webs
    assert first.broken and first.types[0] == "start" and "end" not in first.types, first.types
    message_id = first.events[0]["messageId"]

    resumed_on: list[int | None] = []

    def note_server(received: Received) -> bool:
        if not resumed_on:
            resumed_on.append(live_stack.web_pid_serving(received.client_port))
        return False

    rest = resume(client, chat_id, message_id, first.ids[-1], until=note_server)
    assert rest.status == 200 and rest.types[-1] == "end", rest.types
    assert resumed_on[0] in webs and resumed_on[0] != killed
    keys = [entry_key(i) for i in first.ids + rest.ids]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert first.text + rest.text == "".join(script) == Message.objects.get(id=message_id).content

    # The manager starts a new process in the dead one's place, on the same port.
    live_stack.wait_web_processes(1, since=log_start)
    now = live_stack.web_pids()
    assert len(now) == 2 and killed not in now, (webs, now)
    assert "exited with -9" in live_stack.log("web")[log_start:]


def test_sends_at_once_go_through_several_web_processes_and_every_reply_arrives_whole(
    live_stack, session, carol, scripted_model
):
    script = script_of(scripted_model, count=10, delay=0.05)
    client, token = session
    chats = [new_chat(client, token) for _ in range(16)]

    def send_one(chat_id: str) -> tuple[Received, int | None]:
        served: list[int | None] = []

        def note_server(received: Received) -> bool:
            if not served:
                served.append(live_stack.web_pid_serving(received.client_port))
            return False

        # A client of its own (a connection of its own), with the same session: any process reads it.
        with httpx.Client(base_url=live_stack.base_url, cookies=dict(client.cookies), timeout=30) as own:
            return send(own, token, chat_id, carol, until=note_server), served[0]

    with ThreadPoolExecutor(len(chats)) as pool:
        results = list(pool.map(send_one, chats))

    for received, _ in results:
        assert received.status == 200 and received.types[0] == "start" and received.types[-1] == "end"
        assert received.text == "".join(script) == Message.objects.get(id=received.events[0]["messageId"]).content
    counts = {pid: sum(1 for _, p in results if p == pid) for pid in live_stack.web_pids()}
    print(f"\nsends per web process: {counts}")
    assert sum(counts.values()) == len(chats), counts
    assert all(counts.values()), f"a web process served none of {len(chats)} sends at once: {counts}"


def test_embedded_mode_runs_one_web_process_whatever_is_asked(embedded_mode):
    # tests.conftest starts it as start_stack's default asks: two processes.
    assert len(embedded_mode.web_pids()) == 1
    assert "embedded mode (CHATSITE_EMBEDDED=1): one web process, not 2" in embedded_mode.log("web")


def test_sigterm_stops_every_web_process_and_the_manager_exits_cleanly(live_stack, tmp_path):
    port = free_port()
    log = (tmp_path / "web.log").open("w")
    manager = subprocess.Popen(
        [sys.executable, "scripts/serve_web.py", "--port", str(port), "--processes", "2"],
        cwd=BASE_DIR,
        env={**live_stack.env, **LIFECYCLE_ENV},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (tmp_path / "web.log").read_text().count("Listening on") < 2 and time.monotonic() < deadline:
            assert manager.poll() is None, (tmp_path / "web.log").read_text()
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/api/auth/csrf", timeout=10).status_code == 200
        lines = (tmp_path / "web.log").read_text().splitlines()
        children = [int(line.rsplit("pid ", 1)[1].rstrip(")")) for line in lines if "started (pid" in line]
        assert len(children) == 2 and all(alive(pid) for pid in children)
        manager.send_signal(signal.SIGTERM)  # to the manager alone, as a process supervisor would
        assert manager.wait(timeout=30) == 0
        assert not any(alive(pid) for pid in children), (tmp_path / "web.log").read_text()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/api/auth/csrf", timeout=5)
    finally:
        if manager.poll() is None:
            os.killpg(manager.pid, signal.SIGKILL)
