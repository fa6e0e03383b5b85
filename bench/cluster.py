"""A chatsite cluster on this one machine: hosts as Linux network namespaces behind a real nginx (issue 17).

    python bench/cluster.py start [--web 2] [--workers 2] [--port 8080]   # `make cluster`: until Ctrl-C
    python bench/cluster.py stop                             # removes what a run left (a killed run, say)

Every host is a network namespace of its own (and a UTS namespace, so each has its own host name), with one
veth link to a bridge that lives in a namespace of its own (the switch); addresses are in 10.77.0.0/24, which
exists only inside these namespaces. Nothing is added to the machine's own network namespace: traffic stays on
the bridge and on each namespace's loopback.

    client   10.77.0.100   the load generator (bench/cluster_chaos.py), and the way in: `make cluster`
                           forwards 127.0.0.1:8080 on this machine to nginx from here
    lb       10.77.0.10    nginx from Debian, configured like the README's production snippet
    web1..n  10.77.0.21..  the Procfile's `web` (daphne)
    worker1..n 10.77.0.31.. every other role of the Procfile but `beat` (today `worker` and `ingest`)
    beat     10.77.0.40    the Procfile's `beat`
    data     10.77.0.50    a PostgreSQL instance (initdb in a temporary folder, the machine's Debian binaries)
                           and a Redis server, both started for the run

Roles are started from the Procfile's command lines, so a change there is picked up. The machine's own
PostgreSQL and Redis are left alone. Every exit path (Ctrl-C, SIGTERM, an exception, `stop`) removes the
namespaces, the processes started in them and the temporary folders; a state file (var/cluster/state.json)
lets `stop` clean up after a run that was killed.

The cluster's processes run with the live tests' short lifecycle timings (tests/live.py LIFECYCLE_ENV).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cluster_config import NGINX_CONF, SEED, lifecycle_env
from bench.netns import Forwarder, enter_netns, require_namespace, sh

ROOT = Path(__file__).resolve().parent.parent
STATE_FILE = ROOT / "var" / "cluster" / "state.json"
SUBNET = "10.77.0"
PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))[-1:]
HTTP_PORT = 8000


def procfile(path: Path = ROOT / "Procfile") -> dict[str, str]:
    """The Procfile's roles: {name: command line}, in order."""
    roles = {}
    for line in path.read_text().splitlines():
        found = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line.strip())
        if found:
            roles[found[1]] = found[2]
    return roles


def roles_for(kind: str, roles: dict[str, str]) -> list[str]:
    """Which Procfile roles a host of `kind` runs: web hosts `web`, the beat host `beat`, worker hosts all
    the others (a role the Procfile adds later, such as a second worker lane, lands there)."""
    if kind == "web":
        return ["web"]
    if kind == "beat":
        return ["beat"]
    return [name for name in roles if name not in ("web", "beat")]


@dataclass
class Host:
    name: str
    kind: str  # client, lb, web, worker, beat, data
    address: str
    ns: str = ""
    link: str = ""  # its veth's end on the switch


