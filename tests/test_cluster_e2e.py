"""A small cluster (bench/cluster.py): nginx, 2 web hosts, 1 worker host, beat and a data host, each a network
namespace. A web host dies in the middle of a reply: its client resumes through the other one from its
Last-Event-ID and reads the whole reply exactly once; the workers' capacity is read across hosts.

Needs root and Debian's nginx (`make test` installs it). Everything talks to the cluster from its client
namespace, on a thread of its own (the rest of the test session stays in the machine's namespace)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from httpx_sse import connect_sse

from bench.cluster import Cluster
from tests.live import entry_key

pytestmark = pytest.mark.e2e

SCRIPT = [f" w{i}" for i in range(250)]  # 25 s at 0.1 s a delta


def in_cluster_thread(test) -> None:
    """Run `test(cluster)` on a thread that starts the cluster (and so moves into its client namespace), and
    stop the cluster whatever happens."""
    outcome: dict = {}

    def body() -> None:
        cluster = Cluster(web_hosts=2, worker_hosts=1, worker_concurrency=2)
        try:
            cluster.start()
            test(cluster)
        except BaseException as exc:
            outcome["error"] = exc
            if cluster.tmp:
                outcome["logs"] = {
                    name: cluster.log(*name.split("/"))[-3000:] for name in ("web1/web", "web2/web", "worker1/worker")
                }
        finally:
            cluster.stop()

    thread = threading.Thread(target=body, name="cluster-e2e")
    thread.start()
    thread.join(timeout=600)
    assert not thread.is_alive(), "the cluster test did not finish"
    if "error" in outcome:
        print(json.dumps(outcome.get("logs", {}), indent=1))
        raise outcome["error"]


def host_of(cluster: Cluster, upstream: str) -> str:
    """The web host whose address nginx names in X-Chatsite-Upstream (`10.77.0.21:8000`)."""
    address = upstream.split(",")[-1].strip().rsplit(":", 1)[0]
    return next(name for name, host in cluster.hosts.items() if host.address == address)


def test_a_stream_whose_web_host_dies_resumes_on_the_other_host():
    def test(cluster: Cluster) -> None:
        cluster.seed("erin", "erin password 1234", "scripted", SCRIPT, 0.1)
        http = httpx.Client(base_url=cluster.base_url, timeout=httpx.Timeout(10, read=30))
        token = http.get("/api/auth/csrf").json()["csrfToken"]
        me = http.post("/api/auth/login", json={"username": "erin", "password": "erin password 1234"},
                       headers={"X-CSRFToken": token})  # fmt: skip
        assert me.status_code == 200, me.text
        token, user_id = me.json()["csrfToken"], me.json()["id"]
        chat = http.post("/api/chats", json={}, headers={"X-CSRFToken": token}).json()["id"]
        assert http.get("/readyz").status_code == 200

        ids, text, first_host = [], [], None
        message_id = None
        body = {"content": "Hi", "modelId": "scripted", "userId": user_id}
        broke = False
        with connect_sse(http, "POST", f"/api/chats/{chat}/messages/stream", json=body,
                         headers={"X-CSRFToken": token, "Idempotency-Key": "e2e-1"}) as source:  # fmt: skip
            assert source.response.status_code == 200
            first_host = host_of(cluster, source.response.headers["X-Chatsite-Upstream"])
            try:
                for sse in source.iter_sse():
                    if not sse.data:
                        continue
                    event = sse.json()
                    ids.append(sse.id)
                    if event["type"] == "start":
                        message_id = event["messageId"]
                    elif event["type"] == "content":
                        text.append(event["delta"])
                    assert event["type"] not in ("end", "error"), "the reply ended before its web host died"
                    if len(ids) == 6:
                        cluster.kill_host(first_host)  # mid-reply: this stream's web host dies
            except httpx.HTTPError:
                broke = True
        assert broke or len(ids) >= 6, ids
        assert message_id
        # The reply goes on on its worker, which reports it (every few seconds): one of the worker host's 2
        # network slots is busy.
        deadline = time.monotonic() + 15
        while True:
            lanes = json.loads(cluster.manage("capacity", "--json"))
            network = lanes["network"]
            if network["busy"] >= 1 or time.monotonic() > deadline:
                break
        assert [w["worker"] for w in network["workers"]] == ["network@worker1"], lanes
        assert network["slots"] == 2 and network["busy"] >= 1 and network["free"] == 2 - network["busy"], lanes
        assert lanes["local"]["slots"] == 1 and lanes["ingest"]["slots"] == 1, lanes

        retried = time.monotonic()
        resume = f"/api/chats/{chat}/messages/{message_id}/stream"
        with connect_sse(http, "GET", resume, headers={"Last-Event-ID": ids[-1]}) as source:
            assert source.response.status_code == 200
            second_host = host_of(cluster, source.response.headers["X-Chatsite-Upstream"])
            first_event_after = None
            for sse in source.iter_sse():
                if not sse.data:
                    continue
                first_event_after = first_event_after or time.monotonic() - retried
                event = sse.json()
                ids.append(sse.id)
                if event["type"] == "content":
                    text.append(event["delta"])
                if event["type"] in ("end", "error"):
                    break
        assert second_host != first_host
        assert event["type"] == "end", event
        # The goal is within 2 s of the client's retry: a figure `make cluster-chaos` prints (timings are
        # not asserted in tests, on shared machines); here, that the stream went on at all.
        assert first_event_after is not None
        print(f"the stream went on {first_event_after:.2f} s after the client's retry")
        keys = [entry_key(i) for i in ids]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        assert "".join(text) == "".join(SCRIPT)
        # Every host that is up says so through nginx; the dead one is skipped.
        assert {http.get("/readyz").status_code for _ in range(4)} == {200}

    in_cluster_thread(test)
