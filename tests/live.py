"""A live chatsite for end-to-end tests: daphne, a Celery worker and Celery beat as subprocesses on the test
database and Redis, plus HTTP helpers that log in and read SSE streams the way a client does."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from django.conf import settings
from httpx_sse import connect_sse

from bench.netns import pump
from chats.event_schema import check_event

BASE_DIR = Path(settings.BASE_DIR)

# Short lifecycle timings, so that tests of dead workers and the watchdog take seconds, not minutes.
LIFECYCLE_ENV = {
    "CHATSITE_HEARTBEAT_SECONDS": "0.5",
    "CHATSITE_WORKER_LOST_SECONDS": "3",
    "CHATSITE_WATCHDOG_SECONDS": "1",
    "CHATSITE_REQUEUE_SECONDS": "5",
    "CHATSITE_CANCEL_WAIT_SECONDS": "3",
    "CHATSITE_TASK_SOFT_TIME_LIMIT": "12",
    "CHATSITE_TASK_TIME_LIMIT": "30",
    # The live tests and benchmarks send many replies at once from few users; limits are tested on their own.
    "CHATSITE_SEND_RATE": "100000/min",
    "CHATSITE_MAX_CONCURRENT_REPLIES": "100000",
}
# The one host whose images the pages may load (the browser tests answer for it through Playwright's routing).
ALLOWED_IMAGE_HOST = "images.allowed.test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    """The running processes, their logs, and what the tests need to reach them."""

    base_url: str
    redis_url: str
    key_prefix: str
    env: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    stopping: bool = False
    revive_lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, name: str) -> None:
        log = (self.log_dir / f"{name}.log").open("a")
        self.processes[name] = subprocess.Popen(
            self.commands[name],
            cwd=BASE_DIR,
            # Each process's database connections say whose they are (pg_stat_activity.application_name).
            env={"CHATSITE_DB_APPLICATION_NAME": f"chatsite-{name}", **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def dump_logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{self.log(name)[-4000:]}" for name in self.commands)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    def heartbeat_pid(self, message_id: str) -> int | None:
        """The pid of the worker process generating `message_id` (from its heartbeat), if any."""
        value = self.redis().get(f"{self.key_prefix}{message_id}:heartbeat")
        return int(value.rsplit(":", 1)[1]) if value else None

    def revive_workers(self) -> list[str]:
        """Start again the worker processes that died (as a process manager's restart policy would); returns
        their names. The tests SIGKILL workers: a gevent worker is one process carrying all its replies."""
        revived = []
        with self.revive_lock:
            for name in WORKER_ROLES:
                process = self.processes.get(name)
                if process is not None and process.poll() is not None and not self.stopping:
                    self.start(name)
                    revived.append(name)
        return revived

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.revive_workers()
            for name, process in self.processes.items():
                if process.poll() is not None and name not in WORKER_ROLES:
                    pytest.fail(f"{name} exited with {process.returncode} while waiting for {what}\n{self.dump_logs()}")
            if predicate():
                return
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {what}\n{self.dump_logs()}")

    def web_pids(self) -> list[int]:
        """The pids of the daphne processes that scripts/serve_web.py runs for this stack (its children)."""
        manager = self.processes["web"].pid
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == manager:
                        pids.append(int(entry))
        return sorted(pids)

    def web_pid_serving(self, client_port: int) -> int | None:
        """The pid of the web process holding the server end of the connection from 127.0.0.1:`client_port`."""
        server_port = int(self.base_url.rsplit(":", 1)[1])
        inode = None
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            parts = line.split()
            local, remote = (int(address.split(":")[1], 16) for address in parts[1:3])
            if parts[3] == "01" and local == server_port and remote == client_port:
                inode = f"socket:[{parts[9]}]"
        for pid in self.web_pids() if inode else []:
            with contextlib.suppress(OSError):
                if any(os.readlink(f"/proc/{pid}/fd/{fd}") == inode for fd in os.listdir(f"/proc/{pid}/fd")):
                    return pid
        return None

    def wait_web_processes(self, count: int, since: int = 0) -> None:
        """Wait until `count` web processes have started listening (daphne logs "Listening on" once up)."""
        self.wait_for(
            lambda: self.log("web")[since:].count("Listening on") >= count and len(self.web_pids()) >= count,
            60,
            f"{count} web processes",
        )

    def wait_worker_ready(self, since: int = 0) -> None:
        self.wait_for(lambda: "ready." in self.log("worker")[since:], 60, "the Celery worker")

    def supervise(self) -> None:
        """Keep the worker processes running for the stack's life (a thread of the test process)."""

        def watch() -> None:
            while not self.stopping:
                self.revive_workers()
                time.sleep(0.2)

        threading.Thread(target=watch, name="stack-supervisor", daemon=True).start()

    def stop(self) -> None:
        self.stopping = True
        if self in FULL_STACKS:
            FULL_STACKS.remove(self)
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


# The roles a process manager restarts when they die (the Procfile's workers).
WORKER_ROLES = ("worker", "local")

# The full-mode stacks this test session started (the embedded one's tests pause their watchdogs).
FULL_STACKS: list[Stack] = []


@contextlib.contextmanager
def full_mode_watchdogs_paused() -> Iterator[None]:
    """Stop the Celery beat of every running full-mode stack (SIGSTOP) for the block, then let it go on.

    The embedded stack shares the test database with them, and its replies' heartbeats live in its own memory,
    not in Redis: a full-mode watchdog would take them for replies whose worker died, and queue them again for
    its own worker, which would then generate them a second time.
    """
    paused = [s.processes["beat"] for s in FULL_STACKS if "beat" in s.processes and s.processes["beat"].poll() is None]
    for process in paused:
        os.killpg(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for process in paused:
            os.killpg(process.pid, signal.SIGCONT)


def start_stack(
    database_url: str,
    redis_url: str,
    *,
    extra_env: dict[str, str] | None = None,
    concurrency: int = 1000,
    pool: str = "gevent",
    embedded: bool = False,
    web_processes: int = 2,
    beat: bool = True,
) -> Stack:
    """Start chatsite's processes as the Procfile does, on a queue and key prefix of their own: the web role
    (scripts/serve_web.py: `web_processes` daphne processes on one port); the network lane's worker (`pool`,
    `concurrency` slots: gevent greenlets as the Procfile runs it, or prefork processes); one prefork process
    for the local lane and document ingestion (the Procfile runs a worker for each); and beat. Worker processes
    that die (the tests SIGKILL them) are started again, as a process manager would. `embedded`: the web role
    alone in embedded mode (always one daphne process; `redis_url` is then never used)."""
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="chatsite-live-"))
    prefix = f"live:{uuid.uuid4().hex[:8]}:"
    queue, ingest_queue = f"live-{uuid.uuid4().hex}", f"live-ingest-{uuid.uuid4().hex}"
    local_queue = f"live-local-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CHATSITE_CELERY_QUEUE": queue,
        "CHATSITE_INGEST_QUEUE": ingest_queue,
        "CHATSITE_LOCAL_QUEUE": local_queue,
        "CHATSITE_STREAM_KEY_PREFIX": prefix,
        "PYTHONUNBUFFERED": "1",
        **LIFECYCLE_ENV,
        "CHATSITE_IMAGE_HOSTS": ALLOWED_IMAGE_HOST,
        "CHATSITE_EMBEDDED": "1" if embedded else "0",
        **(extra_env or {}),
    }
    stack = Stack(f"http://127.0.0.1:{port}", redis_url, prefix, env, log_dir)
    celery = [sys.executable, "-m", "celery", "-A", "chatsite"]
    quiet = ["--without-mingle", "--without-gossip", "--loglevel=INFO"]
    stack.commands = {
        # As the Procfile runs it: one socket (backlog 4096), several daphne processes on it.
        "web": [
            *[sys.executable, "scripts/serve_web.py", "--host", "127.0.0.1", "--port", str(port)],
            *["--processes", str(web_processes)],
        ],
        "worker": [*celery, "worker", "-P", pool, f"--concurrency={concurrency}", "-n", f"network-{port}@%h", *quiet],
        "local": [
            *[*celery, "worker", "-P", "prefork", "--concurrency=1", "-Q", f"{local_queue},{ingest_queue}"],
            *["-n", f"local-{port}@%h", *quiet],
        ],
        "beat": [*celery, "beat", "--loglevel=INFO", "-s", str(log_dir / "beat-schedule")],
    }
    if embedded:
        stack.commands = {"web": stack.commands["web"]}
    elif not beat:  # no watchdog of its own (see conftest's one_slot_stack)
        del stack.commands["beat"]
    for name in stack.commands:
        stack.start(name)

    def web_up() -> bool:
        try:
            return httpx.get(f"{stack.base_url}/api/auth/csrf", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    stack.wait_for(web_up, 30, "daphne to answer")
    stack.wait_web_processes(1 if embedded else web_processes)
    if not embedded:
        stack.wait_worker_ready()
        stack.wait_for(lambda: "ready." in stack.log("local"), 60, "the local lane's worker")
        stack.supervise()
        FULL_STACKS.append(stack)
    return stack


def login(base_url: str, username: str, password: str) -> tuple[httpx.Client, str]:
    """A new HTTP client logged in over the real API, and its CSRF token."""
    client = httpx.Client(base_url=base_url, timeout=30)
    token = client.get("/api/auth/csrf").json()["csrfToken"]
    response = client.post(
        "/api/auth/login", json={"username": username, "password": password}, headers={"X-CSRFToken": token}
    )
    assert response.status_code == 200, response.text
    return client, response.json()["csrfToken"]


@dataclass
class Received:
    """What a client read from one SSE response."""

    status: int = 0
    events: list[dict] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)  # time.time() at each event's arrival
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    body: bytes = b""
    client_port: int = 0  # the local port of the client's connection (Stack.web_pid_serving finds its server)
    broken: bool = False  # the server broke the connection before the stream's end (read_sse's `allow_break`)

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    @property
    def text(self) -> str:
        return "".join(e["delta"] for e in self.events if e["type"] == "content")


