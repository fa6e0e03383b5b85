"""CPU that the web process spends on one send: `POST /api/chats/<chatId>/messages/stream` (seed 004), with a
session and with an API key (Bearer). Run with `make bench-send` (or `python bench/send_cpu.py --help`).

The requests run in this process, through Django's whole handler (every middleware, DRF, the view, the
database and Redis for real: a fresh PostgreSQL database and a redis-server of its own), one at a time, with
`time.process_time()` around each: the CPU the request costs, not the time it waits. The reply's stream body
is not read (that is the relay's cost: `make bench`). Each send goes to a chat with some history and no reply
in progress; between sends (not measured) the reply is marked done, as a worker would, and the user's rate-limit
history is emptied (the run sends far more than the limit lets one user). The Celery task is
published for real to a queue of this run that nothing consumes.

Baselines, measured in the same run and the same way: a bare DRF view that does nothing (same middleware,
same authentication), and `GET /api/chats/<chatId>`. Printed per kind: CPU p50/p99 per request in ms, the ratio
of p50 to the bare view's, and queries per request, and what the enqueue (`chats.actions.enqueue_reply`: the
Celery publish) costs on its own. `--profile N` prints the functions that took the most CPU over N more session
sends (cProfile; `--profile-kind` profiles another request). The benchmark never asserts: it reports.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.chaos import RedisServer, drop_database, fresh_database  # noqa: E402

CHATS = 20
HISTORY = 10  # earlier messages in each chat


def setup_django(database_url: str, redis_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
    os.environ["CHATSITE_EMBEDDED"] = "0"
    os.environ["CHATSITE_CELERY_QUEUE"] = f"bench-send-{uuid.uuid4().hex[:8]}"
    os.environ["CHATSITE_SEND_RATE"] = "1000000/min"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    import django

    django.setup()


def bare_view():
    """A DRF view that does nothing: what every authenticated API request costs before its own work."""
    from rest_framework.response import Response
    from rest_framework.views import APIView

    class Bare(APIView):
        def post(self, request, chat_id):
            return Response({})

        def get(self, request, chat_id):
            return Response({})

    return Bare.as_view()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Bench:
    def __init__(self, requests: int):
        from django.test import Client
        from django.utils import timezone

        from chats.actions import do_create_api_key
        from chats.models import Chat, Message, User
        from pipelines.models import ModelConfig

        self.requests = requests
        self.user = User.objects.create_user("sender", "sender@example.com", "bench password 1234")
        ModelConfig.objects.update_or_create(
            model_id="scripted",
            defaults={"display_name": "Scripted", "provider": "scripted", "options": {"script": ["Hi"]}},
        )
        self.chats = []
        for index in range(CHATS):
            chat = Chat.objects.create(owner=self.user, title=f"chat {index}")
            now = timezone.now()
            Message.objects.bulk_create(
                Message(chat=chat, role=("user", "assistant")[i % 2], content=f"message {i}", status="completed",
                        created_at=now + timezone.timedelta(microseconds=i))
                for i in range(HISTORY)
            )  # fmt: skip
            self.chats.append(str(chat.id))
        self.session = Client(enforce_csrf_checks=True)
        self.session.force_login(self.user)
        self.session.get("/api/auth/csrf")
        self.csrf = self.session.cookies["csrftoken"].value
        _, key = do_create_api_key(self.user, name="bench")
        self.bearer = Client()
        self.bearer_headers = {"Authorization": f"Bearer {key}"}
        self.sent = 0

    def body(self) -> str:
        body = {"content": "What is the capital of France?", "modelId": "scripted", "userId": str(self.user.id)}
        return json.dumps(body)

    def request(self, kind: str, chat_id: str):
        """Make one request of `kind`; returns the response."""
        if kind == "send (session)":
            return self.session.post(f"/api/chats/{chat_id}/messages/stream", self.body(),
                                     content_type="application/json", headers={"X-CSRFToken": self.csrf})  # fmt: skip
        if kind == "send (Bearer key)":
            return self.bearer.post(f"/api/chats/{chat_id}/messages/stream", self.body(),
                                    content_type="application/json", headers=self.bearer_headers)  # fmt: skip
        if kind == "bare DRF view (session)":
            return self.session.post(f"/bench/bare/{chat_id}", "{}", content_type="application/json",
                                     headers={"X-CSRFToken": self.csrf})  # fmt: skip
        if kind == "bare DRF view (Bearer key)":
            return self.bearer.post(f"/bench/bare/{chat_id}", "{}", content_type="application/json",
                                    headers=self.bearer_headers)  # fmt: skip
        if kind == "GET chat (session)":
            return self.session.get(f"/api/chats/{chat_id}")
        raise ValueError(kind)

    def settle(self, kind: str, response) -> None:
        """After a send (not measured): check it, and end its reply as a worker would."""
        from django.core.cache import cache

        from chats.limits import SendRateThrottle
        from chats.models import Message

        expected = 200
        if response.status_code != expected:
            raise RuntimeError(f"{kind}: {response.status_code} {getattr(response, 'content', b'')[:300]!r}")
        if kind.startswith("send"):
            response.close()
            self.sent += 1
            Message.objects.filter(chat__owner=self.user, status="queued").update(status="completed")
            # The rate limit keeps each user's recent sends in the cache (at most 30 by default): this run sends
            # far more than any user may, so start each send with an empty history rather than a huge one.
            cache.delete(SendRateThrottle.cache_format % {"scope": SendRateThrottle.scope, "ident": self.user.pk})

    def measure(self, kind: str, count: int) -> dict:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        cpu = []
        queries = []
        for index in range(count):
            chat_id = self.chats[index % len(self.chats)]
            with CaptureQueriesContext(connection) as captured:
                start = time.process_time()
                response = self.request(kind, chat_id)
                cpu.append(time.process_time() - start)
            queries.append(len(captured.captured_queries))
            self.settle(kind, response)
        return {
            "p50_ms": 1000 * statistics.median(cpu),
            "p99_ms": 1000 * percentile(cpu, 0.99),
            "queries": statistics.median(queries),
            "requests": count,
        }

    def profile(self, kind: str, count: int, top: int) -> None:
        # CPU time, not wall time: waiting on PostgreSQL and Redis is not the web process's cost.
        profiler = cProfile.Profile(time.process_time)
        for index in range(count):
            chat_id = self.chats[index % len(self.chats)]
            profiler.enable()
            response = self.request(kind, chat_id)
            profiler.disable()
            self.settle(kind, response)
        print(f"\ncProfile of {count} requests '{kind}' (cumulative CPU, the {top} costliest calls):")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(top)
        print(f"\nThe same, by CPU in the function itself (the {top} costliest):")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(top)

    def show_queries(self, kind: str) -> None:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as captured:
            response = self.request(kind, self.chats[0])
        self.settle(kind, response)
        print(f"\nThe queries of one {kind}:")
        for query in captured.captured_queries:
            print(f"  {query['sql'][:300]}")

    def enqueue_cost(self, count: int) -> dict:
        """CPU of `chats.actions.enqueue_reply` alone (the Celery publish), per call."""
        from chats.actions import enqueue_reply
        from chats.models import Message

        reply = Message.objects.filter(chat__owner=self.user, role="assistant").first()
        cpu = []
        for _ in range(count):
            start = time.process_time()
            enqueue_reply(str(reply.id))
            cpu.append(time.process_time() - start)
        return {"p50_ms": 1000 * statistics.median(cpu), "p99_ms": 1000 * percentile(cpu, 0.99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="measured requests per kind (default 300)")
    parser.add_argument("--warmup", type=int, default=30, help="requests per kind before measuring")
    parser.add_argument("--profile", type=int, default=0, help="also profile this many requests (cProfile)")
    parser.add_argument("--profile-kind", default="send (session)", help="which request (default: a session send)")
    parser.add_argument("--top", type=int, default=40, help="functions the profile prints")
    parser.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "send_cpu.json")
    args = parser.parse_args()

    redis_server = RedisServer()
    redis_server.start()
    database_url = fresh_database(args.postgres)
    try:
        setup_django(database_url, redis_server.url)
        from django.conf import settings
        from django.urls import include, path

        # chatsite's routes, plus the bare view of the baseline.
        this = sys.modules[__name__]
        this.urlpatterns = [path("bench/bare/<str:chat_id>", bare_view()), path("", include("chatsite.urls"))]
        settings.ROOT_URLCONF = this
        bench = Bench(args.requests)
        kinds = ["bare DRF view (session)", "GET chat (session)", "send (session)",
                 "bare DRF view (Bearer key)", "send (Bearer key)"]  # fmt: skip
        for kind in kinds:
            bench.measure(kind, args.warmup)
        results = {kind: bench.measure(kind, args.requests) for kind in kinds}
        results["enqueue_reply alone (Celery publish)"] = bench.enqueue_cost(args.requests)
        print(f"\nWeb CPU per request, in this process, {args.requests} requests each (time.process_time):")
        print(f"{'request':40} {'p50 ms':>8} {'p99 ms':>8} {'x bare':>7} {'queries':>8}")
        for kind, figures in results.items():
            bare = results["bare DRF view (Bearer key)" if "Bearer" in kind else "bare DRF view (session)"]["p50_ms"]
            print(f"{kind:40} {figures['p50_ms']:8.2f} {figures['p99_ms']:8.2f} {figures['p50_ms'] / bare:7.1f} "
                  f"{figures.get('queries', ''):>8}")  # fmt: skip
        print("Goal: the send view <= 5 ms of CPU p50 (issue 14).")
        if args.profile:
            bench.show_queries("send (session)")
            bench.show_queries("send (Bearer key)")
            bench.profile(args.profile_kind, args.profile, args.top)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nJSON: {args.json}")
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(args.postgres, database_url)
        redis_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
