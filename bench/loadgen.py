"""The whole-path benchmark's load generator: simulated users in one asyncio process, as a browser client
behaves, against chatsite or straight against the model server.

- chatsite: each simulated user holds a logged-in session (cookies and CSRF token of one of the bench's
  accounts), a connection (keep-alive) and a chat of its own, POSTs a message to
  `/api/chats/<chatId>/messages/stream` (seed 004) and reads the reply's SSE events to `end` or `error`;
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


class Connection:
    """One simulated user's HTTP/1.1 connection (keep-alive), as a browser tab keeps one to its site.

    A bare asyncio client, because the client's own cost is part of every figure: httpx costs 1-3 ms of CPU per
    streamed request on this machine, and its connection pool slows down with the number of connections it
    holds (200 streams at once: 15 s of CPU); this costs tens of microseconds. It speaks only what the two
    servers answer: a status line, headers, then a chunked, Content-Length or close-delimited body.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, target: str, headers: str, body: bytes = b"") -> tuple[int, dict]:
        """Send a request (`headers`: ready-made header lines, each ending in CRLF); return status and headers."""
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        response_headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            response_headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), response_headers

    async def body(self, headers: dict):
        """Yield the response body's pieces as they arrive; afterwards the connection is ready for the next
        request (or closed, when the server said so)."""
        reader = self.reader
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while size := int((await reader.readline()).split(b";")[0], 16):
                data = await reader.readexactly(size + 2)
                yield data[:-2]
            while await reader.readline() not in (b"\r\n", b""):  # trailers
                pass
        elif "content-length" in headers:
            yield await reader.readexactly(int(headers["content-length"]))
        else:
            while data := await reader.read(65536):
                yield data
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()

    async def get(self, target: str, headers: str) -> int:
        status, response_headers = await self.request("GET", target, headers)
        async for _ in self.body(response_headers):
            pass
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _new_record() -> dict:
    return {"sent": None, "first": None, "last": None, "tokens": 0, "done": False, "error": None, "text_ok": None}


async def _reply(conn: Connection, request: dict, headers: str, rec: dict, expected: str | None, progress) -> None:
    """Send one request on `conn` and read its stream into `rec`."""
    parts: list[str] = []
    body = json.dumps(request["body"]).encode()
    rec["sent"] = time.time()
    try:
        status, response_headers = await conn.request("POST", request["path"], headers, body)
        progress[0] += 1
        buffer = b""
        async for piece in conn.body(response_headers):
            if status != 200:
                rec["error"] = f"HTTP {status}: {piece[:200]!r}"
                continue
            buffer += piece
            while (end := buffer.find(b"\n\n")) >= 0:
                block, buffer = buffer[:end], buffer[end + 2 :]
                for line in block.split(b"\n"):
                    if line.startswith(b"data: ") and not rec["done"] and not rec["error"]:
                        _event(line[6:], rec, parts, expected is not None)
        if status != 200 and not rec["error"]:
            rec["error"] = f"HTTP {status}"
        if not rec["done"] and not rec["error"]:
            rec["error"] = "the stream closed before its end"
    except (OSError, ValueError, KeyError, IndexError, asyncio.IncompleteReadError) as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"[:300]
        conn.close()
    except asyncio.CancelledError:
        conn.close()
        raise
    finally:
        progress[1] += 1
        progress[2] += rec["done"] and not rec["error"]
        if expected is not None and rec["done"]:
            rec["text_ok"] = "".join(parts) == expected
            if not rec["text_ok"]:
                rec["error"] = "the streamed text is not the text the model server sent"


def _event(data: bytes, rec: dict, parts: list[str], keep_text: bool) -> None:
    """Take one SSE `data:` payload: a chatsite reply event or an OpenAI chunk (or `[DONE]`)."""
    if data == b"[DONE]":
        rec["done"] = True
        return
    event = json.loads(data)
    if event.get("object") == "chat.completion.chunk":
        choices = event.get("choices") or ()
        delta = (choices[0].get("delta") or {}).get("content") if choices else None
    elif event["type"] == "content":
        delta = event["delta"]
    elif event["type"] == "end":
        rec["done"] = True
        return
    elif event["type"] == "error":
        rec["error"] = f"error event: {event.get('error')}"
        return
    else:  # start, queued, step, sources...
        return
    if delta:
        now = time.time()
        if rec["first"] is None:
            rec["first"] = now
        rec["last"] = now
        rec["tokens"] += delta.count(" ")
        if keep_text:
            parts.append(delta)


async def _load(job: dict, progress) -> dict:
    """Run `job["rounds"]` (lists of requests) one after another, each all at once, until `job["deadline"]` s.

    Simulated user `i` sends the `i`-th request of every round on a connection of its own, opened beforehand
    with `job["warmup"]` (a GET), as a browser has the page's connection open when its user sends."""
    host, port = job["host"], job["port"]
    users = max(len(r) for r in job["rounds"])
    conns = [Connection(host, port) for _ in range(users)]
    headers = [
        "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "Content-Type: application/json\r\n"
        for h in job["client_headers"]
    ]
    first = job["rounds"][0]
    rounds_out = []
    try:
        # Not timed: opening the connections (and what asyncio sets up on its first connection).
        statuses = await asyncio.gather(
            *(c.get(job["warmup"], headers[first[i]["client"]]) for i, c in enumerate(conns))
        )
        if any(status != 200 for status in statuses):
            raise RuntimeError(f"warm-up requests answered {sorted(set(statuses))}")
        began = time.time()
        deadline = began + job["deadline"]
        for requests in job["rounds"]:
            if time.time() >= deadline:
                break
            records = [_new_record() for _ in requests]
            rounds_out.append(records)
            round_began = time.time()
            tasks = [
                asyncio.create_task(_reply(conns[i], r, headers[r["client"]], rec, job.get("expected"), progress))
                for i, (r, rec) in enumerate(zip(requests, records, strict=True))
            ]
            _done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.time()))
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
            for rec in records:
                rec["round_began"] = round_began
    finally:
        for conn in conns:
            conn.close()
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
    """A load generator job in a spawned process. `progress`: replies whose response began, that ended (either
    way), that ended with their end event; `result()` waits for the outcome."""

    def __init__(self, job: dict) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.queue = ctx.Queue()
        self.progress = ctx.Array("i", 3, lock=False)
        self.process = ctx.Process(target=_main, args=(job, self.queue, self.progress))
        self.process.start()

    def result(self, timeout: float) -> dict:
        try:
            return self.queue.get(timeout=timeout)
        finally:
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
