"""What open streams cost the web process, on the live stack (daphne, Celery worker, Redis): no thread and no
Redis connection per stream. Counts, not timings."""

from __future__ import annotations

import asyncio
import json
import os
from urllib.parse import urlparse

import httpx

from bench.relay import tcp_connections_to
from tests.live import new_chat, send

WATCHERS = 40


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_watchers_of_a_reply_hold_no_thread_or_redis_connection_each_and_see_the_whole_reply(
    live_stack, session, carol, db
):
    from pipelines.models import ModelConfig

    script = [f" w{i}" for i in range(25)]
    ModelConfig.objects.update_or_create(
        model_id="slow-scripted",
        defaults={"display_name": "Slow", "provider": "scripted", "context_window": 1000, "default_max_tokens": 100,
                  "options": {"script": script, "delay": 0.15}},
    )  # fmt: skip
    client, token = session
    chat_id = new_chat(client, token)
    first = send(client, token, chat_id, carol, model="slow-scripted", stop_after=1)
    assert first.types == ["start"]
    message_id = first.events[0]["messageId"]
    # The web role's processes together (scripts/serve_web.py): the watchers spread over them.
    webs = live_stack.web_pids()
    redis_port = urlparse(live_stack.redis_url).port or 6379

    def held() -> tuple[int, int]:
        return sum(threads_of(p) for p in webs), sum(tcp_connections_to(p, redis_port) for p in webs)

    before = held()

    async def watch(http: httpx.AsyncClient, opened: asyncio.Event, counter: list[int]) -> list[dict]:
        got = []
        async with http.stream("GET", f"/api/chats/{chat_id}/messages/{message_id}/stream") as response:
            assert response.status_code == 200
            counter[0] += 1
            if counter[0] == WATCHERS:
                opened.set()
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    got.append(json.loads(line[6:]))
        return got

    async def scenario() -> tuple[list[list[dict]], int]:
        opened, counter = asyncio.Event(), [0]
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=live_stack.base_url, cookies=dict(client.cookies), limits=limits, timeout=30
        ) as http:
            watchers = [asyncio.create_task(watch(http, opened, counter)) for _ in range(WATCHERS)]
            await asyncio.wait_for(opened.wait(), 20)
            await asyncio.sleep(0.5)
            during = held()
            return await asyncio.gather(*watchers), during

    seen, during = asyncio.run(scenario())
    # Without letting go of each request's thread, every open stream kept one (40 here); without one shared
    # pool for Django's cache (sessions), every request opened a Redis connection and held it while it streamed.
    # Each process's pool holds at most 10.
    assert during[0] - before[0] < WATCHERS // 4, (before, during)
    assert during[1] - before[1] <= 10 * len(webs), (before, during)
    for events in seen:
        assert events[0]["type"] == "start" and events[-1]["type"] == "end"
        assert "".join(e.get("delta", "") for e in events if e["type"] == "content") == "".join(script)
