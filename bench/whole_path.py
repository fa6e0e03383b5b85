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

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.chaos import RedisServer, drop_database, free_port, fresh_database  # noqa: E402
from bench.loadgen import Background  # noqa: E402
from bench.procfile_stack import ProcfileStack, cpu_seconds, is_shell  # noqa: E402
from bench.relay import pct, setup_django  # noqa: E402
from bench.standin import running_standin  # noqa: E402
from bench.whole_path_bench import Bench  # noqa: E402
from bench.whole_path_report import print_report  # noqa: E402

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
