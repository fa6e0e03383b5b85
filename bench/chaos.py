"""Chaos test of the reply lifecycle: many concurrent replies while clients drop, resume and cancel, a worker
process is SIGKILLed and Redis restarts. Run with `make chaos` (or `python bench/chaos.py --help`).

It starts its own stack on this machine: a Redis server on a free port (with an append-only file, as a
production Redis keeps one), a fresh PostgreSQL database, daphne, a Celery worker with several processes and
Celery beat; a scripted provider writes the replies. Then it opens `--replies` streams at once from asyncio
clients:
- a third of the clients disconnect at a random point, and half of those resume with their Last-Event-ID;
- about a tenth cancel their reply part-way and read on to its end;
- the rest read to the end.
Mid-run it SIGKILLs the worker process generating one reply and restarts Redis.

Ground truth is each reply's Redis Stream (kept after the run) and its saved row. It prints, and writes as
JSON: replies started, completed, cancelled, failed; events lost (stream entries a client should have read but
did not); events duplicated (an entry read twice, or out of order); resumed texts that differ from the saved
text; replies not in a terminal state at the end; streams without exactly one terminal event.

Every stream that breaks a rule is written up in `var/chaos-failures/<time>-<pid>.json` (and summarised on
stdout): what its client read on each connection (ids, types, arrival times; an event that came without an
`id:` line is marked), the stream's entries, the saved row, and the lines of the worker's, web's and beat's
logs that name it, next to the run's own moments (the SIGKILL, the Redis restart).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import redis
from httpx_sse import aconnect_sse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PASSWORD = "chaos password 1234"
TERMINAL = {"end", "error"}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server of our own, so that restarting it disturbs nobody else."""

    def __init__(self, *, appendonly: bool = True) -> None:
        self.appendonly = appendonly
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="chaos-redis-"))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes" if self.appendonly else "no", "--save", ""],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def restart(self) -> float:
        """SHUTDOWN (the append-only file is flushed) and start again; returns seconds it was down."""
        down = time.monotonic()
        # It answers SHUTDOWN by closing the connection.
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis(port=self.port).shutdown(nosave=False)
        if self.process is not None:
            self.process.wait(timeout=10)
        self.start()
        return time.monotonic() - down

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def fresh_database(server_url: str, name: str = "") -> str:
    """Create an empty database for this run (`name`, default chatsite_chaos_<pid>) and migrate it; return its URL."""
    name = name or f"chatsite_chaos_{os.getpid()}"
    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{server_url}/{name}"
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True)
    return url


