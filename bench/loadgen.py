"""The whole-path benchmark's load generator: simulated users in one asyncio process (httpx), as a browser
client behaves, against chatsite or straight against the model server.

- chatsite: each simulated user holds a logged-in session (cookies and CSRF token of one of the bench's
  accounts) and a chat of its own, POSTs a message to `/api/chats/<chatId>/messages/stream` (seed 004) and reads
  the reply's SSE events to `end` or `error`;
- direct: `POST <model server>/chat/completions` with `stream: true` (OpenAI's protocol) read to `[DONE]`.

A job is a list of rounds; a round's replies are all sent at once, and the next round starts when it is over.
Every reply records when it was sent, its first and last token, tokens received (the stand-in's tokens each
begin with a space, `bench.standin.token_text`), whether its text is the one the stand-in sent, and how it
ended. A job has a deadline: what is still open then is cut off and reported as not finished.

Run in a spawned process (`Background`), so that its CPU is its own and the bench process can sample the stack
while it runs; `progress` counts replies started and ended for those samples.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import time

import httpx

SSE_TIMEOUT = httpx.Timeout(60, read=300)


def _new_record() -> dict:
    return {"sent": None, "first": None, "last": None, "tokens": 0, "done": False, "error": None, "text_ok": None}


async def _read_events(response: httpx.Response):
    """Yield the `data:` payload (str) of each server-sent event, from the raw body (no line iterator: cheaper)."""
    buffer = b""
    async for chunk in response.aiter_raw():
        buffer += chunk
        while (end := buffer.find(b"\n\n")) >= 0:
            block, buffer = buffer[:end], buffer[end + 2 :]
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    yield line[6:].decode()


async def _reply(http: httpx.AsyncClient, request: dict, rec: dict, expected: str | None, progress) -> None:
    """Send one request and read its stream into `rec`."""
    parts: list[str] = []
    rec["sent"] = time.time()
    try:
        async with http.stream("POST", request["url"], json=request["body"], headers=request["headers"]) as response:
            if response.status_code != 200:
                rec["error"] = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return
            progress[0] += 1
            async for data in _read_events(response):
                if data == "[DONE]":
                    rec["done"] = True
                    break
                event = json.loads(data)
                if event.get("object") == "chat.completion.chunk":
                    choices = event.get("choices") or ()
                    delta = (choices[0].get("delta") or {}).get("content") if choices else None
                elif event["type"] == "content":
                    delta = event["delta"]
                elif event["type"] == "end":
                    rec["done"] = True
                    break
                elif event["type"] == "error":
                    rec["error"] = f"error event: {event.get('error')}"
                    break
                else:  # start, queued, step, sources...
                    continue
                if delta:
                    now = time.time()
                    if rec["first"] is None:
                        rec["first"] = now
                    rec["last"] = now
                    rec["tokens"] += delta.count(" ")
                    if expected is not None:
                        parts.append(delta)
            if not rec["done"] and not rec["error"]:
                rec["error"] = "the stream closed before its end"
    except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        progress[1] += 1
        if expected is not None and rec["done"]:
            rec["text_ok"] = "".join(parts) == expected
            if not rec["text_ok"]:
                rec["error"] = "the streamed text is not the text the model server sent"


async def _load(job: dict, progress) -> dict:
    """Run `job["rounds"]` (lists of requests) one after another, each all at once, until `job["deadline"]` s."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    clients = [httpx.AsyncClient(cookies=cookies, limits=limits, timeout=SSE_TIMEOUT) for cookies in job["cookie_jars"]]
    rounds_out = []
    try:
        # Each client's first request opens a connection and loads what httpx loads lazily; a browser has its
        # connection open from the page it shows. Not timed.
        for client, url in zip(clients, job["warmup_urls"], strict=True):
            await client.get(url)
        began = time.time()
        deadline = began + job["deadline"]
        for requests in job["rounds"]:
            if time.time() >= deadline:
                break
            records = [_new_record() for _ in requests]
            rounds_out.append(records)
            round_began = time.time()
            tasks = [
                asyncio.create_task(_reply(clients[r["client"]], r, rec, job.get("expected"), progress))
                for r, rec in zip(requests, records, strict=True)
            ]
            _done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.time()))
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
            for rec in records:
                rec["round_began"] = round_began
    finally:
        for client in clients:
            await client.aclose()
    return {"began": began, "ended": time.time(), "rounds": rounds_out, "planned": [len(r) for r in job["rounds"]]}


async def _calls(job: dict) -> dict:
    """Plain requests (`job["requests"]`: method, url, headers, body, client), `at_once` at a time, each on a new
    connection; a response is closed once its headers arrive (its body, a stream, is never read)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    clients = [httpx.AsyncClient(cookies=c, limits=limits, timeout=SSE_TIMEOUT) for c in job["cookie_jars"]]
    statuses: dict[str, int] = {}
    gate = asyncio.Semaphore(job.get("at_once", 1))

    async def one(r: dict) -> None:
        async with gate:
            try:
                client = clients[r["client"]]
                async with client.stream(r["method"], r["url"], json=r.get("body"), headers=r["headers"]) as resp:
                    key = str(resp.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            statuses[key] = statuses.get(key, 0) + 1

    began = time.time()
    try:
        await asyncio.gather(*(one(r) for r in job["requests"]))
    finally:
        for client in clients:
            await client.aclose()
    return {"began": began, "ended": time.time(), "statuses": statuses}


def _main(job: dict, results, progress) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        outcome = asyncio.run(_calls(job) if job["kind"] == "calls" else _load(job, progress))
    except Exception as exc:  # reported to the bench process, which prints it with the figures
        outcome = {"crash": f"{type(exc).__name__}: {exc}"}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    outcome["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    results.put(outcome)


class Background:
    """A load generator job in a spawned process. `progress[0]`/`progress[1]`: replies whose response began /
    that ended (either way); `result()` waits for the outcome."""

    def __init__(self, job: dict) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.queue = ctx.Queue()
        self.progress = ctx.Array("i", 2, lock=False)
        self.process = ctx.Process(target=_main, args=(job, self.queue, self.progress))
        self.process.start()

    def result(self, timeout: float) -> dict:
        try:
            return self.queue.get(timeout=timeout)
        finally:
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
