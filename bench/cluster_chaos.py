"""Faults across hosts (issue 17): `make cluster-chaos`, or `python bench/cluster_chaos.py --help`.

It starts the cluster of bench/cluster.py (nginx, 2 web hosts, 2 worker hosts, beat, a data host with
PostgreSQL and Redis, each a network namespace), then:

1. Throughput on a paced load (`--tput-replies` replies sent at once, each `--tput-tokens` deltas
   `--tput-delay` s apart from the scripted provider): first with 1 web host and 1 worker host behind nginx, then
   with 2 and 2; prints replies per second and the ratio.
2. Chaos: `--replies` replies (sent over `--spread` seconds) stream through nginx while, in turn,
   - one web host's processes are SIGKILLed: its clients resume through the other from Last-Event-ID (the host
     is started again a few seconds later);
   - one worker host's link is cut (`ip link set ... down` at the switch) for `--link-down` seconds: its replies
     end by redelivery or the watchdog, once each;
   - PostgreSQL restarts (`pg_ctl stop -m fast`, down for `--pg-down` seconds, start): a probe asks
     `GET /api/chats` every 100 ms and counts the answers (503 database_unavailable with Retry-After is the
     documented one);
   - Redis restarts (SHUTDOWN, start; append-only file).
   Every client reads its reply to its terminal event, resuming after a broken connection (with Last-Event-ID,
   or the POST again with its Idempotency-Key before it knew its reply) and waiting out a 503's Retry-After.

Ground truth and the four chaos figures are bench/chaos.py's (`score`): events lost, events duplicated, texts
differing from the saved text, streams without exactly one terminal event; plus replies not terminal, client
errors by kind (any answer but 200 and the documented 503, and streams given up), interruptions the clients
resumed from, and the time each fault took to heal. Writes the figures as JSON (bench/results/cluster-chaos.json).
Bounded: every request loop stops by `--timeout`; everything goes to the namespaces' addresses only.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.chaos import FIGURES, PASSWORD, Client, read_stream, score  # noqa: E402
from bench.cluster import Cluster  # noqa: E402
from bench.netns import require_namespace  # noqa: E402

ACTIVE = ("queued", "streaming")


class Tally:
    """What the clients met, by kind: `errors` (counted against the goal), `documented` (503 with Retry-After
    during the PostgreSQL restart), `interruptions` (connections that broke and were resumed)."""

    def __init__(self) -> None:
        self.errors: collections.Counter = collections.Counter()
        self.documented: collections.Counter = collections.Counter()
        self.interruptions: collections.Counter = collections.Counter()
        self.resume_seconds: list[tuple[float, float]] = []  # (when the connection broke, seconds to next event)


async def follow_reply(http: httpx.AsyncClient, token: str, user_id: str, client: Client, tally: Tally,
                       deadline: float, content: str) -> None:  # fmt: skip
    """Send one message and read its reply to the end, across broken connections and 503s."""
    key = uuid.uuid4().hex
    body = {"content": content, "modelId": "chaos", "userId": user_id}
    post = f"/api/chats/{client.chat_id}/messages/stream"
    broke_at: float | None = None
    while client.terminal is None:
        if time.monotonic() > deadline:
            tally.errors["gave_up_at_deadline"] += 1
            return
        resuming_from = broke_at
        failed: Exception | None = None
        try:
            if client.message_id is None:
                headers = {"X-CSRFToken": token, "Idempotency-Key": key}
                await read_stream(http, "POST", post, client, json=body, headers=headers)
            else:
                last = next((ids[-1] for ids in reversed(client.connections) if ids), None)
                resume = f"/api/chats/{client.chat_id}/messages/{client.message_id}/stream"
                await read_stream(http, "GET", resume, client, headers={"Last-Event-ID": last} if last else {})
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            failed = exc
        if resuming_from is not None:
            # The first event after a break: how long the client went without its stream.
            first = next((r["t"] for r in client.reads[-1][1:] if "type" in r), None)
            if first is not None:
                tally.resume_seconds.append((resuming_from, first - resuming_from))
                broke_at = None
        if failed is not None:
            tally.interruptions[type(failed).__name__] += 1
            broke_at = broke_at or time.time()
            await asyncio.sleep(0.1)
            continue
        if client.status == 503:
            code = _code(client.error)
            tally.documented[f"503 {code}"] += 1
            client.error = None
            await asyncio.sleep(min(float(client.retry_after or 1), 1.0))
        elif client.status != 200:
            tally.errors[f"{client.status} {_code(client.error)}"] += 1
            client.error = None
            await asyncio.sleep(0.5)
        elif client.terminal is None:
            # The stream ended without a terminal event (the web process went away cleanly): resume.
            tally.interruptions["closed_without_terminal"] += 1
            broke_at = broke_at or time.time()


def _code(error: str | None) -> str:
    try:
        return json.loads(error or "")["error"]
    except (ValueError, KeyError, TypeError):
        return "non-json"


async def login(base_url: str) -> tuple[httpx.Cookies, str]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        token = (await http.get("/api/auth/csrf")).json()["csrfToken"]
        response = await http.post(
            "/api/auth/login", json={"username": "chaos", "password": PASSWORD}, headers={"X-CSRFToken": token}
        )
        response.raise_for_status()
        return http.cookies, response.json()["csrfToken"]


async def db(fn, *args):
    """Run the ORM call `fn(*args)` on a thread, then hand its connection back to the pool, whose check replaces
    a connection that a PostgreSQL restart closed (this script's own connections live through the restart)."""

    def call():
        from django.db import connections

        try:
            return fn(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(call)


def setup_data(cluster: Cluster, tokens: int, delay: float) -> str:
    """The chaos user and the scripted model (paced by `delay`); returns the user's id."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from chats.models import User
    from pipelines.models import ModelConfig

    user, _ = User.objects.get_or_create(
        username="chaos", defaults={"password": PBKDF2PasswordHasher().encode(PASSWORD, "chaossalt123")}
    )
    ModelConfig.objects.update_or_create(
        model_id="chaos",
        defaults={"display_name": "Chaos", "provider": "scripted", "context_window": 100000,
                  "default_max_tokens": 10000,
                  "options": {"script": [f" t{i}" for i in range(tokens)], "delay": delay}},
    )  # fmt: skip
    return str(user.id)


def new_chats(count: int) -> list[str]:
    from chats.models import Chat, User

    user = User.objects.get(username="chaos")
    return [str(Chat.objects.create(owner=user, title=f"chaos {i}").id) for i in range(count)]


def saved_messages(message_ids: list[str]) -> dict[str, dict]:
    from chats.models import Message

    rows = Message.objects.filter(id__in=message_ids).values("id", "status", "content", "error")
    return {str(r["id"]): {k: v for k, v in r.items() if k != "id"} for r in rows}


def open_replies(since) -> int:
    from chats.models import Message

    return Message.objects.filter(role="assistant", status__in=ACTIVE, created_at__gte=since).count()


async def throughput(cluster: Cluster, base_url: str, replies: int, timeout: float) -> dict:
    """Send `replies` at once through nginx and time until every one has ended."""
    user_id = await db(setup_data, cluster, cluster.tput_tokens, cluster.tput_delay)
    cookies, token = await login(base_url)
    clients = [Client(i, "reader", chat) for i, chat in enumerate(await db(new_chats, replies))]
    tally = Tally()
    started = time.monotonic()
    limits = httpx.Limits(max_connections=replies + 10)
    timeout_ = httpx.Timeout(30, read=90)
    async with httpx.AsyncClient(base_url=base_url, cookies=cookies, timeout=timeout_, limits=limits) as http:
        await asyncio.gather(
            *(follow_reply(http, token, user_id, c, tally, started + timeout, f"q {c.index}") for c in clients)
        )
    seconds = time.monotonic() - started
    done = sum(1 for c in clients if c.terminal == "end")
    return {"replies": replies, "ended": done, "seconds": round(seconds, 2),
            "replies_per_second": round(done / seconds, 2), "errors": dict(tally.errors)}  # fmt: skip


class Probe:
    """Asks `GET /api/chats` through nginx every 100 ms and counts the answers by status and code."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.answers: collections.Counter = collections.Counter()
        self.last_ok = 0.0
        self.without_retry_after = 0
        self.running = True

    async def run(self) -> None:
        while self.running:
            try:
                response = await self.http.get("/api/chats", timeout=10)
                label = str(response.status_code)
                if response.status_code == 200:
                    self.last_ok = time.time()
                elif response.headers.get("content-type", "").startswith("application/json"):
                    label += f" {response.json().get('error')}"
                    if response.status_code == 503 and "Retry-After" not in response.headers:
                        self.without_retry_after += 1
                self.answers[label] += 1
            except httpx.HTTPError as exc:
                self.answers[type(exc).__name__] += 1
            await asyncio.sleep(0.1)


async def all_ready(cluster: Cluster, names: list[str]) -> bool:
    async with httpx.AsyncClient(timeout=3) as http:
        for name in names:
            try:
                if (await http.get(f"{cluster.web_url(name)}/readyz")).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
    return True


async def chaos(cluster: Cluster, args: argparse.Namespace) -> dict:
    from django.utils import timezone

    base_url = cluster.base_url
    user_id = await db(setup_data, cluster, args.tokens, args.delay)
    cookies, token = await login(base_url)
    clients = [Client(i, "reader", chat) for i, chat in enumerate(await db(new_chats, args.replies))]
    tally = Tally()
    heal: dict[str, float] = {}
    moments: dict[str, float] = {}
    since = timezone.now()
    started = time.monotonic()
    deadline = started + args.timeout
    limits = httpx.Limits(max_connections=args.replies + 20)
    http = httpx.AsyncClient(base_url=base_url, cookies=cookies, timeout=httpx.Timeout(10, read=60), limits=limits)
    probe = Probe(httpx.AsyncClient(base_url=base_url, cookies=cookies))
    probe_task = asyncio.create_task(probe.run())

    async def one(client: Client) -> None:
        await asyncio.sleep(client.index * args.spread / args.replies)
        await follow_reply(http, token, user_id, client, tally, deadline, f"question {client.index}")

    tasks = [asyncio.create_task(one(c)) for c in clients]
    webs, workers = cluster.names("web"), cluster.names("worker")

    async def wait_until(predicate, limit: float) -> float:
        """Seconds until `predicate()` (async) holds, from now; -1 if it never did within `limit`."""
        began = time.monotonic()
        while time.monotonic() - began < limit:
            # The database or Redis may be away while we ask.
            with contextlib.suppress(Exception):
                if await predicate():
                    return time.monotonic() - began
            await asyncio.sleep(0.1)
        return -1.0

    # 1. A web host's processes die.
    await asyncio.sleep(args.fault_every)
    moments["web_kill"] = time.time()
    await asyncio.to_thread(cluster.kill_host, webs[0])
    await asyncio.sleep(2)
    resumed = [s for broke, s in tally.resume_seconds if broke >= moments["web_kill"] - 0.5]
    heal["web_host_killed_resume_max_s"] = round(max(resumed), 3) if resumed else 0.0
    await asyncio.sleep(1)
    await asyncio.to_thread(cluster.start_roles, webs[0])
    restarted = time.monotonic()
    await wait_until(lambda: all_ready(cluster, webs), 60)
    heal["web_host_back_ready_s"] = round(time.monotonic() - restarted, 3)

    # 2. A worker host's link is cut mid-reply, then restored.
    await asyncio.sleep(args.fault_every / 2)
    cut = timezone.now()
    moments["link_down"] = time.time()
    await asyncio.to_thread(cluster.set_link, workers[0], False)

    async def replies_running_at_cut_ended() -> bool:
        from chats.models import Message

        return not await db(
            lambda: Message.objects.filter(role="assistant", status="streaming", started_at__lt=cut).exists()
        )

    link_task = asyncio.create_task(wait_until(replies_running_at_cut_ended, args.link_down + 60))
    await asyncio.sleep(args.link_down)
    await asyncio.to_thread(cluster.set_link, workers[0], True)
    moments["link_up"] = time.time()
    heal["worker_link_cut_replies_ended_s"] = round(await link_task, 3)

    # 3. PostgreSQL restarts.
    await asyncio.sleep(args.fault_every / 2)
    moments["postgres_restart"] = time.time()
    before = collections.Counter(probe.answers)
    restart_began = time.monotonic()
    await asyncio.to_thread(cluster.restart_postgres, args.pg_down)
    heal["postgres_restart_took_s"] = round(time.monotonic() - restart_began, 3)

    async def serving() -> bool:
        return probe.last_ok > moments["postgres_restart"] + heal["postgres_restart_took_s"] and await all_ready(
            cluster, webs
        )

    heal["postgres_requests_ok_again_s"] = round(heal["postgres_restart_took_s"] + await wait_until(serving, 60), 3)
    during_pg = probe.answers - before

    # 4. Redis restarts.
    await asyncio.sleep(args.fault_every / 2)
    moments["redis_restart"] = time.time()
    began = time.monotonic()
    await asyncio.to_thread(cluster.restart_redis)
    await wait_until(lambda: all_ready(cluster, webs), 60)
    heal["redis_restart_ready_again_s"] = round(time.monotonic() - began, 3)

    await asyncio.gather(*tasks)
    probe.running = False
    await probe_task
    await http.aclose()
    # Replies may still be ending (the watchdog).
    settle = time.monotonic() + args.settle
    while time.monotonic() < settle and await db(open_replies, since):
        await asyncio.sleep(0.5)
    elapsed = time.monotonic() - started

    ids = [c.message_id for c in clients if c.message_id]
    messages = await db(saved_messages, ids)
    statuses = [m["status"] for m in messages.values()]
    stream_redis = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    totals, broken = await asyncio.to_thread(score, clients, stream_redis, "chatsite:stream:", messages)
    failed_codes = [(m["error"] or {}).get("code") for m in messages.values() if m["status"] == "failed"]
    figures = {
        "replies": args.replies,
        "replies_started": len(ids),
        "completed": statuses.count("completed"),
        "failed": statuses.count("failed"),
        "failed_by_error": dict(collections.Counter(failed_codes)),
        **totals,
        "replies_not_terminal": sum(1 for s in statuses if s in ACTIVE) + (args.replies - len(ids)),
        "client_errors": sum(tally.errors.values()),
        "client_errors_by_kind": dict(tally.errors),
        "documented_503s_by_clients": dict(tally.documented),
        "interruptions_resumed": dict(tally.interruptions),
        "resume_after_break_max_s": round(max((s for _, s in tally.resume_seconds), default=0.0), 3),
        "probe_answers_during_postgres_restart": dict(during_pg),
        "probe_503_without_retry_after": probe.without_retry_after,
        "probe_answers_total": dict(probe.answers),
        "heal_seconds": heal,
        "seconds": round(elapsed, 1),
    }
    if broken:
        figures["broken_streams"] = [
            {"messageId": b["client"].message_id, "found": b["found"], "reads": b["client"].reads,
             "stream": b["entries"], "saved": messages.get(b["client"].message_id)}
            for b in broken[:10]
        ]  # fmt: skip
    return figures


# Client errors other than the documented 503s: bad answers (500, 502...) and replies given up.
GOALS = (*FIGURES, "replies_not_terminal", "client_errors")


def main() -> int:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replies", type=int, default=120, help="replies in the chaos run (default 120)")
    parser.add_argument("--tokens", type=int, default=50, help="deltas per chaos reply (default 50)")
    parser.add_argument("--delay", type=float, default=0.1, help="seconds between deltas (default 0.1)")
    parser.add_argument("--spread", type=float, default=45, help="seconds over which the replies are sent")
    parser.add_argument("--fault-every", type=float, default=5, help="seconds between faults")
    parser.add_argument("--link-down", type=float, default=8, help="seconds a worker host's link is cut")
    parser.add_argument("--pg-down", type=float, default=6, help="seconds PostgreSQL stays down in its restart")
    parser.add_argument("--concurrency", type=int, default=8, help="CHATSITE_NETWORK_SLOTS per worker host")
    parser.add_argument("--tput-replies", type=int, default=96, help="replies at once for the throughput run")
    parser.add_argument("--tput-tokens", type=int, default=20)
    parser.add_argument("--tput-delay", type=float, default=0.1)
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--no-chaos", action="store_true")
    parser.add_argument("--timeout", type=float, default=180, help="seconds the clients may take")
    parser.add_argument("--settle", type=float, default=30, help="seconds to wait for unwatched replies to end")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "cluster-chaos.json")
    args = parser.parse_args()
    random.seed(args.seed)

    cluster = Cluster(worker_concurrency=args.concurrency)
    cluster.tput_tokens, cluster.tput_delay = args.tput_tokens, args.tput_delay
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    figures: dict = {}
    try:
        print("cluster-chaos: starting the cluster...", flush=True)
        # This script's own Django (for the ORM) is set up on the cluster's database: before anything loads the
        # settings (starting the cluster does, for the lifecycle timings of tests/live.py).
        cluster.plan()
        os.environ.update(DATABASE_URL=cluster.database_url, REDIS_URL=cluster.redis_url, CHATSITE_EMBEDDED="0",
                          DJANGO_SETTINGS_MODULE="chatsite.settings", DJANGO_ALLOW_ASYNC_UNSAFE="true")  # fmt: skip
        cluster.start()
        require_namespace()
        import django

        django.setup()
        if not args.no_throughput:
            webs, workers = cluster.names("web"), cluster.names("worker")
            # 1 web host + 1 worker host: the others' processes stop and nginx forgets the second web host.
            cluster.kill_host(webs[1], signal.SIGTERM)
            cluster.kill_host(workers[1], signal.SIGTERM)
            cluster.active_webs = webs[:1]
            cluster.reload_nginx()
            one = asyncio.run(throughput(cluster, cluster.base_url, args.tput_replies, args.timeout))
            print(f"throughput, 1 web + 1 worker host: {one}", flush=True)
            cluster.start_roles(webs[1])
            cluster.start_roles(workers[1])
            cluster.wait(lambda: cluster.http_ok(f"{cluster.web_url(webs[1])}/readyz"), 60, "web2")
            cluster.wait(lambda: cluster.log(workers[1], "worker").count("ready.") >= 2, 60, "worker2")
            cluster.active_webs = webs
            cluster.reload_nginx()
            two = asyncio.run(throughput(cluster, cluster.base_url, args.tput_replies, args.timeout))
            print(f"throughput, 2 web + 2 worker hosts: {two}", flush=True)
            figures["throughput"] = {
                "one_web_one_worker": one,
                "two_web_two_worker": two,
                "ratio": round(two["replies_per_second"] / max(one["replies_per_second"], 1e-9), 2),
                "worker_slots_per_host": args.concurrency,
            }
        if not args.no_chaos:
            print("cluster-chaos: the chaos run...", flush=True)
            figures["chaos"] = asyncio.run(chaos(cluster, args))
    finally:
        from django.db import connections

        connections.close_all()
        logs = ROOT / "var" / "cluster" / "last-run-logs"
        if cluster.tmp:
            shutil.rmtree(logs, ignore_errors=True)
            cluster.save_logs(logs)
        cluster.stop()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2, default=str))
    chaos_figures = figures.get("chaos", {})
    broken = chaos_figures.pop("broken_streams", None)
    for section, values in figures.items():
        print(f"== {section}")
        width = max(len(k) for k in values)
        for key, value in values.items():
            print(f"{key:<{width}}  {value}")
    if broken:
        print(f"broken streams (first {len(broken)}): see {args.json}")
        chaos_figures["broken_streams"] = broken
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    print(f"logs of every host: {logs}")
    missed = [k for k in GOALS if chaos_figures.get(k)]
    if chaos_figures:
        print(f"goal (zero: {', '.join(GOALS)}): " + ("met" if not missed else f"MISSED: {', '.join(missed)}"))
    return 1 if missed else 0


if __name__ == "__main__":
    threading.current_thread().name = "cluster-chaos"
    sys.exit(main())
