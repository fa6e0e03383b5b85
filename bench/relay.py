"""Benchmark of everything between the model and the user's screen. Run with `make bench` (or
`python bench/relay.py --help`).

It starts its own stack on this machine: a redis-server on a free port, a fresh PostgreSQL database, one daphne
web process, Celery workers and beat (`tests.live.start_stack`); and, as the baseline, a second daphne serving
`bench/baseline_asgi.py` (a bare ASGI relay of the same Redis Streams) on its own port. Clients run in another
process (asyncio + httpx); a third process plays the workers when a test needs more streams than Celery
workers could generate at once (it writes entries exactly as `chats.events.EventPublisher` does, carrying
the XADD time `t`). Figures:

- added time to first token (real path: POST, Celery worker, scripted provider with no delay, so the
  provider's own first-token time is `--provider-first-delay`, 0 by default): p50/p99, 1 client and N at once;
- relay latency per event (XADD time `t` to the client's receipt), p50/p99 with `--latency-streams` streams;
- open streams held with no errors, and RSS growth per open stream, for each size in `--open`;
- events per second relayed at saturation, and the web process's CPU;
- database writes per reply (tuples inserted/updated/deleted, pg_stat_user_tables) at 10 and 1,000 tokens;
- Redis connections held by the web process at each size in `--open`.

Each figure is printed next to its goal and the baseline's figure, and everything is written as JSON. The
benchmark never asserts: it reports. Load goes to 127.0.0.1 only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.chaos import RedisServer, drop_database, free_port, fresh_database  # noqa: E402

PASSWORD = "bench password 1234"
TERMINAL = ("end", "error")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- measuring processes (Linux /proc) ----------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tcp_connections_to(pid: int, port: int) -> int:
    """Established TCP connections that `pid` holds to 127.0.0.1:`port` (its Redis connections)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "01" and int(parts[2].split(":")[1], 16) == port and parts[9] in inodes:
            count += 1
    return count


