"""The baseline of `bench/relay.py`: the smallest async relay that serves the same job as chatsite's.

A bare ASGI callable, served by daphne like chatsite, that reads one reply's Redis Stream (the same keys and
entries the workers write) and writes each entry as an SSE event until the terminal one. No Django, no
authentication, no database, no middleware: whatever chatsite spends above this is the cost of everything
else on the path.

    GET /<stream key>?last=<entry id>   ->  200 text/event-stream

Configuration (environment): `REDIS_URL` (required); `BASELINE_BLOCK_MS` (XREAD block, default 15000).
Run: `python -m daphne -p 8001 bench.baseline_asgi:application` from the repository's root.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, unquote

import redis.asyncio

TERMINAL = ("end", "error")
BLOCK_MS = int(os.environ.get("BASELINE_BLOCK_MS", "15000"))
_client: redis.asyncio.Redis | None = None


def client() -> redis.asyncio.Redis:
    """The process's asyncio Redis client (daphne runs one event loop): a pool, one connection per XREAD.

    The pool's limit is raised from redis-py's default of 100, which would make the 101st stream wait.
    """
    global _client
    if _client is None:
        _client = redis.asyncio.Redis.from_url(
            os.environ["REDIS_URL"], decode_responses=True, socket_timeout=BLOCK_MS / 1000 + 10, max_connections=20000
        )
    return _client


async def application(scope: dict, receive, send) -> None:
    """ASGI entry point: relay the stream named by the path, from after `?last=` (default `0-0`)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            pass
        return
    key = unquote(scope["path"].lstrip("/"))
    last = parse_qs(scope.get("query_string", b"").decode()).get("last", ["0-0"])[0]
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    await send({"type": "http.response.body", "body": b": connected\n\n", "more_body": True})
    r = client()
    while True:
        found = await r.xread({key: last}, count=500, block=BLOCK_MS)
        if not found:
            await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
            continue
        chunks = []
        done = False
        for entry_id, fields in found[0][1]:
            last = entry_id
            chunks.append(f"id: {entry_id}\ndata: {fields['data']}\n\n")
            if fields["type"] in TERMINAL:
                done = True
                break
        await send({"type": "http.response.body", "body": "".join(chunks).encode(), "more_body": not done})
        if done:
            return