def read_sse(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    token: str = "",
    json: dict | None = None,
    headers: dict | None = None,
    stop_after: int | None = None,
    until: Callable[[Received], bool] | None = None,
    allow_break: bool = False,
) -> Received:
    """Make a request and read its SSE events until the server closes, or `stop_after` events, or `until`; or,
    `allow_break`, until the server breaks the connection (`Received.broken`; otherwise that raises)."""
    received = Received()
    all_headers = {"X-CSRFToken": token, **(headers or {})}
    with connect_sse(
        client, method, path, json=json, headers=all_headers, timeout=httpx.Timeout(30, read=120)
    ) as source:
        received.status = source.response.status_code
        received.headers = source.response.headers
        network = source.response.extensions.get("network_stream")
        if network is not None:
            received.client_port = network.get_extra_info("client_addr")[1]
        if received.status != 200:
            received.body = source.response.read()
            return received
        try:
            _read_events(source, received, stop_after, until)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            if not allow_break:
                raise
            received.broken = True
    return received


def _read_events(source, received: Received, stop_after: int | None, until) -> None:
    # Raises httpx.RemoteProtocolError or ReadError when the server breaks the connection mid-stream.
    for sse in source.iter_sse():
        if not sse.data:
            # httpx-sse remembers the last id across events, so it reports a `: ping` comment that follows
            # an event as an event with no data; the SSE spec dispatches nothing for it.
            continue
        event = sse.json()
        # Every event a live test reads keeps the reply-event contract.
        check_event(event)
        received.events.append(event)
        received.ids.append(sse.id)
        received.arrived.append(time.time())
        if stop_after is not None and len(received.events) >= stop_after:
            break
        if until is not None and until(received):
            break