def pct(values: list[float], q: float) -> float | None:
    """The `q` quantile (0..1) of `values`, nearest rank; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


# --- the worker stand-in (its own process) ------------------------------------------------------------------


def publisher(job: dict) -> dict:
    """Write events to streams as chatsite's workers do (`type` + compact JSON `data`, with `t`), through the
    same script (`chats.bus.APPEND_SCRIPT`: XADD, then PUBLISH of the entry), pipelined.

    `job`: `redis_url`, `keys`, `mode`:
    - `rate`: `events` content events per key, `rate` per second per key, then `end`;
    - `slow`: one content event every `interval` seconds per key for `hold` seconds, then `end`;
    - `flood`: `events` content events per key as fast as pipelines go, then `end`.
    A `start` event is written to every key first. Returns `{"written": n, "seconds": s}`.
    """
    from chats.bus import APPEND_SCRIPT

    r = redis.Redis.from_url(job["redis_url"], decode_responses=True)
    append = r.register_script(APPEND_SCRIPT)
    keys = job["keys"]
    began = time.monotonic()
    written = 0

    def write(batch: list[str], event_type: str, extra: dict) -> None:
        nonlocal written
        pipe = r.pipeline(transaction=False)
        for key in batch:
            data = json.dumps({"type": event_type, **extra, "t": time.time()}, separators=(",", ":"))
            # What `chats.bus.RedisBus.append` does: XADD and PUBLISH in one step.
            append(keys=[key], args=["*", 20000, "", "", "type", event_type, "data", data], client=pipe)
        pipe.execute()
        written += len(batch)

    for i in range(0, len(keys), 500):
        write(keys[i : i + 500], "start", {"messageId": "bench"})
    time.sleep(job.get("start_pause", 0))
    mode = job["mode"]
    if mode == "rate":
        # Keys are spread over each tick in small groups, as independent workers would write.
        interval = 1.0 / job["rate"]
        groups = [keys[i : i + 10] for i in range(0, len(keys), 10)]
        tick = time.monotonic()
        for n in range(job["events"]):
            for g, group in enumerate(groups):
                due = tick + n * interval + g * interval / len(groups)
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                write(group, "content", {"delta": f" t{n}"})
    elif mode == "slow":
        rounds = max(1, int(job["hold"] / job["interval"]))
        for n in range(rounds):
            time.sleep(job["interval"])
            for i in range(0, len(keys), 500):
                write(keys[i : i + 500], "content", {"delta": f" t{n}"})
    elif mode == "flood":
        for n in range(job["events"]):
            write(keys, "content", {"delta": f" t{n}"})
    for i in range(0, len(keys), 500):
        write(keys[i : i + 500], "end", {"finishReason": "stop"})
    return {"written": written, "seconds": time.monotonic() - began}


# --- the load generator (its own process) -------------------------------------------------------------------


async def _read(http: httpx.AsyncClient, method: str, url: str, out: dict, **kwargs) -> None:
    """Read one SSE response to its terminal event; record arrival times, `t` latencies, errors in `out`."""
    try:
        async with http.stream(method, url, **kwargs) as response:
            out["headers"] = time.time()
            if response.status_code != 200:
                out["error"] = f"HTTP {response.status_code}"
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                now = time.time()
                if line == "data: [DONE]":  # the OpenAI-compatible API's end
                    out["terminal"], out["last"] = "end", now
                    return
                event = json.loads(line[6:])
                if event.get("object") == "chat.completion.chunk":
                    event = _openai_as_event(event)
                out["events"] += 1
                if "t" in event and event["type"] == "content":
                    out["latencies"].append(now - event["t"])
                if event["type"] == "start":
                    out["started"] = now
                elif event["type"] == "content" and out.get("first_content") is None:
                    out["first_content"] = now
                    out["first_content_xadd"] = event.get("t")
                out["last"] = now
                if event["type"] in TERMINAL:
                    out["terminal"] = event["type"]
                    return
    except (httpx.HTTPError, OSError, json.JSONDecodeError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"


def _openai_as_event(chunk: dict) -> dict:
    """An OpenAI `chat.completion.chunk` as the reply event it stands for (the role chunk as `start`)."""
    delta = (chunk.get("choices") or [{}])[0].get("delta") or {}
    if delta.get("content"):
        return {"type": "content", "delta": delta["content"]}
    return {"type": "start" if delta.get("role") else "chunk"}


async def _streams(job: dict, connected) -> dict:
    """Open GET streams on `job["urls"]`, `ramp` per second, and read each to its end."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    timeout = httpx.Timeout(30, read=job.get("read_timeout", 60))
    outs = [{"events": 0, "latencies": [], "error": None, "terminal": None} for _ in job["urls"]]
    async with httpx.AsyncClient(cookies=job.get("cookies"), limits=limits, timeout=timeout) as http:
        tasks = []
        began = time.time()
        for i, (url, out) in enumerate(zip(job["urls"], outs, strict=True)):
            due = began + i / job.get("ramp", 1e9)
            if (wait := due - time.time()) > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(_read(http, "GET", url, out)))

        async def count() -> None:
            while True:
                connected.value = sum(1 for o in outs if "started" in o)
                await asyncio.sleep(0.1)

        counter = asyncio.create_task(count())
        await asyncio.wait_for(asyncio.gather(*tasks), job.get("deadline", 300))
        counter.cancel()
        connected.value = sum(1 for o in outs if "started" in o)
    latencies = [x for o in outs for x in o["latencies"]]
    firsts = [o["first_content"] for o in outs if o.get("first_content")]
    lasts = [o["last"] for o in outs if "last" in o]
    errors = [
        o["error"] or f"no terminal event ({o['events']} events)" for o in outs if o["error"] or not o["terminal"]
    ]
    return {
        "streams": len(outs),
        "events": sum(o["events"] for o in outs),
        "latencies": latencies,
        "errors": len(errors),
        "error_samples": errors[:3],
        "first": min(firsts) if firsts else None,
        "last": max(lasts) if lasts else None,
    }