@dataclass
class Cluster:
    """The namespaces, the data host's servers, nginx and the roles' processes of one run."""

    web_hosts: int = 2
    worker_hosts: int = 2
    worker_concurrency: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)  # "<host>/<role>" -> process
    tmp: Path | None = None
    secret_key: str = field(default_factory=lambda: uuid.uuid4().hex * 2)
    active_webs: list[str] = field(default_factory=list)

    # -- addresses -----------------------------------------------------------------------------------------
    @property
    def switch(self) -> str:
        return f"cs{self.run_id}-switch"

    @property
    def data(self) -> Host:
        return self.hosts["data"]

    @property
    def database_url(self) -> str:
        return f"postgres://postgres@{self.data.address}:5432/chatsite"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.data.address}:6379/0"

    @property
    def base_url(self) -> str:
        return f"http://{self.hosts['lb'].address}"

    def web_url(self, name: str) -> str:
        return f"http://{self.hosts[name].address}:{HTTP_PORT}"

    def names(self, kind: str) -> list[str]:
        return [name for name, host in self.hosts.items() if host.kind == kind]

    # -- the network ---------------------------------------------------------------------------------------
    def plan(self) -> None:
        """Name the hosts and their addresses (nothing is made yet)."""
        self.hosts.clear()
        plan = [("client", "client", 100), ("lb", "lb", 10), ("beat", "beat", 40), ("data", "data", 50)]
        plan += [(f"web{i}", "web", 20 + i) for i in range(1, self.web_hosts + 1)]
        plan += [(f"worker{i}", "worker", 30 + i) for i in range(1, self.worker_hosts + 1)]
        for name, kind, last in plan:
            self.hosts[name] = Host(name, kind, f"{SUBNET}.{last}", f"cs{self.run_id}-{name}", f"v-{name}")

    def build_network(self) -> None:
        self.save_state()
        sh("ip", "netns", "add", self.switch)
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        for host in self.hosts.values():
            sh("ip", "netns", "add", host.ns)
            sh("ip", "-n", self.switch, "link", "add", host.link, "type", "veth",
               "peer", "name", "eth0", "netns", host.ns)  # fmt: skip
            sh("ip", "-n", self.switch, "link", "set", host.link, "master", "br0", "up")
            sh("ip", "-n", host.ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            sh("ip", "-n", host.ns, "link", "set", "eth0", "up")
            sh("ip", "-n", host.ns, "link", "set", "lo", "up")

    def set_link(self, name: str, up: bool) -> None:
        """Cut (or restore) host `name`'s one link, at the switch: its packets go nowhere, nothing is reset."""
        sh("ip", "-n", self.switch, "link", "set", self.hosts[name].link, "up" if up else "down")

    # -- processes -----------------------------------------------------------------------------------------
    def spawn(self, host: str, role: str, command: str, env: dict[str, str], log: Path) -> subprocess.Popen:
        """Start `command` (a shell line) on `host` in a new session, with its own host name (UTS namespace)."""
        inner = f"hostname {shlex.quote(host)} && exec {command}"
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.hosts[host].ns, "unshare", "--uts", "--", "sh", "-c", inner],
            cwd=ROOT,
            env=env,
            stdout=log.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[f"{host}/{role}"] = process
        self.save_state()
        return process

    def role_env(self, host: str, role: str) -> dict[str, str]:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "SECRET_KEY": self.secret_key,
            "ALLOWED_HOSTS": "*",
            "CHATSITE_EMBEDDED": "0",
            "CHATSITE_HOST": self.hosts[host].address,
            "CHATSITE_PORT": str(HTTP_PORT),
            # The network lane's gevent slots per worker host (the Procfile's `worker`).
            "CHATSITE_NETWORK_SLOTS": str(self.worker_concurrency),
            "CHATSITE_DB_APPLICATION_NAME": f"chatsite-{host}-{role}",
            # A request waits this long for a database connection, then answers 503 database_unavailable.
            "DATABASE_POOL_TIMEOUT": "2",
            "PYTHONUNBUFFERED": "1",
            **lifecycle_env(),
            **self.extra_env,
        }
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        return env

    def start_roles(self, host: str) -> None:
        kind = self.hosts[host].kind
        roles = procfile()
        for role in roles_for(kind, roles):
            self.spawn(host, role, roles[role], self.role_env(host, role), self.tmp / f"{host}-{role}.log")

    def kill_host(self, host: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to every process group started on `host`."""
        for key, process in self.processes.items():
            if key.split("/")[0] == host and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
        for key, process in self.processes.items():
            if key.split("/")[0] == host:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=15)

    def log(self, host: str, role: str) -> str:
        path = self.tmp / f"{host}-{role}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- the data host -------------------------------------------------------------------------------------
    def pg(self, *args: str) -> subprocess.CompletedProcess:
        """pg_ctl on the data host, as the postgres user (PostgreSQL refuses to run as root)."""
        pg_ctl = str(PG_BIN[0] / "pg_ctl")
        return sh(
            "ip", "netns", "exec", self.data.ns, "runuser", "-u", "postgres", "--",
            pg_ctl, "-D", str(self.tmp / "postgres" / "data"), "-l", str(self.tmp / "postgres" / "log"), *args,
        )  # fmt: skip

    def start_postgres(self) -> None:
        require_namespace()
        (self.tmp / "postgres").mkdir()
        shutil.chown(self.tmp / "postgres", "postgres")
        folder = self.tmp / "postgres" / "data"
        sh("runuser", "-u", "postgres", "--", str(PG_BIN[0] / "initdb"), "-D", str(folder), "-A", "trust",
           "-U", "postgres", "--no-sync", "-E", "UTF8")  # fmt: skip
        with (folder / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{self.data.address}'\nport = 5432\nunix_socket_directories = '{folder}'\n"
                "max_connections = 400\nshared_buffers = 128MB\n"
                # A test cluster: no waiting for the disk (a restart still loses nothing that was committed,
                # as only a crash of the machine would need the flushes).
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        with (folder / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {SUBNET}.0/24 trust\n")
        self.pg("-w", "-t", "30", "start")
        sh(str(PG_BIN[0] / "createdb"), "-h", self.data.address, "-U", "postgres", "chatsite")

    def restart_postgres(self, down_seconds: float = 0.0) -> None:
        """Stop PostgreSQL (`pg_ctl stop -m fast`: every connection is closed), leave it down `down_seconds`
        (connections are refused), and start it again; returns once it accepts connections."""
        self.pg("-w", "-t", "60", "-m", "fast", "stop")
        time.sleep(down_seconds)
        self.pg("-w", "-t", "60", "start")

    def start_redis(self) -> None:
        require_namespace()
        folder = self.tmp / "redis"
        folder.mkdir(exist_ok=True)
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.data.ns, "redis-server", "--bind", self.data.address, "--port", "6379",
             "--dir", str(folder), "--appendonly", "yes", "--save", "", "--protected-mode", "no",
             "--maxclients", "10000"],
            stdout=(self.tmp / "redis.log").open("a"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.processes["data/redis"] = process
        self.save_state()
        self.wait(lambda: sh("redis-cli", "-h", self.data.address, "ping", check=False).stdout.strip() == "PONG",
                  20, "redis-server")  # fmt: skip

    def restart_redis(self) -> None:
        """SHUTDOWN (the append-only file is flushed) and start again, as bench/chaos.py does."""
        sh("redis-cli", "-h", self.data.address, "shutdown", check=False)
        self.processes["data/redis"].wait(timeout=20)
        self.start_redis()

    # -- the load balancer ---------------------------------------------------------------------------------
    def nginx_conf(self) -> str:
        servers = "\n".join(
            f"        server {self.hosts[name].address}:{HTTP_PORT} max_fails=1 fail_timeout=5s;"
            for name in self.active_webs
        )
        folder = self.tmp / "nginx"
        return NGINX_CONF.format(folder=folder, servers=servers, listen=self.hosts["lb"].address)

    def start_nginx(self) -> None:
        folder = self.tmp / "nginx"
        folder.mkdir(exist_ok=True)
        (folder / "nginx.conf").write_text(self.nginx_conf())
        self.spawn("lb", "nginx", f"nginx -p {folder} -c {folder}/nginx.conf -g 'daemon off;'",
                   dict(os.environ), self.tmp / "lb-nginx.log")  # fmt: skip

    def reload_nginx(self) -> None:
        (self.tmp / "nginx" / "nginx.conf").write_text(self.nginx_conf())
        os.kill(self.processes["lb/nginx"].pid, signal.SIGHUP)
        time.sleep(0.5)

    # -- life cycle ----------------------------------------------------------------------------------------
    def wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if predicate():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"cluster: timed out waiting for {what} (logs in {self.tmp})")

    def http_ok(self, url: str) -> bool:
        import httpx

        require_namespace()
        return httpx.get(url, timeout=2).status_code == 200

    def manage(self, *args: str) -> str:
        """Run `manage.py <args>` against the cluster's database and Redis (from the client namespace); returns
        its output."""
        require_namespace()
        env = {**os.environ, "DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url,
               "SECRET_KEY": self.secret_key, "CHATSITE_EMBEDDED": "0"}  # fmt: skip
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        return sh(sys.executable, "manage.py", *args, cwd=ROOT, env=env).stdout

    def migrate(self) -> None:
        self.manage("migrate", "--no-input", "-v", "0")

    def seed(self, username: str, password: str, model_id: str, script: list[str], delay: float) -> None:
        """A user, and a scripted model writing `script` one delta every `delay` seconds."""
        self.manage("shell", "-c", SEED.format(username=username, password=password, model_id=model_id,
                                                options={"script": script, "delay": delay}))  # fmt: skip

    def save_logs(self, into: Path) -> None:
        """Copy the run's logs (each role's, nginx's, PostgreSQL's, Redis's) into `into`."""
        into.mkdir(parents=True, exist_ok=True)
        for path in [*self.tmp.glob("*.log"), self.tmp / "postgres" / "log", self.tmp / "nginx" / "error.log"]:
            if path.exists():
                shutil.copy(path, into / (path.name if path.suffix == ".log" else f"{path.parent.name}-{path.name}"))

    def start(self, *, webs: int | None = None, workers: int | None = None) -> None:
        """Build the network, start the data host, migrate, and start nginx, `webs` web hosts, `workers` worker
        hosts and the beat. The calling thread moves into the client namespace (to reach the cluster)."""
        if os.geteuid() != 0:
            raise SystemExit("bench/cluster.py needs root (network namespaces, veth pairs).")
        stop_leftovers()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"chatsite-cluster-{self.run_id}-"))
        os.chmod(self.tmp, 0o755)  # noqa: S103 - the postgres user and nginx's workers read below it
        self.plan()
        self.build_network()
        enter_netns(self.hosts["client"].ns)
        self.start_postgres()
        self.start_redis()
        self.migrate()
        self.active_webs = self.names("web")[: webs or self.web_hosts]
        for name in self.active_webs:
            self.start_roles(name)
        for name in self.names("worker")[: workers or self.worker_hosts]:
            self.start_roles(name)
        self.start_roles("beat")
        self.start_nginx()
        for name in self.active_webs:
            self.wait(lambda n=name: self.http_ok(f"{self.web_url(n)}/readyz"), 60, f"{name}'s /readyz")
        self.wait(lambda: self.http_ok(f"{self.base_url}/readyz"), 20, "nginx")
        for name in self.names("worker")[: workers or self.worker_hosts]:
            self.wait(lambda n=name: "ready." in self.log(n, "worker"), 60, f"{name}'s worker")

    def save_state(self) -> None:
        STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "namespaces": [self.switch, *(h.ns for h in self.hosts.values())],
            "processes": [p.pid for p in self.processes.values()],
            "tmp": str(self.tmp) if self.tmp else None,
        }
        STATE_FILE.write_text(json.dumps(state))

    def stop(self) -> None:
        """Stop everything this run started and remove its namespaces and folders. Safe to call twice."""
        for process in list(self.processes.values()):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        if self.tmp and (self.tmp / "postgres" / "data" / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):
                self.pg("-m", "immediate", "stop")
        remove(json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {})
        self.processes.clear()

    def addresses(self) -> str:
        lines = [f"  {h.name:<8} {h.address:<12} {h.kind:<7} netns {h.ns}" for h in self.hosts.values()]
        return "\n".join(lines)


