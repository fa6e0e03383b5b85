"""The whole-path benchmark's hold on what it runs (bench/whole_path.py): the stack, the stand-in, the accounts;
running one load on either path, sampling the processes, and cleaning up after a load that did not finish."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import httpx
import psycopg
import redis

from bench.loadgen import Background
from bench.procfile_stack import ProcfileStack, cpu_seconds, process_tree
from bench.relay import pct
from bench.standin import reply_text

PASSWORD = "bench password 1234"


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