async def _posts(job: dict) -> dict:
    """POST one message per chat in `job["chats"]`, `at_once` at a time; time POST sent -> first `content`."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    timeout = httpx.Timeout(60, read=120)
    ttfts, xadd_to_receipt, errors = [], [], []
    # Where the time goes: POST sent -> response headers (the web process's view) -> `start` (queue and
    # worker's claim) -> first `content` (the worker's steps up to its first XADD of text, and the relay).
    phases: dict[str, list[float]] = {"post_to_headers": [], "headers_to_start": [], "start_to_first_content": []}
    async with httpx.AsyncClient(base_url=job["base_url"], cookies=job["cookies"], limits=limits, timeout=timeout) as h:
        chats = job["chats"]
        for i in range(0, len(chats), job["at_once"]):
            group = chats[i : i + job["at_once"]]
            outs = [{"events": 0, "latencies": [], "error": None, "terminal": None} for _ in group]
            sent = time.time()
            if job.get("protocol") == "openai":
                # Each request makes its own chat: `chats` only counts the requests.
                body = {"model": job["model"], "messages": [{"role": "user", "content": "hello"}], "stream": True}
                requests = [
                    ("/v1/chat/completions", body, {"Authorization": f"Bearer {job['api_key']}"}) for _ in group
                ]
            else:
                body = {"content": "hello", "modelId": job["model"], "userId": job["user_id"]}
                requests = [
                    (f"/api/chats/{chat}/messages/stream", body, {"X-CSRFToken": job["token"]}) for chat in group
                ]
            await asyncio.gather(
                *(
                    _read(h, "POST", path, out, json=body, headers=headers)
                    for (path, body, headers), out in zip(requests, outs, strict=True)
                )
            )
            for out in outs:
                if out["error"] or out.get("first_content") is None or not out["terminal"]:
                    errors.append(out["error"] or "no content or no terminal event")
                    continue
                ttfts.append(out["first_content"] - sent)
                if out.get("headers") and out.get("started"):
                    phases["post_to_headers"].append(out["headers"] - sent)
                    phases["headers_to_start"].append(out["started"] - out["headers"])
                    phases["start_to_first_content"].append(out["first_content"] - out["started"])
                if out.get("first_content_xadd"):
                    xadd_to_receipt.append(out["first_content"] - out["first_content_xadd"])
            await asyncio.sleep(job.get("pause", 0.05))
    return {
        "ttfts": ttfts,
        "xadd_to_receipt": xadd_to_receipt,
        "phases": phases,
        "errors": len(errors),
        "error_samples": errors[:3],
    }


def _loadgen_main(job: dict, results, connected) -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        outcome = asyncio.run(_posts(job) if job["kind"] == "posts" else _streams(job, connected))
    except Exception as exc:  # reported to the parent, which prints it with the figures
        outcome = {"crash": f"{type(exc).__name__}: {exc}"}
    results.put(outcome)


class Background:
    """A function run in a spawned process (load generator or publisher); `.result()` waits for its answer."""

    def __init__(self, target, job: dict) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.queue = ctx.Queue()
        self.connected = ctx.Value("i", 0)
        if target is publisher:
            self.process = ctx.Process(target=_publisher_main, args=(job, self.queue))
        else:
            self.process = ctx.Process(target=_loadgen_main, args=(job, self.queue, self.connected))
        self.process.start()

    def result(self, timeout: float = 600) -> dict:
        try:
            return self.queue.get(timeout=timeout)
        finally:
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()


def _publisher_main(job: dict, results) -> None:
    results.put(publisher(job))


# --- the tests ----------------------------------------------------------------------------------------------


class Bench:
    """The running stack and baseline, the bench user, and helpers to run each measurement on both."""

    def __init__(self, args: argparse.Namespace, stack, redis_server: RedisServer, baseline, baseline_url: str):
        self.args = args
        self.stack = stack
        self.redis_server = redis_server
        self.baseline = baseline
        self.baseline_url = baseline_url
        self.redis = redis.Redis.from_url(redis_server.url, decode_responses=True)

    def targets(self) -> dict[str, tuple[int, str]]:
        """`name -> (pid, url prefix)` for chatsite and the baseline."""
        return {"chatsite": (self.stack.web_pids()[0], "chatsite"), "baseline": (self.baseline.pid, "baseline")}

    def synthetic_messages(self, count: int) -> list[tuple[str, str]]:
        """`count` finished assistant messages in one chat (so no watchdog touches them): `(chat, message)`."""
        from django.utils import timezone

        from chats.models import Chat, Message

        chat = Chat.objects.create(owner=self.user, title="bench streams")
        now = timezone.now()
        rows = [
            Message(chat=chat, role="assistant", status="completed", model_id="bench10", created_at=now)
            for _ in range(count)
        ]
        Message.objects.bulk_create(rows, batch_size=1000)
        return [(str(chat.id), str(m.id)) for m in rows]

    def urls(self, target: str, pairs: list[tuple[str, str]], keys: list[str]) -> list[str]:
        if target == "chatsite":
            return [f"{self.stack.base_url}/api/chats/{c}/messages/{m}/stream" for c, m in pairs]
        return [f"{self.baseline_url}/{key}" for key in keys]

    def run_streams(self, target: str, count: int, pub_job: dict, *, ramp: float, sample=None) -> dict:
        """Create `count` streams, publish with `pub_job`, read them all from `target`; `sample(bg)` runs
        while they are open."""
        pairs = self.synthetic_messages(count)
        keys = [f"{self.stack.key_prefix}{m}" for _, m in pairs]
        pub = Background(publisher, {"redis_url": self.redis_server.url, "keys": keys, **pub_job})
        # Every stream has its `start` before a client asks: as when a reply's worker already began.
        deadline = time.monotonic() + 60
        while self.redis.exists(keys[-1]) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        job = {
            "kind": "streams",
            "urls": self.urls(target, pairs, keys),
            "cookies": self.cookies,
            "ramp": ramp,
            "read_timeout": 120,
        }
        load = Background(_loadgen_main, job)
        sampled = sample(load) if sample else None
        outcome = load.result()
        pub.result()
        self.redis.delete(*keys)
        return {**outcome, "sampled": sampled}


def summary_ms(values: list[float]) -> dict:
    return {
        "p50_ms": round(pct(values, 0.5) * 1000, 2) if values else None,
        "p99_ms": round(pct(values, 0.99) * 1000, 2) if values else None,
        "n": len(values),
    }


def measure_ttft(b: Bench) -> dict:
    """Added time to first token on the real path, 1 client in sequence and `--at-once` clients at once."""
    from chats.models import Chat

    out = {}
    first = b.args.provider_first_delay
    # A few replies first, not measured: the web process's first send opens its broker connection and the
    # workers' first reply loads the provider; those are start-up costs, not the added time of a reply.
    warmup = [str(Chat.objects.create(owner=b.user, title=f"warm-up {i}").id) for i in range(b.args.warmup)]
    warm = Background(_loadgen_main, {**b.post_job, "kind": "posts", "chats": warmup, "at_once": 1, "model": "bench10"})
    out["warmup_ttfts_ms"] = [round(t * 1000, 1) for t in warm.result().get("ttfts", [])]
    for label, total, at_once, protocol in (
        ("1_client", b.args.ttft_samples, 1, "seed004"),
        ("openai_1_client", b.args.ttft_samples, 1, "openai"),
        (f"{b.args.at_once}_at_once", b.args.at_once * b.args.ttft_rounds, b.args.at_once, "seed004"),
    ):
        chats = [str(Chat.objects.create(owner=b.user, title=f"ttft {i}").id) for i in range(total)]
        job = {**b.post_job, "kind": "posts", "chats": chats, "at_once": at_once, "model": "bench10"}
        job["protocol"] = protocol
        result = Background(_loadgen_main, job).result()
        if "crash" in result:
            out[label] = result
            continue
        out[label] = {
            **summary_ms([t - first for t in result["ttfts"]]),
            "errors": result["errors"],
            "first_content_xadd_to_receipt": summary_ms(result["xadd_to_receipt"]),
            "phases": {name: summary_ms(values) for name, values in result["phases"].items()},
        }
    return out


def db_tuples(database_url: str) -> dict[str, int]:
    """Tuples inserted + updated + deleted so far, per table (pg_stat_user_tables).

    PostgreSQL 15 backends flush their counters lazily: at most once a second, and up to 10 s after they go
    idle (chatsite's pooled connections stay open). So this waits until the readings have not moved for
    11 s (at most 40 s). Call it only when no reply is being generated.
    """
    import psycopg
    from django.db import connections

    connections.close_all()
    last, since = None, time.monotonic()
    deadline = time.monotonic() + 40
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            rows = dict(
                conn.execute("SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables").fetchall()
            )
            if rows != last:
                last, since = rows, time.monotonic()
            elif time.monotonic() - since >= 11:
                break
            time.sleep(1)
    return last or {}


def measure_db_writes(b: Bench, database_url: str) -> dict:
    """Database tuples written per reply (and on the message table alone) at 10 and 1,000 tokens."""
    from chats.models import Chat

    out = {}
    for model, tokens in (("bench10", 10), ("bench1000", 1000)):
        count = b.args.db_replies
        chats = [str(Chat.objects.create(owner=b.user, title=f"db {i}").id) for i in range(count)]
        before = db_tuples(database_url)
        job = {**b.post_job, "kind": "posts", "chats": chats, "at_once": 1, "model": model}
        result = Background(_loadgen_main, job).result()
        after = db_tuples(database_url)
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
        out[f"{tokens}_tokens"] = {
            "tuples_written_per_reply": round(sum(delta.values()) / count, 2),
            "message_rows_written_per_reply": round(delta.get("chats_message", 0) / count, 2),
            "by_table": delta,
            "errors": result.get("errors", result.get("crash")),
        }
    return out


def measure_latency(b: Bench) -> dict:
    """Relay latency per event (XADD to receipt) with `--latency-streams` streams at `--latency-rate` each."""
    out = {}
    pub_job = {"mode": "rate", "rate": b.args.latency_rate, "events": b.args.latency_events, "start_pause": 3.0}
    for target in ("chatsite", "baseline"):
        count = b.args.latency_streams
        result = b.run_streams(target, count, pub_job, ramp=200)
        out[target] = {
            **summary_ms(result["latencies"]),
            "errors": result["errors"],
            "samples": result["error_samples"],
        }
    return out


def measure_open(b: Bench) -> dict:
    """Open slow streams in `--open` sizes: errors, RSS growth per stream, Redis connections of the web process."""
    out: dict = {}
    for target, (pid, _) in b.targets().items():
        out[target] = {}
        for count in b.args.open:
            rss_before = rss_bytes(pid)
            ramp = b.args.open_ramp
            hold = count / ramp + b.args.open_hold

            def sample(load: Background, count=count, pid=pid, ramp=ramp) -> dict:
                # Measured once every stream got its `start` (or when the ramp should be long over).
                deadline = time.monotonic() + count / ramp + 30
                while load.connected.value < count and time.monotonic() < deadline and load.process.is_alive():
                    time.sleep(0.2)
                time.sleep(1.0)
                return {
                    "connected": load.connected.value,
                    "rss": rss_bytes(pid),
                    "redis_connections": tcp_connections_to(pid, b.redis_server.port),
                }

            pub_job = {"mode": "slow", "interval": b.args.open_interval, "hold": hold, "start_pause": 0}
            result = b.run_streams(target, count, pub_job, ramp=ramp, sample=sample)
            s = result["sampled"]
            out[target][str(count)] = {
                "streams": count,
                "held_at_once": s["connected"],
                "errors": result["errors"],
                "error_samples": result["error_samples"],
                "rss_growth_kib_per_stream": round((s["rss"] - rss_before) / 1024 / count, 1),
                "redis_connections": s["redis_connections"],
            }
            time.sleep(1.0)
    return out


def measure_saturation(b: Bench) -> dict:
    """Events per second relayed when workers write as fast as they can, and the web process's CPU."""
    out = {}
    for target, (pid, _) in b.targets().items():
        cpu_before, began = cpu_seconds(pid), time.monotonic()
        pub_job = {"mode": "flood", "events": b.args.flood_events, "start_pause": 2.0}
        result = b.run_streams(target, b.args.flood_streams, pub_job, ramp=500)
        cpu = cpu_seconds(pid) - cpu_before
        wall = time.monotonic() - began
        span = (result["last"] - result["first"]) if result["first"] and result["last"] else None
        out[target] = {
            "events": result["events"],
            "events_per_second": round(result["events"] / span) if span else None,
            "web_cpu_seconds": round(cpu, 2),
            "web_cpu_percent_of_one_core": round(100 * cpu / wall, 1),
            "web_cpu_us_per_event": round(1e6 * cpu / result["events"], 1) if result["events"] else None,
            "errors": result["errors"],
        }
    return out


# --- running it all -----------------------------------------------------------------------------------------


def setup_django(database_url: str, redis_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    # This script uses the ORM between awaits, one call at a time, on its own database.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    import django

    django.setup()


def run(args: argparse.Namespace) -> dict:
    redis_server = RedisServer()
    redis_server.start()
    # Many clients at once: redis-server takes maxclients from its own file limit.
    redis.Redis(port=redis_server.port).config_set("maxclients", 15000)
    database_url = fresh_database(args.postgres)
    setup_django(database_url, redis_server.url)
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from chats.models import User
    from pipelines.models import ModelConfig
    from tests.live import start_stack

    stack = baseline = None
    try:
        user = User.objects.create(username="bench", password=PBKDF2PasswordHasher().encode(PASSWORD, "benchsalt1234"))
        for tokens in (10, 1000):
            ModelConfig.objects.create(
                model_id=f"bench{tokens}", display_name=f"Bench {tokens}", provider="scripted",
                context_window=100000, default_max_tokens=10000,
                options={"script": [f" t{i}" for i in range(tokens)], "first_delay": args.provider_first_delay},
            )  # fmt: skip
        env = {"CHATSITE_BENCH_TIMESTAMPS": "1", "CHATSITE_WORKER_LOST_SECONDS": "600"}
        for item in args.env:
            name, _, value = item.partition("=")
            env[name] = value
        # One web process, as the baseline is one: these figures are per process (CPU, RSS, connections).
        stack = start_stack(database_url, redis_server.url, extra_env=env, concurrency=args.workers, web_processes=1)
        baseline_port = free_port()
        baseline = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(baseline_port),
             "bench.baseline_asgi:application"],
            cwd=ROOT, env={**os.environ, "REDIS_URL": redis_server.url}, stdout=subprocess.DEVNULL,
            stderr=(stack.log_dir / "baseline.log").open("a"),
        )  # fmt: skip
        baseline_url = f"http://127.0.0.1:{baseline_port}"
        for _ in range(100):
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection(("127.0.0.1", baseline_port), timeout=1).close()
                break
            time.sleep(0.1)
        with httpx.Client(base_url=stack.base_url) as http:
            token = http.get("/api/auth/csrf").json()["csrfToken"]
            login = http.post(
                "/api/auth/login", json={"username": "bench", "password": PASSWORD}, headers={"X-CSRFToken": token}
            )
            login.raise_for_status()
            token, cookies = login.json()["csrfToken"], dict(http.cookies)
        b = Bench(args, stack, redis_server, baseline, baseline_url)
        b.user, b.cookies = user, cookies
        b.post_job = {"base_url": stack.base_url, "cookies": cookies, "token": token, "user_id": str(user.id)}
        from chats.actions import do_create_api_key

        b.post_job["api_key"] = do_create_api_key(user, name="bench")[1]
        figures: dict = {"machine": {"cpus": os.cpu_count()}, "sizes": vars(args) | {"postgres": None, "json": None}}
        for name, step in (
            ("ttft", lambda: measure_ttft(b)),
            ("db_writes", lambda: measure_db_writes(b, database_url)),
            ("latency", lambda: measure_latency(b)),
            ("open_streams", lambda: measure_open(b)),
            ("saturation", lambda: measure_saturation(b)),
        ):
            if name in args.skip:
                continue
            began = time.monotonic()
            figures[name] = step()
            print(f"[{name} done in {time.monotonic() - began:.0f} s]", file=sys.stderr, flush=True)
        return figures
    finally:
        if baseline is not None:
            baseline.terminate()
            baseline.wait(10)
        if stack is not None:
            stack.stop()
        from django.db import connections

        connections.close_all()
        drop_database(args.postgres, database_url)
        redis_server.stop()