def remove(state: dict) -> None:
    """Remove what a state file names: processes (by pid, their groups), namespaces, the temporary folder."""
    for pid in state.get("processes", []):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    tmp = state.get("tmp")
    pid_file = Path(tmp, "postgres", "data", "postmaster.pid") if tmp else None
    if pid_file and pid_file.exists():
        # The postmaster is not ours by group (pg_ctl starts it in a session of its own): its pid file names it.
        with contextlib.suppress(ValueError, ProcessLookupError, OSError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
    for ns in state.get("namespaces", []):
        sh("ip", "netns", "del", ns, check=False)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    if STATE_FILE.exists() and json.loads(STATE_FILE.read_text()).get("run_id") == state.get("run_id"):
        STATE_FILE.unlink()


def stop_leftovers() -> None:
    """Clean up after an earlier run that did not (it was killed): only if its process is gone."""
    if not STATE_FILE.exists():
        return
    state = json.loads(STATE_FILE.read_text())
    with contextlib.suppress(ProcessLookupError):
        if state.get("pid") and state["pid"] != os.getpid():
            os.kill(state["pid"], 0)
            return  # that run is still going: leave it
    remove(state)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("start", "stop"))
    parser.add_argument("--web", type=int, default=2, help="web hosts (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="worker hosts (default 2)")
    parser.add_argument("--concurrency", type=int, default=100, help="CHATSITE_NETWORK_SLOTS per worker host")
    parser.add_argument("--port", type=int, default=8080, help="loopback port forwarded to nginx (0: none)")
    args = parser.parse_args()
    if args.command == "stop":
        if STATE_FILE.exists():
            state = json.loads(STATE_FILE.read_text())
            if state.get("pid"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(state["pid"], signal.SIGTERM)  # the run cleans up after itself
                    time.sleep(3)
            remove(json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {})
        print("cluster: stopped")
        return 0
    cluster = Cluster(web_hosts=args.web, worker_hosts=args.workers, worker_concurrency=args.concurrency)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Listens on this machine's loopback (made before the cluster moves this thread into its client namespace).
    forward = Forwarder(args.port) if args.port else None
    try:
        cluster.start()
        print(f"chatsite cluster {cluster.run_id} is up (logs in {cluster.tmp}):")
        print(cluster.addresses())
        print(cluster.manage("ensure_demo_user").strip())
        client = cluster.hosts["client"].ns
        if forward:
            forward.serve((cluster.hosts["lb"].address, 80))
            print(f"\nOpen http://127.0.0.1:{args.port}/ (forwarded to the load balancer, {cluster.base_url}).")
        print(f"From a shell: ip netns exec {client} curl -s {cluster.base_url}/readyz")
        print(f"Capacity:     DATABASE_URL={cluster.database_url} REDIS_URL={cluster.redis_url} "
              f"ip netns exec {client} .venv/bin/python manage.py capacity")  # fmt: skip
        print("Ctrl-C (or `python bench/cluster.py stop`) stops it and removes everything it made.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if forward:
            forward.close()
        cluster.stop()
        print("cluster: stopped, namespaces and folders removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