def drop_database(server_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Client:
    """One simulated user of one reply."""

    index: int
    role: str  # reader, dropper, resumer, canceller
    chat_id: str
    message_id: str | None = None
    status: int = 0
    # Per connection: the entry ids read, in order.
    connections: list[list[str]] = field(default_factory=list)
    # Per connection: what was read, for the failure report: {"id", "type", "t" (epoch seconds), "noId"?}.
    reads: list[list[dict]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    terminal: str | None = None
    error: str | None = None
    retry_after: str | None = None  # the last response's Retry-After header


async def read_stream(http: httpx.AsyncClient, method: str, path: str, client: Client, *, stop_after=None, **kwargs):
    ids: list[str] = []
    text: list[str] = []
    reads: list[dict] = []
    client.connections.append(ids)
    client.reads.append(reads)
    last_event_id = kwargs.get("headers", {}).get("Last-Event-ID")
    reads.append({"request": f"{method} {path}", "lastEventId": last_event_id, "t": round(time.time(), 3)})
    try:
        await _read_events(http, method, path, client, ids, text, reads, stop_after, **kwargs)
    finally:
        # Also what a connection cut short (a web process killed under it) had read: a client that resumes
        # from its Last-Event-ID adds the rest.
        client.texts.append("".join(text))


async def _read_events(http, method, path, client, ids, text, reads, stop_after, **kwargs) -> None:
    async with aconnect_sse(http, method, path, **kwargs) as source:
        client.status = source.response.status_code
        client.retry_after = source.response.headers.get("Retry-After")
        if client.status != 200:
            client.error = (await source.response.aread()).decode()[:200]
            return
        async for sse in source.aiter_sse():
            if not sse.data:
                continue  # a `: ping` after an event: httpx-sse reports it with the remembered id, no data
            event = sse.json()
            read = {"id": sse.id, "type": event["type"], "t": round(time.time(), 3)}
            if ids and sse.id == ids[-1]:
                # httpx-sse keeps the last id for an event sent without an `id:` line (the relay's ending
                # from the database, or `stream_unavailable`).
                read["noId"] = True
            if event["type"] in TERMINAL or event["type"] == "queued":
                read["event"] = event
            reads.append(read)
            ids.append(sse.id)
            if event["type"] == "start":
                client.message_id = event["messageId"]
            elif event["type"] == "content":
                text.append(event["delta"])
            if event["type"] in TERMINAL:
                client.terminal = event["type"]
                break
            if stop_after is not None and len(ids) >= stop_after:
                break


async def run_client(base_url: str, cookies: httpx.Cookies, token: str, user_id: str, client: Client) -> None:
    headers = {"X-CSRFToken": token}
    timeout = httpx.Timeout(30, read=90)
    async with httpx.AsyncClient(base_url=base_url, cookies=cookies, timeout=timeout) as http:
        body = {"content": f"question {client.index}", "modelId": "chaos", "userId": user_id}
        path = f"/api/chats/{client.chat_id}/messages/stream"
        try:
            if client.role in ("dropper", "resumer"):
                await read_stream(
                    http, "POST", path, client, stop_after=random.randint(1, 25), json=body, headers=headers
                )
                if client.role == "resumer" and client.terminal is None and client.message_id:
                    await asyncio.sleep(random.uniform(0, 1.5))
                    last_id = client.connections[-1][-1]
                    resume = f"/api/chats/{client.chat_id}/messages/{client.message_id}/stream"
                    await read_stream(http, "GET", resume, client, headers={"Last-Event-ID": last_id})
            elif client.role == "canceller":
                await read_stream(
                    http, "POST", path, client, stop_after=random.randint(2, 15), json=body, headers=headers
                )
                if client.terminal is None and client.message_id:
                    cancel = f"/api/chats/{client.chat_id}/messages/{client.message_id}/cancel"
                    response = await http.post(cancel, headers=headers)
                    if response.status_code not in (200, 409):
                        client.error = f"cancel answered {response.status_code}: {response.text[:200]}"
                    last_id = client.connections[-1][-1]
                    resume = f"/api/chats/{client.chat_id}/messages/{client.message_id}/stream"
                    await read_stream(http, "GET", resume, client, headers={"Last-Event-ID": last_id})
            else:
                await read_stream(http, "POST", path, client, json=body, headers=headers)
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            client.error = f"{type(exc).__name__}: {exc}"


def assign_roles(count: int, rng: random.Random) -> list[str]:
    droppers = count // 3
    roles = ["resumer"] * (droppers // 2) + ["dropper"] * (droppers - droppers // 2)
    roles += ["canceller"] * max(1, count // 10)
    roles += ["reader"] * (count - len(roles))
    rng.shuffle(roles)
    return roles


FIGURES = (
    "events_lost",
    "events_duplicated",
    "texts_differing_from_saved",
    "streams_without_exactly_one_terminal_event",
)


def score(
    clients: list[Client], stack_redis: redis.Redis, key_prefix: str, messages: dict[str, dict]
) -> tuple[dict, list[dict]]:
    """Compare what each client read with each reply's stream and saved row.

    Returns the four figures, and for each client whose stream broke a rule: its client, the figures it added,
    and the stream's entries.
    """
    totals = dict.fromkeys(FIGURES, 0)
    broken: list[dict] = []
    for client in clients:
        if not client.message_id:
            continue
        found = dict.fromkeys(FIGURES, 0)
        entries = stack_redis.xrange(f"{key_prefix}{client.message_id}")
        stream_ids = [entry_id for entry_id, _ in entries]
        types = [fields["type"] for _, fields in entries]
        terminal_at = next((i for i, t in enumerate(types) if t in TERMINAL), None)
        if terminal_at is None or sum(t in TERMINAL for t in types) != 1:
            found["streams_without_exactly_one_terminal_event"] += 1
        # What a reader is owed: every entry up to and including the terminal one.
        owed = stream_ids[: terminal_at + 1] if terminal_at is not None else stream_ids
        read = [entry_id for ids in client.connections for entry_id in ids]
        found["events_duplicated"] += len(read) - len(set(read))
        keys = [tuple(map(int, i.split("-"))) for i in read]
        found["events_duplicated"] += sum(1 for a, b in itertools.pairwise(keys) if b <= a and a != b)
        if client.role == "dropper":
            first = client.connections[0]
            found["events_lost"] += len([i for i in owed[: len(first)] if i not in first])
        else:
            found["events_lost"] += len(set(owed) - set(read))
            saved = messages.get(client.message_id, {}).get("content")
            if "".join(client.texts) != saved:
                found["texts_differing_from_saved"] += 1
        for key, value in found.items():
            totals[key] += value
        if any(found.values()):
            broken.append(
                {
                    "client": client,
                    "found": {k: v for k, v in found.items() if v},
                    "entries": [(entry_id, fields["type"], fields["data"][:300]) for entry_id, fields in entries],
                }
            )
    return totals, broken


# Lines of the worker's log that tell what happened to every reply at once.
GLOBAL_LOG_MARKERS = ("SIGKILL", "WorkerLost", "Restoring", "Connection to broker", "Connected to", "Cannot connect")


def failure_report(broken: list[dict], messages: dict[str, dict], log_dir: Path, moments: dict) -> dict:
    """Everything known about the streams that broke a rule, for `var/chaos-failures/`."""
    logs = {
        name: (log_dir / f"{name}.log").read_text(errors="replace").splitlines()
        for name in ("worker", "web", "beat")
        if (log_dir / f"{name}.log").exists()
    }
    report = {
        "moments": moments,
        "worker_events": [line for line in logs.get("worker", []) if any(m in line for m in GLOBAL_LOG_MARKERS)][:100],
        "streams": [],
    }
    for item in broken:
        client: Client = item["client"]
        message_id = client.message_id or ""
        report["streams"].append(
            {
                "messageId": message_id,
                "client": {"index": client.index, "role": client.role, "error": client.error, "texts": client.texts},
                "rules_broken": item["found"],
                "reads": client.reads,
                "stream": item["entries"],
                "saved": messages.get(message_id),
                "logs": {
                    name: [line for line in lines if message_id and message_id in line][:200]
                    for name, lines in logs.items()
                },
            }
        )
    return report


def summarise(report: dict) -> list[str]:
    """A few lines per broken stream, for stdout."""
    lines = []
    for stream in report["streams"]:
        saved = stream["saved"] or {}
        lines.append(
            f"stream {stream['messageId']} ({stream['client']['role']}): {stream['rules_broken']}; "
            f"saved {saved.get('status')} ({len(saved.get('content') or '')} chars, error {saved.get('error')})"
        )
        lines.append("  stream:  " + " ".join(f"{t}@{i}" for i, t, _ in stream["stream"] if t != "content")
                     + f"  ({sum(1 for _, t, _ in stream['stream'] if t == 'content')} content)")  # fmt: skip
        for index, reads in enumerate(stream["reads"]):
            seen = [f"{r['type']}{'(no id)' if r.get('noId') else ''}" for r in reads[1:] if r.get("type") != "content"]
            lines.append(f"  read {index}: {len(reads) - 1} events, {' '.join(seen)}")
        for name, found in stream["logs"].items():
            for line in found[:8]:
                lines.append(f"  {name}: {line[:220]}")
    return lines


async def chaos(args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    random.seed(args.seed)
    redis_server = RedisServer()
    redis_server.start()
    database_url = fresh_database(args.postgres)
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_server.url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    # This script uses the ORM between awaits, one call at a time, on its own database.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    import django

    django.setup()
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from chats.models import Chat, Message, User
    from pipelines.models import ModelConfig
    from tests.live import start_stack

    stack = None
    try:
        user = User.objects.create(username="chaos", password=PBKDF2PasswordHasher().encode(PASSWORD, "chaossalt123"))
        script = [f" t{i}" for i in range(args.tokens)]
        ModelConfig.objects.create(
            model_id="chaos", display_name="Chaos", provider="scripted", context_window=100000,
            default_max_tokens=10000, options={"script": script, "delay": args.delay},
        )  # fmt: skip
        chats = [Chat.objects.create(owner=user, title=f"chaos {i}") for i in range(args.replies)]
        stack = start_stack(database_url, redis_server.url, concurrency=args.workers)
        base_url = stack.base_url
        async with httpx.AsyncClient(base_url=base_url) as http:
            token = (await http.get("/api/auth/csrf")).json()["csrfToken"]
            login = await http.post(
                "/api/auth/login", json={"username": "chaos", "password": PASSWORD}, headers={"X-CSRFToken": token}
            )
            login.raise_for_status()
            token, cookies = login.json()["csrfToken"], http.cookies
        roles = assign_roles(args.replies, rng)
        clients = [Client(i, role, str(chat.id)) for i, (role, chat) in enumerate(zip(roles, chats, strict=True))]
        started = time.monotonic()
        tasks = [asyncio.create_task(run_client(base_url, cookies, token, str(user.id), c)) for c in clients]

        # The chaos: kill the process generating some reply, then restart Redis.
        await asyncio.sleep(args.kill_after)
        moments: dict[str, object] = {"clients_started": round(time.time() - (time.monotonic() - started), 3)}
        r = stack.redis()
        killed = None
        deadline = time.monotonic() + 15
        while killed is None and time.monotonic() < deadline:
            for key in r.scan_iter(f"{stack.key_prefix}*:heartbeat"):
                value = r.get(key)
                if value:
                    killed = int(value.rsplit(":", 1)[1])
                    os.kill(killed, signal.SIGKILL)
                    moments["sigkill"] = round(time.time(), 3)
                    moments["sigkill_reply"] = key.removeprefix(stack.key_prefix).removesuffix(":heartbeat")
                    break
            else:
                await asyncio.sleep(0.1)
        await asyncio.sleep(args.restart_after)
        moments["redis_shutdown"] = round(time.time(), 3)
        downtime = redis_server.restart()
        moments["redis_back"] = round(time.time(), 3)

        await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.timeout)
        # Replies whose clients all left may still be finishing (or waiting for the watchdog).
        deadline = time.monotonic() + args.settle
        active = (Message.Status.QUEUED, Message.Status.STREAMING)
        while Message.objects.filter(role="assistant", status__in=active).exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        elapsed = time.monotonic() - started

        fields = ["id", "status", "content", "error", "finish_reason", "created_at", "started_at", "completed_at"]
        fields += [f for f in ("attempts",) if any(f == x.name for x in Message._meta.get_fields())]
        messages = {
            str(m["id"]): {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in m.items() if k != "id"}
            for m in Message.objects.filter(role="assistant").values(*fields)
        }
        statuses = [m["status"] for m in messages.values()]
        failed_codes = [(m["error"] or {}).get("code") for m in messages.values() if m["status"] == "failed"]
        totals, broken = score(clients, stack.redis(), stack.key_prefix, messages)
        figures = {
            "replies": args.replies,
            "replies_started": sum(1 for c in clients if c.message_id),
            "completed": statuses.count("completed"),
            "cancelled": statuses.count("cancelled"),
            "failed": statuses.count("failed"),
            "failed_by_error": dict(collections.Counter(failed_codes)),
            **totals,
            "replies_not_terminal": sum(1 for s in statuses if s in active),
            "client_errors": sum(1 for c in clients if c.error),
            "roles": {role: roles.count(role) for role in ("reader", "dropper", "resumer", "canceller")},
            "worker_process_killed": killed,
            "redis_restart_seconds": round(downtime, 3),
            "seconds": round(elapsed, 1),
        }  # fmt: skip
        errors = [f"client {c.index} ({c.role}): {c.error}" for c in clients if c.error]
        if errors:
            figures["client_error_samples"] = errors[:5]
        if broken:
            report = failure_report(broken, messages, stack.log_dir, moments)
            path = ROOT / "var" / "chaos-failures" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=1, default=str))
            figures["failure_report"] = str(path)
            figures["failure_summary"] = summarise(report)
        return figures
    finally:
        if stack is not None:
            stack.stop()
        from django.db import connections

        connections.close_all()
        drop_database(args.postgres, database_url)
        redis_server.stop()


# The figures that must be zero.
GOALS = (*FIGURES, "replies_not_terminal", "client_errors")


def main() -> int:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replies", type=int, default=120, help="concurrent replies (default 120)")
    parser.add_argument("--tokens", type=int, default=40, help="deltas per reply (default 40)")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds between deltas (default 0.05)")
    parser.add_argument("--workers", type=int, default=8, help="Celery worker processes (default 8)")
    parser.add_argument("--kill-after", type=float, default=1.5, help="seconds before the SIGKILL")
    parser.add_argument(
        "--restart-after", type=float, default=1.5, help="seconds from the SIGKILL to the Redis restart"
    )
    parser.add_argument("--timeout", type=float, default=180, help="seconds the clients may take")
    parser.add_argument("--settle", type=float, default=30, help="seconds to wait for unwatched replies to end")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--postgres", default=os.environ.get("CHAOS_POSTGRES", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "chaos.json")
    args = parser.parse_args()
    figures = asyncio.run(chaos(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2))
    summary = figures.pop("failure_summary", [])
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    for line in summary:
        print(line)
    missed = [k for k in GOALS if figures[k]]
    print(f"goal (zero: {', '.join(GOALS)}): " + ("met" if not missed else f"MISSED: {', '.join(missed)}"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