def fmt(value, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"


def table(f: dict, args: argparse.Namespace) -> list[tuple[str, str, str, str]]:
    """Rows of (figure, chatsite, goal, baseline)."""
    rows = []
    if "ttft" in f:
        one, many = f["ttft"]["1_client"], f["ttft"][f"{args.at_once}_at_once"]
        rows += [
            ("added TTFT, 1 client, p50", fmt(one.get("p50_ms"), " ms"), "<= 15 ms", "n/a"),
            ("added TTFT, 1 client, p99", fmt(one.get("p99_ms"), " ms"), "<= 50 ms", "n/a"),
            (f"added TTFT, {args.at_once} at once, p99", fmt(many.get("p99_ms"), " ms"), "<= 150 ms", "n/a"),
            ("  (errors)", f"{one.get('errors')} / {many.get('errors')}", "0", "n/a"),
        ]
        if openai := f["ttft"].get("openai_1_client"):
            ratio = (
                f" ({100 * openai['p50_ms'] / one['p50_ms']:.0f}% of seed 004's)"
                if openai.get("p50_ms") and one.get("p50_ms")
                else ""
            )
            rows.append(
                ("added TTFT, 1 client, p50, OpenAI API", f"{fmt(openai.get('p50_ms'), ' ms')}{ratio}",
                 "within 10% of seed 004's", "n/a")
            )  # fmt: skip
        for label, part in (("1 client", one), (f"{args.at_once} at once", many)):
            phases = part.get("phases") or {}
            p50s = [fmt((phases.get(k) or {}).get("p50_ms")) for k in
                    ("post_to_headers", "headers_to_start", "start_to_first_content")]  # fmt: skip
            rows.append((f"  {label}, p50: POST view / to start / to content", " / ".join(p50s) + " ms", "-", "n/a"))
    if "latency" in f:
        c, base = f["latency"]["chatsite"], f["latency"]["baseline"]
        n = args.latency_streams
        rows += [
            (f"relay latency, {n} streams, p50", fmt(c["p50_ms"], " ms"), "<= 2 ms", fmt(base["p50_ms"], " ms")),
            (f"relay latency, {n} streams, p99", fmt(c["p99_ms"], " ms"), "<= 20 ms", fmt(base["p99_ms"], " ms")),
        ]
    if "open_streams" in f:
        c, base = f["open_streams"]["chatsite"], f["open_streams"]["baseline"]
        for n in args.open:
            cs, bs = c[str(n)], base[str(n)]
            rows.append(
                (
                    f"open streams {n}: held / errors",
                    f"{cs['held_at_once']} / {cs['errors']}",
                    f"{n} / 0",
                    f"{bs['held_at_once']} / {bs['errors']}",
                )
            )
            rows.append(
                (
                    f"open streams {n}: RSS per stream",
                    f"{cs['rss_growth_kib_per_stream']} KiB",
                    "<= 64 KiB",
                    f"{bs['rss_growth_kib_per_stream']} KiB",
                )
            )
            rows.append(
                (f"Redis connections, {n} streams", str(cs["redis_connections"]), "same at all sizes",
                 str(bs["redis_connections"]))
            )  # fmt: skip
    if "saturation" in f:
        c, base = f["saturation"]["chatsite"], f["saturation"]["baseline"]
        ratio = (
            f" ({100 * c['events_per_second'] / base['events_per_second']:.0f}% of baseline)"
            if c["events_per_second"] and base["events_per_second"]
            else ""
        )
        rows += [
            ("events/s relayed at saturation", f"{fmt(c['events_per_second'])}{ratio}", ">= 50% of baseline",
             fmt(base["events_per_second"])),
            ("  web CPU, % of one core", fmt(c["web_cpu_percent_of_one_core"], "%"), "-",
             fmt(base["web_cpu_percent_of_one_core"], "%")),
            ("  web CPU per event", fmt(c["web_cpu_us_per_event"], " us"), "-",
             fmt(base["web_cpu_us_per_event"], " us")),
        ]  # fmt: skip
    if "db_writes" in f:
        for key in ("10_tokens", "1000_tokens"):
            d = f["db_writes"][key]
            rows.append(
                (f"DB rows written per reply, {key.replace('_', ' ')}",
                 f"{d['tuples_written_per_reply']} (message: {d['message_rows_written_per_reply']})",
                 "<= 3, same at 10 and 1000", "n/a")
            )  # fmt: skip
    return rows


def main() -> int:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=4, help="Celery worker processes (default 4)")
    parser.add_argument("--provider-first-delay", type=float, default=0.0, help="scripted first-token delay, s")
    parser.add_argument("--ttft-samples", type=int, default=40, help="sequential replies for 1-client TTFT")
    parser.add_argument("--warmup", type=int, default=5, help="replies sent (not measured) before the TTFT runs")
    parser.add_argument("--at-once", type=int, default=50, help="replies posted at once (default 50)")
    parser.add_argument("--ttft-rounds", type=int, default=2, help="rounds of --at-once replies")
    parser.add_argument("--db-replies", type=int, default=5, help="replies per token count for DB writes")
    parser.add_argument("--latency-streams", type=int, default=200, help="streams for relay latency")
    parser.add_argument("--latency-rate", type=float, default=10, help="events per second per stream")
    parser.add_argument("--latency-events", type=int, default=60, help="events per stream")
    parser.add_argument(
        "--open", type=lambda s: [int(x) for x in s.split(",")], default=[10, 1000, 5000], help="open stream sizes"
    )
    parser.add_argument(
        "--open-ramp",
        type=float,
        default=150,
        help="streams opened per second (default 150: each GET runs "
        "chatsite's sync view, session and access check, before its stream is held)",
    )
    parser.add_argument("--open-hold", type=float, default=8, help="seconds every stream stays open at least")
    parser.add_argument("--open-interval", type=float, default=4, help="seconds between events of a slow stream")
    parser.add_argument("--flood-streams", type=int, default=50, help="streams at saturation")
    parser.add_argument("--flood-events", type=int, default=2000, help="events per stream at saturation")
    parser.add_argument("--skip", default="", help="comma-separated: ttft,db_writes,latency,open_streams,saturation")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the stack's processes")
    parser.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "relay.json")
    args = parser.parse_args()
    args.skip = [s for s in args.skip.split(",") if s]
    figures = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2, default=str))
    rows = [("figure", "chatsite", "goal", "baseline"), *table(figures, args)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(f"(all figures: {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