def entry_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def new_chat(client: httpx.Client, token: str) -> str:
    """Create a chat over the API and return its id."""
    response = client.post("/api/chats", json={}, headers={"X-CSRFToken": token})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def send(client: httpx.Client, token: str, chat_id: str, user, content: str = "Hi!", model: str = "scripted", **kwargs):
    """POST a message to the stream endpoint and read the reply's events (see `read_sse` for kwargs)."""
    body = {"content": content, "modelId": model, "userId": str(user.id)}
    return read_sse(client, "POST", f"/api/chats/{chat_id}/messages/stream", token=token, json=body, **kwargs)


def resume(client: httpx.Client, chat_id: str, message_id: str, last_id: str | None = None, **kwargs) -> Received:
    """GET a reply's stream, after `last_id` (sent as the Last-Event-ID header) when given."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    return read_sse(client, "GET", f"/api/chats/{chat_id}/messages/{message_id}/stream", headers=headers, **kwargs)


class TcpProxy:
    """A TCP relay on 127.0.0.1 to `target` (host, port) that can go down and come back, so that a live stack
    pointed at it meets a real outage of that server: `down()` closes every relayed connection (their clients
    see the server hang up) and refuses new ones (nothing listens); `up()` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # down()
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=pump, args=(source, sink), daemon=True).start()
