"""Linux network namespaces for bench/cluster.py: moving a thread into one, refusing to talk to the cluster from
outside its namespaces, and a loopback port forwarded into one."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import threading
from pathlib import Path

CLONE_NEWNET = 0x40000000


def sh(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command (no shell), raising with its stderr if it fails and `check`."""
    result = subprocess.run(list(args), capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {result.returncode}: {result.stderr.strip()[:500]}")
    return result


_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace `name` (threads it starts later inherit it; sockets it
    opens belong to it). Python 3.11 has no os.setns: libc's setns(2)."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({name}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def require_namespace() -> None:
    """Refuse to go on outside the cluster's namespaces: in the machine's own, the cluster's addresses are not on
    this machine, and a connection to one would leave it (through the default route). Everything that talks to
    the cluster runs in its client namespace (`enter_netns`, `in_netns`)."""
    ours = {path.stat().st_ino for path in Path("/run/netns").glob("cs*-*")}
    if os.stat("/proc/thread-self/ns/net").st_ino not in ours:
        raise RuntimeError("refusing to reach the cluster's addresses from the machine's own network namespace")


@contextlib.contextmanager
def in_netns(name: str):
    """The calling thread is in namespace `name` inside the block, and back in its own after it. Sockets opened
    inside stay in `name`."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        enter_netns(name)
        yield
    finally:
        _libc.setns(own, CLONE_NEWNET)
        os.close(own)


class Forwarder:
    """Forwards connections to `127.0.0.1:<port>` in the namespace where it was made to `target` in the namespace
    of the thread that calls `serve` (the cluster's client namespace): so that a browser on this machine reaches
    the cluster's load balancer. Each connection is relayed by two threads; `close` stops accepting."""

    def __init__(self, port: int) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(128)
        self.port = port

    def serve(self, target: tuple[str, int]) -> None:
        """Start accepting (on a daemon thread, which opens its connections in the caller's namespace)."""
        threading.Thread(target=self._accept, args=(target,), daemon=True).start()

    def _accept(self, target: tuple[str, int]) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.close()


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes from `source` to `sink` until either closes, then shut both (one direction of a TCP relay)."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
