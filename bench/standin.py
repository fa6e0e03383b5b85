"""An OpenAI-compatible stand-in model server for benchmarks and tests: replies of known length and pace.

Run it as a process of its own:

    python bench/standin.py --port 8090 --tokens 100 --pace 50

Protocol followed: OpenAI Chat Completions (https://platform.openai.com/docs/api-reference/chat):

- `POST /v1/chat/completions`: with `stream: true`, server-sent events of `chat.completion.chunk` objects (a
  first chunk with `role`, one chunk per token, a last chunk with `finish_reason`; with
  `stream_options.include_usage`, a final chunk with empty `choices` and `usage`, every earlier chunk having
  `usage: null`), then `data: [DONE]`. Without `stream`, one `chat.completion` once the reply is "generated"
  (after as long as streaming it would take).
- `GET /v1/models`: one model (any `model` name is accepted in requests and echoed back).
- `GET /stats`: `{"replies", "tokens", "active"}` served so far by this process (not part of OpenAI's API).

A reply is `tokens` tokens (`--tokens`), or `max_tokens` / `max_completion_tokens` when the request asks for
fewer (`finish_reason` is then `length`, else `stop`). Token `i` (from 0) is the text `" w<i>"`: a reply's text
is known in advance (`reply_text`) and a reader counts tokens by counting spaces. `--pace` is tokens per second
per reply (0: as fast as the reader takes them); the first token goes out at once, token `i` at `i / pace`
seconds after it. A base URL may override both per model: `http://host:port/pace/50/tokens/100/v1` serves
paced 50 tokens/s replies of 100 tokens, whatever the process's defaults, so one process serves every load of
a benchmark and a chatsite `ModelConfig` chooses its load by its `base_url`.

It is cheap in CPU because it shares the cores with what it measures: a bare `asyncio.Protocol` HTTP/1.1 server
(keep-alive, `Content-Length` request bodies, chunked responses), each token one timer callback (`call_at`, or
`call_soon` unpaced) that writes one pre-formatted chunk; no coroutine, framework or JSON encoder per token.
Unpaced replies stop producing while the reader's socket buffer is full (`pause_writing`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 411: "Length Required",
           413: "Payload Too Large"}  # fmt: skip


def token_text(index: int) -> str:
    """The text of token `index` (from 0): a space and a short word, so that tokens are counted by spaces."""
    return f" w{index}"


def reply_text(tokens: int) -> str:
    """The whole text of a reply of `tokens` tokens."""
    return "".join(token_text(i) for i in range(tokens))


class Stats:
    """What this process served: replies started, tokens written, streams open now."""

    replies = 0
    tokens = 0
    active = 0


def _options_from_path(path: str, defaults: dict[str, float]) -> tuple[str, dict[str, float]] | None:
    """Split `/pace/50/tokens/100/v1/...` into (`/v1/...`, options); None when a pair is not a known number."""
    options = dict(defaults)
    parts = path.split("?", 1)[0].strip("/").split("/")
    while len(parts) >= 2 and parts[0] in ("pace", "tokens"):
        try:
            options[parts[0]] = float(parts[1])
        except ValueError:
            return None
        parts = parts[2:]
    return "/" + "/".join(parts), options


class Reply:
    """One streamed completion: writes its chunks to `protocol`'s transport on timer callbacks."""

    def __init__(self, protocol: StandinProtocol, body: dict, tokens: int, pace: float, finish: str) -> None:
        self.protocol = protocol
        self.loop = protocol.loop
        self.tokens = tokens
        self.pace = pace
        self.finish = finish
        self.usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.prompt_tokens = _prompt_tokens(body)
        self.index = 0
        self.started = 0.0
        self.handle: asyncio.Handle | None = None
        created = int(time.time())
        model = json.dumps(str(body.get("model") or "standin"))
        usage = ',"usage":null' if self.usage else ""
        # Every chunk is this text with its choice in the middle: formatted once per reply, not encoded per token.
        self.head = (
            f'data: {{"id":"chatcmpl-{uuid.uuid4().hex}","object":"chat.completion.chunk","created":{created},'
            f'"model":{model},"system_fingerprint":null,"choices":['
        )
        self.tail = f"]{usage}}}\n\n"

    def start(self) -> None:
        Stats.replies += 1
        Stats.active += 1
        self.started = self.loop.time()
        self.protocol.write_chunk(self._choice('{"role":"assistant","content":""}', "null"))
        self.step()

    def _choice(self, delta: str, finish: str) -> str:
        return f'{self.head}{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}{self.tail}'

    def step(self) -> None:
        """Write the next token (or the end), then schedule the one after."""
        self.handle = None
        if self.protocol.closed:
            return
        if self.index < self.tokens:
            text = token_text(self.index)
            self.protocol.write_chunk(self._choice(f'{{"content":"{text}"}}', "null"))
            self.index += 1
            Stats.tokens += 1
            if self.pace > 0:
                self.handle = self.loop.call_at(self.started + self.index / self.pace, self.step)
            elif not self.protocol.paused:
                self.handle = self.loop.call_soon(self.step)
            # Unpaced and paused: `resume` calls `step` once the reader has taken what was written.
            return
        end = self._choice("{}", f'"{self.finish}"')
        if self.usage:
            usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.tokens,
                     "total_tokens": self.prompt_tokens + self.tokens}  # fmt: skip
            end += self.head + self.tail.replace('"usage":null', '"usage":' + json.dumps(usage, separators=(",", ":")))
        self.protocol.write_chunk(end + "data: [DONE]\n\n")
        self.protocol.end_chunked()
        Stats.active -= 1
        self.protocol.reply = None
        self.protocol.next_request()

    def resume(self) -> None:
        if self.handle is None and self.pace <= 0 and not self.protocol.closed:
            self.handle = self.loop.call_soon(self.step)

    def abandon(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        Stats.active -= 1


def _prompt_tokens(body: dict) -> int:
    """An estimate of the prompt's tokens: one per 4 characters of message text."""
    chars = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return max(1, (chars + 3) // 4)


class StandinProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: requests one after another (keep-alive), each answered in full before the next
    is read."""

    def __init__(self, defaults: dict[str, float]) -> None:
        self.defaults = defaults
        self.loop = asyncio.get_running_loop()
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.reply: Reply | None = None
        self.busy = False  # a request is being answered (streaming or waiting to answer)
        self.closed = False
        self.paused = False
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.reply is not None:
            self.reply.abandon()
            self.reply = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.reply is not None:
            self.reply.resume()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > MAX_HEADER_BYTES + MAX_BODY_BYTES:
            self.transport.close()
            return
        if not self.busy:
            self.next_request()

    def next_request(self) -> None:
        """Answer the next complete request in the buffer, if any (and if the connection stays open)."""
        self.busy = False
        if self.closed:
            return
        if not self.keep_alive:
            self.transport.close()
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEADER_BYTES:
                self.respond_json(413, _error("Request headers too large."), close=True)
            return
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            self.respond_json(400, _error("Malformed request line."), close=True)
            return
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.respond_json(411, _error("Send a Content-Length, not a chunked body."), close=True)
            return
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self.respond_json(400, _error("Bad Content-Length."), close=True)
            return
        if length > MAX_BODY_BYTES:
            self.respond_json(413, _error("Body too large."), close=True)
            return
        if len(self.buffer) < end + 4 + length:
            return  # the rest of the body is still coming
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        connection = headers.get("connection", "").lower()
        self.keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
        self.busy = True
        self.handle(method, target, body)

    def handle(self, method: str, target: str, raw: bytes) -> None:
        split = _options_from_path(target, self.defaults)
        if split is None:
            self.respond_json(404, _error("Unknown path."))
            return
        path, options = split
        if path == "/v1/models" and method == "GET":
            model = {"id": "standin", "object": "model", "created": 0, "owned_by": "bench"}
            self.respond_json(200, {"object": "list", "data": [model]})
        elif path == "/stats" and method == "GET":
            self.respond_json(200, {"replies": Stats.replies, "tokens": Stats.tokens, "active": Stats.active})
        elif path == "/v1/chat/completions":
            if method != "POST":
                self.respond_json(405, _error("Use POST."))
                return
            try:
                body = json.loads(raw)
                if not isinstance(body, dict):
                    raise ValueError("not an object")
            except ValueError:
                self.respond_json(400, _error("The body is not a JSON object."))
                return
            self.complete(body, options)
        else:
            self.respond_json(404, _error(f"No route for {method} {path}."))

    def complete(self, body: dict, options: dict[str, float]) -> None:
        tokens = int(options["tokens"])
        finish = "stop"
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(asked, int) and 0 < asked < tokens:
            tokens, finish = asked, "length"
        pace = float(options["pace"])
        if body.get("stream"):
            self.write_head(200, "text/event-stream", chunked=True)
            self.reply = Reply(self, body, tokens, pace, finish)
            self.reply.start()
            return
        Stats.replies += 1
        Stats.tokens += tokens
        prompt = _prompt_tokens(body)
        answer = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model") or "standin"),
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply_text(tokens)}, "logprobs": None,
                 "finish_reason": finish}
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens},
        }  # fmt: skip
        delay = max(0, tokens - 1) / pace if pace > 0 else 0
        self.loop.call_later(delay, lambda: self.closed or self.respond_json(200, answer))

    def write_head(self, status: int, content_type: str, *, chunked: bool = False, length: int = 0) -> None:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}"
        connection = "keep-alive" if self.keep_alive else "close"
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
            f"Cache-Control: no-cache\r\n{framing}\r\nConnection: {connection}\r\n\r\n"
        )
        self.transport.write(head.encode())

    def write_chunk(self, text: str) -> None:
        data = text.encode()
        self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    def end_chunked(self) -> None:
        self.transport.write(b"0\r\n\r\n")

    def respond_json(self, status: int, payload: dict, *, close: bool = False) -> None:
        if close:
            self.keep_alive = False
        data = json.dumps(payload).encode()
        self.write_head(status, "application/json", length=len(data))
        self.transport.write(data)
        self.next_request()


def _error(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}


async def serve(host: str, port: int, defaults: dict[str, float], ready=None) -> None:
    """Serve until cancelled (or SIGTERM/SIGINT). `ready`, if given, is called once the socket listens."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: StandinProtocol(defaults), host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready()
    async with server:
        await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--tokens", type=int, default=100, help="tokens per reply (default 100; max_tokens caps it)")
    parser.add_argument("--pace", type=float, default=0, help="tokens per second per reply (default 0: unpaced)")
    args = parser.parse_args()
    try:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    defaults = {"tokens": float(args.tokens), "pace": args.pace}
    ready = lambda: print(f"stand-in listening on http://{args.host}:{args.port}/v1", flush=True)  # noqa: E731
    asyncio.run(serve(args.host, args.port, defaults, ready))
    return 0


@dataclass
class RunningStandin:
    """A stand-in server started by `running_standin`: its API root (`http://127.0.0.1:<port>/v1`) and pid."""

    url: str
    pid: int


@contextlib.contextmanager
def running_standin(
    port: int, *, tokens: int = 100, pace: float = 0, log: Path | None = None
) -> Iterator[RunningStandin]:
    """Start the stand-in as a subprocess on 127.0.0.1:`port`, wait until it answers, yield it, and stop it
    (SIGTERM) at the end.

    Raises:
        RuntimeError: when it does not answer within 10 s (its output is in `log`, when given).
    """
    command = [sys.executable, str(Path(__file__).resolve()), "--port", str(port), "--tokens", str(tokens),
               "--pace", str(pace)]  # fmt: skip
    out = log.open("a") if log else subprocess.DEVNULL
    process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the stand-in server did not start on port {port}") from None
                time.sleep(0.05)
        yield RunningStandin(f"http://127.0.0.1:{port}/v1", process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        if log:
            out.close()


if __name__ == "__main__":
    sys.exit(main())
