"""The whole path, measured: chatsite started as `make run` starts it (every role of the Procfile) in front of an
OpenAI-compatible stand-in model server (bench/standin.py), next to the same server streamed directly by the
same load generator, in one run. Run with `make bench` (after the relay figures) or
`python bench/whole_path.py [--quick] [--only paced,unpaced,cpu,send,inflight]`.

What it starts, all on this machine: a redis-server and a PostgreSQL database of its own (created, migrated and
dropped), the stand-in server, and the Procfile's roles (`bench/procfile_stack.py`) on a free port with their
own Celery queues and stream key prefix. chatsite runs with its defaults except the per-user limits
(`CHATSITE_SEND_RATE`, `CHATSITE_MAX_CONCURRENT_REPLIES`), raised because a handful of accounts stand for the
simulated users (each logging in costs a password hash); every reply is a chat of its own. Users log in over
the API (session + CSRF), POST a message and read the reply's SSE stream, as the browser does
(`bench/loadgen.py`).

Each load is run direct, then through chatsite, and is cut off at a time limit: a load that did not finish is
reported as "did not finish: N of M replies in T s", what is left of it is cancelled over the API, and the next
load starts on an idle stack. Figures (each beside the goal of issue 14, and as a ratio to direct):

- paced 50 x 100 at 50 tokens/s; unpaced 1 x 1,000 (10 rounds), 50 x 200, 200 x 100: tokens/s delivered (all
  tokens received / the time from the first send to the last token, round by round) and time to first token
  (send to first text received) p50/p99;
- 1,000 paced replies in flight: errors; at the plateau (the most replies `streaming` in the database at once),
  worker RSS per reply (the worker role's RSS then minus its RSS idle just before, divided by the replies in
  flight), database connections (pg_stat_activity, by role) and Redis connections (CLIENT LIST);
- worker CPU per token and per reply apart from its tokens: the worker roles' CPU (/proc) over two loads that
  differ only in tokens per reply, idle CPU taken off, solved for the two unknowns;
- web CPU per send (see `measure_send`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.chaos import RedisServer, drop_database, free_port, fresh_database  # noqa: E402
from bench.loadgen import Background  # noqa: E402
from bench.procfile_stack import ProcfileStack, cpu_seconds, is_shell, process_tree  # noqa: E402
from bench.relay import pct, setup_django  # noqa: E402
from bench.standin import reply_text, running_standin  # noqa: E402
from bench.whole_path_report import print_report  # noqa: E402

PASSWORD = "bench password 1234"
# (replies at once, rounds, tokens per reply, tokens/s per reply (0: unpaced), time limit in s), full and --quick.
LOADS = {
    "paced": {"full": (50, 1, 100, 50, 30), "quick": (10, 1, 50, 50, 15)},
    "unpaced_1x1000": {"full": (1, 10, 1000, 0, 30), "quick": (1, 3, 200, 0, 10)},
    "unpaced_50x200": {"full": (50, 1, 200, 0, 30), "quick": (10, 1, 100, 0, 15)},
    "unpaced_200x100": {"full": (200, 1, 100, 0, 30), "quick": (20, 1, 50, 0, 15)},
    # Replies of 30 s: the sends of 1,000 take the web process tens of seconds, and all must be in flight at once.
    "inflight": {"full": (1000, 1, 30, 1, 70), "quick": (100, 1, 10, 1, 30)},
}
# Worker CPU: (replies, tokens of the long load, tokens of the short one, time limit).
CPU_LOADS = {"full": (20, 1000, 100, 60), "quick": (5, 200, 20, 20)}
SENDS = {"full": 100, "quick": 20}
# In this order; `inflight` last, because what it leaves is not cleaned up: the stack stops right after it.
STEPS = ("paced", "unpaced", "cpu", "send", "inflight")


class Bench:
    """The running stand-in and stack, the accounts, and helpers to run a load on either path."""

    def __init__(self, args, stack: ProcfileStack, standin_url: str, database_url: str, redis_url: str) -> None:
        self.args = args
        self.stack = stack
        self.standin_url = standin_url  # http://127.0.0.1:<port>/v1
        self.database_url = database_url
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.redis.client_setname("bench-probe")
        self.accounts: list[dict] = []  # {"user", "cookies", "token"}
        self.idle_rates: dict[str, float] = {}
        self.standin_pid = 0

    # --- set-up ---------------------------------------------------------------------------------------------

    def create_accounts(self, count: int) -> None:
        from django.contrib.auth.hashers import make_password

        from chats.models import User

        encoded = make_password(PASSWORD)  # one hash for every account: each login still checks it in full
        users = User.objects.bulk_create(User(username=f"bench{i}", password=encoded) for i in range(count))
        with httpx.Client(base_url=self.stack.base_url, timeout=60) as http:
            for user in users:
                http.cookies.clear()
                token = http.get("/api/auth/csrf").json()["csrfToken"]
                login = http.post(
                    "/api/auth/login",
                    json={"username": user.username, "password": PASSWORD},
                    headers={"X-CSRFToken": token},
                )
                login.raise_for_status()
                self.accounts.append({"user": user, "cookies": dict(http.cookies), "token": login.json()["csrfToken"]})

    def model(self, tokens: int, pace: float) -> str:
        """The modelId of a stand-in model serving `tokens`-token replies at `pace` tokens/s (registered once)."""
        from pipelines.models import ModelConfig

        model_id = f"standin-p{pace:g}-t{tokens}"
        ModelConfig.objects.get_or_create(
            model_id=model_id,
            defaults={
                "display_name": f"Stand-in {tokens} tokens at {pace:g}/s",
                "provider": "openai",
                "provider_model": "standin",
                "base_url": self.path_url(tokens, pace),
                "context_window": 100000,
                "default_max_tokens": tokens,
                "default_temperature": 0.0,
            },
        )
        return model_id

    def path_url(self, tokens: int, pace: float) -> str:
        root = self.standin_url.removesuffix("/v1")
        return f"{root}/pace/{pace:g}/tokens/{tokens}/v1"

    def new_chats(self, count: int) -> list[tuple[int, str]]:
        """`count` new chats, owned round-robin by the accounts: `(account index, chat id)`."""
        from chats.models import Chat

        rows = [Chat(owner=self.accounts[i % len(self.accounts)]["user"], title=f"bench {i}") for i in range(count)]
        Chat.objects.bulk_create(rows, batch_size=1000)
        return [(i % len(self.accounts), str(chat.id)) for i, chat in enumerate(rows)]

    def cookie_jars(self) -> list[dict]:
        return [a["cookies"] for a in self.accounts]

    # --- measuring ------------------------------------------------------------------------------------------

    def role_cpu(self) -> dict[str, float]:
        cpu = {role: self.stack.cpu([role]) for role in self.stack.roles}
        cpu["standin"] = cpu_seconds(process_tree(self.standin_pid))
        return cpu

    def measure_idle(self, seconds: float = 3.0) -> None:
        """Each role's CPU while nothing happens, per second: taken off every CPU figure."""
        before, began = self.role_cpu(), time.monotonic()
        time.sleep(seconds)
        after, wall = self.role_cpu(), time.monotonic() - began
        self.idle_rates = {role: (after[role] - before[role]) / wall for role in after}

    def cpu_used(self, before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
        return {role: max(0.0, after[role] - before[role] - self.idle_rates.get(role, 0) * wall) for role in after}

    def busy(self) -> int:
        from chats.models import Message

        return Message.objects.filter(role="assistant", status__in=("queued", "streaming")).count()

    def streaming(self) -> int:
        from chats.models import Message

        return Message.objects.filter(role="assistant", status="streaming").count()

    def db_connections(self) -> dict[str, int]:
        name = self.database_url.rsplit("/", 1)[1]
        with psycopg.connect(self.database_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            rows = conn.execute(
                "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND application_name LIKE 'chatsite-%%' GROUP BY 1",
                (name,),
            ).fetchall()
        return {app.removeprefix("chatsite-"): n for app, n in rows}

    def redis_connections(self) -> int:
        return sum(1 for c in self.redis.client_list() if c.get("name") != "bench-probe")

    def settle(self, timeout: float = 90) -> dict:
        """Cancel (over the API) every reply still queued or streaming, drop their Celery deliveries, and wait until
        no reply is queued or streaming. Returns what it did."""
        from chats.models import Message

        left = list(
            Message.objects.filter(role="assistant", status__in=("queued", "streaming")).values_list(
                "id", "chat_id", "chat__owner_id"
            )
        )
        if not left:
            return {"cancelled": 0}
        index = {a["user"].id: i for i, a in enumerate(self.accounts)}
        requests = [
            {
                "method": "POST",
                "url": f"{self.stack.base_url}/api/chats/{chat}/messages/{message}/cancel",
                "headers": {"X-CSRFToken": self.accounts[index[owner]]["token"]},
                "client": index[owner],
            }
            for message, chat, owner in left
        ]
        began = time.monotonic()
        outcome = Background(
            {"kind": "calls", "requests": requests, "cookie_jars": self.cookie_jars(), "at_once": 16}
        ).result(timeout=timeout + 60)
        # The cancelled replies' deliveries would each still pass through a worker: drop them.
        for queue in self.stack.queues.values():
            for key in self.redis.scan_iter(match=f"{queue}*"):
                if self.redis.type(key) == "list":
                    self.redis.delete(key)
        while self.busy() and time.monotonic() - began < timeout:
            time.sleep(0.5)
        return {
            "cancelled": len(left),
            "statuses": outcome.get("statuses"),
            "still_busy": self.busy(),
            "seconds": round(time.monotonic() - began, 1),
        }

    # --- loads ----------------------------------------------------------------------------------------------

    def requests(self, target: str, count: int, tokens: int, pace: float) -> list[dict]:
        """`count` requests for the load generator: to the stand-in itself, or sends of new chats to chatsite."""
        if target == "direct":
            body = {
                "model": "standin",
                "stream": True,
                "stream_options": {"include_usage": True},
                "max_tokens": tokens,
                "messages": [{"role": "user", "content": "hello"}],
            }
            path = urlsplit(f"{self.path_url(tokens, pace)}/chat/completions").path
            return [{"path": path, "body": body, "client": 0} for _ in range(count)]
        model = self.model(tokens, pace)
        return [
            {
                "path": f"/api/chats/{chat}/messages/stream",
                "client": k,
                "body": {"content": "hello", "modelId": model, "userId": str(self.accounts[k]["user"].id)},
            }
            for k, chat in self.new_chats(count)
        ]

    def client_headers(self) -> list[dict[str, str]]:
        """Each account's request headers, as its browser sends them: session cookies and the CSRF token."""
        return [
            {
                "Cookie": "; ".join(f"{name}={value}" for name, value in a["cookies"].items()),
                "X-CSRFToken": a["token"],
                "Accept": "text/event-stream",
            }
            for a in self.accounts
        ]

    def run_load(
        self,
        target: str,
        replies: int,
        rounds: int,
        tokens: int,
        pace: float,
        limit: float,
        sample=None,
        settle: bool = True,
    ) -> dict:
        """Run one load on `target` (`direct` or `chatsite`); `sample(background)` runs while it goes. Then, unless
        not `settle`, cancel what is left of it (see `settle`)."""
        url = urlsplit(self.standin_url if target == "direct" else self.stack.base_url)
        job = {
            "kind": "load",
            "host": url.hostname,
            "port": url.port,
            "rounds": [self.requests(target, replies, tokens, pace) for _ in range(rounds)],
            "client_headers": [{}] if target == "direct" else self.client_headers(),
            "warmup": "/v1/models" if target == "direct" else "/api/auth/me",
            "deadline": limit,
            "expected": reply_text(tokens),
        }
        before, began = self.role_cpu(), time.monotonic()
        load = Background(job)
        sampled = sample(load) if sample else None
        outcome = load.result(timeout=limit + 120)
        if target == "chatsite":
            # The last replies' final saves follow their `end` by moments.
            deadline = time.monotonic() + 5
            while self.busy() and time.monotonic() < deadline and all(r["done"] for r in _records(outcome)):
                time.sleep(0.05)
        after, wall = self.role_cpu(), time.monotonic() - began
        summary = summarise(outcome, replies * rounds, limit)
        summary["cpu_seconds"] = {k: round(v, 3) for k, v in self.cpu_used(before, after, wall).items()}
        summary["loadgen_cpu_seconds"] = round(outcome.get("cpu_seconds", 0), 3)
        if sampled is not None:
            summary["sampled"] = sampled
        if target == "chatsite" and settle:
            summary["settle"] = self.settle()
        return summary


def _records(outcome: dict) -> list[dict]:
    return [rec for records in outcome.get("rounds", ()) for rec in records]


def summarise(outcome: dict, planned: int, limit: float) -> dict:
    """Tokens/s, TTFT percentiles (a reply with no token counts as longer than any), errors, replies finished."""
    if "crash" in outcome:
        return {"crash": outcome["crash"], "planned": planned}
    records = _records(outcome)
    tokens = sum(r["tokens"] for r in records)
    finished = sum(1 for r in records if r["done"] and not r["error"])
    span = 0.0
    for records_of_round in outcome["rounds"]:
        ended = [r["last"] for r in records_of_round if r["last"]]
        complete = all(r["done"] or r["error"] for r in records_of_round)
        end = max(ended) if ended and complete else outcome["ended"]
        span += end - records_of_round[0]["round_began"] if records_of_round else 0
    ttfts = [(r["first"] - r["sent"]) if r["first"] and r["sent"] else float("inf") for r in records]
    ttfts += [float("inf")] * (planned - len(records))
    errors = [r["error"] for r in records if r["error"]]
    return {
        "planned": planned,
        "finished": finished,
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:3],
        "seconds": round(outcome["ended"] - outcome["began"], 2),
        "limit": limit,
        "tokens": tokens,
        "tokens_per_s": round(tokens / span, 1) if span > 0 else None,
        "ttft_p50_ms": _ms(pct(ttfts, 0.5)),
        "ttft_p99_ms": _ms(pct(ttfts, 0.99)),
    }


def _ms(seconds: float | None) -> float | None:
    if seconds is None or seconds == float("inf"):
        return None
    return round(seconds * 1000, 1)


# --- the figures --------------------------------------------------------------------------------------------


def measure_loads(b: Bench, names: list[str]) -> dict:
    out = {}
    for name in names:
        replies, rounds, tokens, pace, limit = LOADS[name][b.args.size]
        out[name] = {"shape": {"replies": replies, "rounds": rounds, "tokens": tokens, "pace": pace}}
        for target in ("direct", "chatsite"):
            out[name][target] = b.run_load(target, replies, rounds, tokens, pace, limit)
            _progress(f"{name} {target}", out[name][target])
    return out


def measure_inflight(b: Bench) -> dict:
    """Many slow replies at once: errors, and at the plateau the worker's RSS per reply and connections held."""
    replies, rounds, tokens, pace, limit = LOADS["inflight"][b.args.size]
    worker = b.args.worker_role
    idle = {"worker_rss": b.stack.rss([worker]), "db": b.db_connections(), "redis": b.redis_connections()}

    def sample(load: Background) -> dict:
        best: dict = {"streaming": -1}
        # Sampled until the replies start ending (or the load is over); the busiest moment is kept.
        while load.process.is_alive() and load.progress[1] < replies:
            streaming = b.streaming()
            if streaming >= best["streaming"] and streaming > 0:
                best = {
                    "streaming": streaming,
                    "responses_open": load.progress[0] - load.progress[1],
                    "worker_rss": b.stack.rss([worker]),
                    "worker_processes": sum(1 for p in b.stack.pids([worker]) if not is_shell(p)),
                    "db": b.db_connections(),
                    "redis": b.redis_connections(),
                    "at": round(time.time(), 1),
                }
            if load.progress[2] >= max(1, replies // 100):
                break
            time.sleep(0.5)
        return best

    out = {"shape": {"replies": replies, "rounds": rounds, "tokens": tokens, "pace": pace}, "idle": idle}
    out["direct"] = b.run_load("direct", replies, rounds, tokens, pace, limit)
    _progress("inflight direct", out["direct"])
    # No clean-up (cancelling 1,000 replies over the API takes a minute): the stack stops after this step.
    out["chatsite"] = b.run_load("chatsite", replies, rounds, tokens, pace, limit, sample=sample, settle=False)
    _progress("inflight chatsite", out["chatsite"])
    plateau = out["chatsite"].get("sampled") or {}
    if plateau.get("streaming", 0) > 0:
        out["worker_rss_kib_per_reply"] = round(
            (plateau["worker_rss"] - idle["worker_rss"]) / 1024 / plateau["streaming"], 1
        )
    from django.conf import settings

    out["pool_size"] = getattr(settings, "DATABASE_POOL_MAX_SIZE", None)
    return out


def measure_cpu(b: Bench) -> dict:
    """Worker (and web) CPU per token and per reply apart from its tokens, from two loads differing only in
    tokens per reply: cpu = per_reply x replies + per_token x tokens, solved for both."""
    replies, long_tokens, short_tokens, limit = CPU_LOADS[b.args.size]
    out = {}
    for tokens in (long_tokens, short_tokens):
        out[f"{tokens}_tokens"] = b.run_load("chatsite", replies, 1, tokens, 0, limit)
        _progress(f"cpu {replies} x {tokens}", out[f"{tokens}_tokens"])
    first, second = out[f"{long_tokens}_tokens"], out[f"{short_tokens}_tokens"]
    if "crash" in first or "crash" in second:
        return out
    for label, roles in (("worker", b.stack.worker_roles()), ("web", b.stack.web_roles()), ("standin", ["standin"])):
        c1 = sum(first["cpu_seconds"][r] for r in roles)
        c2 = sum(second["cpu_seconds"][r] for r in roles)
        n1, t1, n2, t2 = first["finished"], first["tokens"], second["finished"], second["tokens"]
        det = n1 * t2 - n2 * t1
        if det == 0 or not n1 or not n2:
            continue
        per_token = (n1 * c2 - n2 * c1) / det
        per_reply = (c1 - per_token * t1) / n1
        out[label] = {
            "us_per_token": round(per_token * 1e6, 1),
            "ms_per_reply": round(per_reply * 1e3, 2),
            "cpu_seconds": [round(c1, 3), round(c2, 3)],
        }
    return out


def measure_send(b: Bench) -> dict:
    """Web CPU per send, p50 and mean. N sends, one after another, each on a new connection, whose responses are
    closed once their headers arrive (the stream is never read); the web roles' CPU (every thread's, to the
    nanosecond) from before each request to 20 ms after it, idle CPU taken off. That is all a send
    costs the web process: accepting the connection and parsing HTTP, the middleware (session, CSRF, user), the
    view (validation, access checks, the transaction that saves the question and the queued reply, the enqueue
    to Celery), and opening and closing the reply's relay; not relaying its events. The same is measured for
    N `GET /api/auth/me` (a connection, the middleware and a session lookup, no view work to speak of): the
    difference is what the send itself adds. The replies are one token long and generate meanwhile on the
    worker (another process, not counted)."""
    count = SENDS[b.args.size]
    pids = b.stack.pids(b.stack.web_roles())
    idle_per_s = sum(b.idle_rates.get(r, 0) for r in b.stack.web_roles())
    model = b.model(1, 0)
    limits = httpx.Limits(max_keepalive_connections=0)
    clients = [
        httpx.Client(base_url=b.stack.base_url, cookies=a["cookies"], limits=limits, timeout=60) for a in b.accounts
    ]
    out: dict = {}
    try:
        for label in ("send", "floor"):
            per_request, statuses = [], {}
            targets = b.new_chats(count) if label == "send" else [(i % len(b.accounts), "") for i in range(count)]
            for k, chat in targets:
                account = b.accounts[k]
                if label == "send":
                    body = {"content": "hello", "modelId": model, "userId": str(account["user"].id)}
                    request = clients[k].build_request(
                        "POST", f"/api/chats/{chat}/messages/stream", json=body,
                        headers={"X-CSRFToken": account["token"], "Accept": "text/event-stream"},
                    )  # fmt: skip
                else:
                    request = clients[k].build_request("GET", "/api/auth/me")
                began, cpu_before = time.monotonic(), cpu_seconds(pids)
                response = clients[k].send(request, stream=True)
                response.close()
                time.sleep(0.02)
                window = time.monotonic() - began
                per_request.append(1000 * (cpu_seconds(pids) - cpu_before - idle_per_s * window))
                statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
            out[label] = {
                "requests": count,
                "statuses": statuses,
                "web_cpu_ms_p50": round(pct(per_request, 0.5), 2),
                "web_cpu_ms_mean": round(sum(per_request) / count, 2),
                "web_cpu_ms_p99": round(pct(per_request, 0.99), 2),
            }
            if label == "send":
                out["settle"] = b.settle()
    finally:
        for client in clients:
            client.close()
    out["send_minus_floor_ms_p50"] = round(out["send"]["web_cpu_ms_p50"] - out["floor"]["web_cpu_ms_p50"], 2)
    return out


def _progress(label: str, summary: dict) -> None:
    if "crash" in summary:
        print(f"[{label}: crashed: {summary['crash']}]", file=sys.stderr, flush=True)
        return
    print(
        f"[{label}: {summary['finished']}/{summary['planned']} in {summary['seconds']} s, "
        f"{summary['tokens_per_s']} tokens/s, TTFT p50 {summary['ttft_p50_ms']} ms]",
        file=sys.stderr,
        flush=True,
    )


# --- running it all -----------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = time.monotonic()
    redis_server = RedisServer(appendonly=False)
    redis_server.start()
    redis.Redis(port=redis_server.port).config_set("maxclients", 15000)
    database_url = fresh_database(args.postgres, name=f"chatsite_bench_whole_{os.getpid()}")
    setup_django(database_url, redis_server.url)
    from django.conf import settings

    log_dir = Path(tempfile.mkdtemp(prefix="chatsite-whole-path-"))
    env = {"CHATSITE_SEND_RATE": "1000000/min", "CHATSITE_MAX_CONCURRENT_REPLIES": "1000000"}
    for item in args.env:
        name, _, value = item.partition("=")
        env[name] = value
    stack = ProcfileStack(database_url, redis_server.url, free_port(), log_dir, extra_env=env)
    schedule_files = {p for p in ROOT.glob("celerybeat-schedule*")}
    figures: dict = {"machine": {"cpus": os.cpu_count()}, "size": args.size, "logs": str(log_dir)}
    try:
        with running_standin(free_port(), tokens=100, pace=0, log=log_dir / "standin.log") as standin:
            queue_settings = [name for name in stack.queues if hasattr(settings, name)]
            stack.start(queue_settings)
            stack.wait_ready()
            figures["roles"] = stack.roles
            b = Bench(args, stack, standin.url, database_url, redis_server.url)
            b.standin_pid = standin.pid
            b.create_accounts(args.accounts)
            # Not measured: the web process's first sends open its broker connection, the worker's first reply
            # loads the provider.
            b.run_load("chatsite", 1, 3, 10, 0, 30)
            b.measure_idle()
            figures["idle_cpu_per_s"] = {k: round(v, 4) for k, v in b.idle_rates.items()}
            figures["setup_seconds"] = round(time.monotonic() - started, 1)
            for step in STEPS:
                if step not in args.only:
                    continue
                began = time.monotonic()
                if step == "paced":
                    figures.update(measure_loads(b, ["paced"]))
                elif step == "unpaced":
                    figures.update(measure_loads(b, ["unpaced_1x1000", "unpaced_50x200", "unpaced_200x100"]))
                elif step == "cpu":
                    figures["cpu"] = measure_cpu(b)
                elif step == "send":
                    figures["send"] = measure_send(b)
                elif step == "inflight":
                    figures["inflight"] = measure_inflight(b)
                stack.check_alive()
                print(f"[{step} done in {time.monotonic() - began:.0f} s]", file=sys.stderr, flush=True)
    finally:
        stack.stop()
        from django.db import connections

        connections.close_all()
        drop_database(args.postgres, database_url)
        redis_server.stop()
        for path in set(ROOT.glob("celerybeat-schedule*")) - schedule_files:
            path.unlink(missing_ok=True)
    figures["total_seconds"] = round(time.monotonic() - started, 1)
    return figures


def main() -> int:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small loads and short time limits (development)")
    parser.add_argument("--only", default=",".join(STEPS), help=f"comma-separated, of: {', '.join(STEPS)}")
    parser.add_argument("--accounts", type=int, default=10, help="accounts the simulated users share (default 10)")
    parser.add_argument("--worker-role", default="worker", help="the Procfile role whose RSS is measured per reply")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for every role's environment")
    parser.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "whole_path.json")
    args = parser.parse_args()
    args.size = "quick" if args.quick else "full"
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(args.only) - set(STEPS):
        parser.error(f"unknown --only step(s): {', '.join(sorted(unknown))}")
    figures = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2, default=str))
    print_report(figures, args)
    print(f"(all figures: {args.json}; took {figures['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
