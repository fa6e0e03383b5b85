"""The web role: one listening socket, several daphne processes serving it (`make run` and the Procfile).

    python scripts/serve_web.py [--host H] [--port P] [--processes N] [--backlog 4096] [APP] [-- DAPHNE_OPTIONS...]

This process binds host:port once (listen backlog 4096, as the single daphne of before had: Twisted's default
of 50 makes connections time out when thousands of streams open at once), then starts N daphne processes on
that socket, each adopting the inherited file descriptor (`daphne --fd N`, the deployment of the
Channels documentation, where supervisord's fcgi-program holds the socket). The kernel hands each new
connection to whichever process accepts it first, so one port serves on every core. Web processes are
stateless (sessions in the database and cache, reply events in Redis), so any of them serves any stream.

N is CHATSITE_WEB_PROCESSES (default: the cores this process may run on), or `--processes`. Embedded mode
(CHATSITE_EMBEDDED, or no Redis) always runs ONE process: its event bus and reply threads live inside it.
The mode is decided here once and passed down, so every process runs in the same mode.

A process that dies is started again (at once if it had been up for a while; after a growing pause, up to
30 s, if it keeps dying as it starts; after 5 such deaths in a row the manager gives up and exits 1). SIGTERM,
SIGINT or SIGHUP stop every process (SIGTERM, then SIGKILL after `--stop-timeout` seconds) and exit 0. If this
process is killed outright, the kernel sends its daphne processes SIGTERM (Linux: PR_SET_PDEATHSIG). Its own
log lines go to stdout; the daphne processes write to the same stdout and stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BACKLOG = 4096
# A process that exits sooner than this after its start failed to start; it is not restarted at once.
STARTUP_SECONDS = 10.0
MAX_FAILED_STARTS = 5
MAX_RESTART_DELAY = 30.0  # seconds
# Every death waits this long before its restart: a SIGTERM sent to the whole process group reaches the
# daphne processes and this one together, and this one must see its own before it takes them for crashes.
MIN_RESTART_DELAY = 0.5  # seconds
POLL_SECONDS = 0.1


def log(message: str) -> None:
    print(f"serve_web[{os.getpid()}]: {message}", flush=True)


def run_mode() -> tuple[bool, str, int]:
    """`(embedded, why, processes wanted)` from chatsite's settings (the environment and `.env`), read as a
    plain module: the same decision every web process would make (CHATSITE_EMBEDDED, or whether Redis
    answers)."""
    sys.path.insert(0, str(ROOT))
    from chatsite import settings

    return settings.CHATSITE_EMBEDDED, settings.CHATSITE_MODE_REASON, settings.CHATSITE_WEB_PROCESSES


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """An IPv4 TCP socket bound to `host:port` and listening, inheritable by the daphne processes.

    IPv4 only: daphne's `--fd` endpoint adopts AF_INET sockets only (daphne 4.2).

    Raises:
        OSError: the address is in use or cannot be bound, or `host` has no IPv4 address.
    """
    address = socket.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_STREAM)[0][4]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As Twisted's own listenTCP does: a restart may bind while old connections sit in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. PR_SET_PDEATHSIG (1): SIGTERM when the manager dies.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class Slot:
    """One of the N web processes: the running one (or None), and its restart bookkeeping."""

    number: int
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float = 0.0
    failed_starts: int = 0


class Manager:
    """Keeps `count` copies of `command` running, each with the listening socket `fd` inherited."""

    def __init__(self, command: list[str], count: int, fd: int, env: dict[str, str], stop_timeout: float):
        self.command = command
        self.fd = fd
        self.env = env
        self.stop_timeout = stop_timeout
        self.slots = [Slot(number) for number in range(1, count + 1)]
        self.stopping: int | None = None  # the signal that asked us to stop

    def start(self, slot: Slot) -> None:
        # The command is built by main() from this script's own arguments, not from a request.
        slot.process = subprocess.Popen(  # noqa: S603
            self.command,
            cwd=ROOT,
            env=self.env,
            pass_fds=(self.fd,),
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        slot.started_at = time.monotonic()
        log(f"web process {slot.number} started (pid {slot.process.pid})")

    def on_signal(self, signum: int, frame: object) -> None:
        if self.stopping is not None and signum == signal.SIGINT:
            # A second Ctrl-C: do not wait for the processes to finish their requests.
            self.kill_all(signal.SIGKILL)
        self.stopping = signum

    def kill_all(self, signum: int) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signum)

    def check(self, slot: Slot, now: float) -> bool:
        """Notice a death and start the slot's process again when its time comes; False to give up."""
        if slot.process is not None and (code := slot.process.poll()) is not None:
            lived = now - slot.started_at
            slot.process = None
            if lived < STARTUP_SECONDS:
                slot.failed_starts += 1
                if slot.failed_starts >= MAX_FAILED_STARTS:
                    log(f"web process {slot.number} died {slot.failed_starts} times as it started: giving up")
                    return False
                delay = min(MAX_RESTART_DELAY, 2.0 ** (slot.failed_starts - 1))
            else:
                slot.failed_starts = 0
                delay = MIN_RESTART_DELAY
            log(f"web process {slot.number} exited with {code} after {lived:.1f} s; restarting in {delay:.1f} s")
            slot.restart_at = now + delay
        if slot.process is None and now >= slot.restart_at and self.stopping is None:
            self.start(slot)
        return True

    def run(self) -> int:
        """Start every process and keep them running until a signal says stop; the exit status."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.on_signal)
        status = 0
        for slot in self.slots:
            self.start(slot)
        while self.stopping is None:
            now = time.monotonic()
            if not all(self.check(slot, now) for slot in self.slots):
                status = 1
                break
            time.sleep(POLL_SECONDS)
        if self.stopping is not None:
            log(f"got {signal.Signals(self.stopping).name}: stopping the web processes")
        self.kill_all(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for slot in self.slots:
            if slot.process is None:
                continue
            try:
                slot.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"web process {slot.number} (pid {slot.process.pid}) did not stop: killing it")
                slot.process.kill()
                slot.process.wait()
        log("stopped")
        return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("CHATSITE_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CHATSITE_PORT", "8000")))
    parser.add_argument("--processes", type=int, help="default: CHATSITE_WEB_PROCESSES")
    parser.add_argument("--backlog", type=int, default=BACKLOG, help="the listen backlog (default %(default)s)")
    parser.add_argument("--stop-timeout", type=float, default=10.0, help="seconds to wait for a clean stop")
    parser.add_argument("application", nargs="?", default="chatsite.asgi:application")
    argv = sys.argv[1:] if argv is None else argv
    # Everything after `--` goes to daphne as it is.
    daphne_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)

    embedded, why, configured = run_mode()
    count = configured if args.processes is None else args.processes
    if count < 1:
        parser.error(f"the number of web processes must be at least 1, not {count}")
    if embedded and count > 1:
        log(f"embedded mode ({why}): one web process, not {count}: its event bus and reply threads live in it")
        count = 1
    try:
        sock = listen(args.host, args.port, args.backlog)
    except OSError as exc:
        log(f"cannot listen on {args.host}:{args.port} (IPv4): {exc}")
        return 1
    fd = sock.fileno()
    # Every process runs in the mode decided here, even if Redis comes or goes while one restarts.
    env = {**os.environ, "CHATSITE_EMBEDDED": "1" if embedded else "0"}
    command = [sys.executable, "-m", "daphne", "--fd", str(fd), *daphne_args, args.application]
    log(
        f"{'embedded' if embedded else 'full'} mode ({why}): {count} daphne process{'es' * (count > 1)} on "
        f"http://{args.host}:{args.port}/ (one socket, backlog {args.backlog})"
    )
    return Manager(command, count, fd, env, args.stop_timeout).run()


if __name__ == "__main__":
    sys.exit(main())
