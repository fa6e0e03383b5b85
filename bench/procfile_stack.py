"""chatsite started as `make run` starts it (every role of the Procfile, as honcho runs them), on a port, database,
Redis, Celery queues and stream key prefix of its own; and what its processes use, read from Linux's /proc.

Roles are read from the Procfile with honcho's own parser and each is run as honcho runs it (`/bin/sh -c
<command>` from the project's directory, with `PORT` and `HONCHO_PROCESS_NAME` set), in a process group of its own so
that each role's process tree (a prefork worker's children, a process manager's web processes) is found and
measured apart. Whatever roles the Procfile gains are started and measured too: a role whose name starts with
`web` counts as a web role, one that runs `celery ... worker` as a worker role.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def procfile_roles(path: Path) -> dict[str, str]:
    """`role -> command` from a Procfile, in file order (honcho's parser; its rules when honcho is absent)."""
    text = path.read_text()
    try:
        from honcho.environ import parse_procfile

        return dict(parse_procfile(text).processes)
    except ImportError:
        roles = {}
        for line in text.splitlines():
            if match := re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line):
                roles[match.group(1)] = match.group(2)
        return roles


# --- processes, from /proc ----------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (field 3, `state`, is index 0)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """`root` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                children.setdefault(int(_stat_fields(int(entry))[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if Path(f"/proc/{pid}").exists():
            found.append(pid)
            todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by `pids`, every thread included, those that have ended too.

    Read from each process's CPU-time clock (clock_gettime with the clock id that clock_getcpuclockid(3) gives:
    nanoseconds), not /proc/<pid>/stat, which counts 10 ms clock ticks: too coarse for one request's CPU. A
    process that has gone counts nothing.
    """
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            # Linux's CPU clock id of a whole process: (~pid << 3) | CPUCLOCK_SCHED (2).
            total += time.clock_gettime_ns(((~pid) << 3) | 2)
    return total / 1e9


SHELLS = {"sh", "dash", "bash"}


def is_shell(pid: int) -> bool:
    """Whether `pid` is a shell (the `sh -c` that runs a Procfile line), not one of chatsite's own processes."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() in SHELLS
    except OSError:
        return False


def rss_bytes(pids: list[int]) -> int:
    """Resident set size of `pids`, summed, in bytes (/proc/<pid>/statm)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    return total


# --- the stack ----------------------------------------------------------------------------------------------


@dataclass
class ProcfileStack:
    """The Procfile's roles running against `database_url` and `redis_url` on `port`.

    Each role's output goes to `log_dir/<role>.log`. `extra_env` is added to every role's environment (limits,
    say); each role's database connections are named `chatsite-<role>` (pg_stat_activity.application_name).
    """

    database_url: str
    redis_url: str
    port: int
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    procfile: Path = ROOT / "Procfile"
    roles: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def key_prefix(self) -> str:
        return f"bench:{self.tag}:"

    @property
    def queues(self) -> dict[str, str]:
        """The Celery queue names of this stack, by the setting that names each."""
        return {
            "CHATSITE_CELERY_QUEUE": f"bench-{self.tag}",
            "CHATSITE_INGEST_QUEUE": f"bench-ingest-{self.tag}",
            "CHATSITE_LOCAL_QUEUE": f"bench-local-{self.tag}",
        }

    def env(self, role: str, queue_settings: list[str]) -> dict[str, str]:
        index = list(self.roles).index(role)
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "CHATSITE_PORT": str(self.port),
            "CHATSITE_HOST": "127.0.0.1",
            # As honcho sets them: PORT is the base port plus 100 per role before this one.
            "PORT": str(self.port + 100 * index),
            "HONCHO_PROCESS_NAME": f"{role}.1",
            "CHATSITE_EMBEDDED": "0",
            "CHATSITE_STREAM_KEY_PREFIX": self.key_prefix,
            "CHATSITE_DB_APPLICATION_NAME": f"chatsite-{role}",
            "PYTHONUNBUFFERED": "1",
            **{name: value for name, value in self.queues.items() if name in queue_settings},
            **self.extra_env,
        }
        # The bench process's own Django settings module must not leak a test configuration into the stack.
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        return env

    def start(self, queue_settings: list[str]) -> None:
        """Start every role; `queue_settings` are the queue variables the settings read (see `queues`)."""
        self.roles = procfile_roles(self.procfile)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for role, command in self.roles.items():
            log = (self.log_dir / f"{role}.log").open("ab")
            # A Procfile line is a shell command line (variables with defaults): run by a shell, as honcho does.
            self.processes[role] = subprocess.Popen(  # noqa: S602
                command, shell=True, cwd=ROOT, env=self.env(role, queue_settings), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def log(self, role: str) -> str:
        path = self.log_dir / f"{role}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def check_alive(self) -> None:
        """Raise RuntimeError naming any role that has exited, with the end of its log."""
        for role, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"role {role} exited with {process.returncode}:\n{self.log(role)[-3000:]}")

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until the web role answers and every Celery worker role has logged `ready.`.

        Raises:
            RuntimeError: a role exited, or the stack was not ready within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        waiting_for = ""
        while time.monotonic() < deadline:
            self.check_alive()
            workers = [r for r in self.worker_roles() if "ready." not in self.log(r)]
            try:
                web_up = httpx.get(f"{self.base_url}/api/auth/csrf", timeout=2).status_code == 200
            except httpx.HTTPError:
                web_up = False
            if web_up and not workers:
                return
            waiting_for = ", ".join([*([] if web_up else ["web"]), *workers])
            time.sleep(0.3)
        raise RuntimeError(f"the stack was not ready after {timeout:.0f} s (waiting for {waiting_for})")

    def web_roles(self) -> list[str]:
        return [role for role in self.roles if role.startswith("web")]

    def worker_roles(self) -> list[str]:
        return [role for role, command in self.roles.items() if re.search(r"\bcelery\b.*\bworker\b", command)]

    def pids(self, roles: list[str]) -> list[int]:
        return [pid for role in roles if role in self.processes for pid in process_tree(self.processes[role].pid)]

    def cpu(self, roles: list[str]) -> float:
        return cpu_seconds(self.pids(roles))

    def rss(self, roles: list[str]) -> int:
        return rss_bytes(self.pids(roles))

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
