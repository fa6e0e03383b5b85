"""What each Celery worker can take: its lane, slots and busy slots, published to Redis for `manage.py capacity`.

Each worker's main process (the one that owns the pool, whatever the pool: prefork, gevent, threads, solo)
writes one Redis hash every CHATSITE_CAPACITY_SECONDS, with a TTL of three times that, so a worker that died or
lost its link drops out of the report by itself:

    <CHATSITE_STREAM_KEY_PREFIX>worker:<hostname>  ->  {hostname, lane, queues, pool, slots, busy, pid, updated}

- `lane`: the node name's prefix (`ingest` for `-n ingest@%h`), or, for Celery's default node name (`celery@`),
  the queue names it consumes, comma-separated;
- `slots`: the pool's size (`--concurrency`; an autoscaling pool's current size);
- `busy`: the tasks it is running now (`celery.worker.state.active_requests`, counted by the main process for
  every pool); `free` = slots - busy.

It starts on `worker_ready` (a daemon thread: under gevent's monkey-patching, a greenlet) and removes its key on
`worker_shutdown`. Nothing here runs in web processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time

from celery import signals
from django.conf import settings

logger = logging.getLogger("chatsite.capacity")

_stop = threading.Event()
_key: str | None = None


def key_prefix() -> str:
    """The Redis key prefix of the workers' capacity hashes."""
    return f"{settings.CHATSITE_STREAM_KEY_PREFIX}worker:"


def lane_of(hostname: str, queues: list[str]) -> str:
    """A worker's lane: its node name's prefix, or its queues when it kept Celery's default name."""
    prefix = hostname.split("@", 1)[0]
    return prefix if prefix and prefix != "celery" else ",".join(sorted(queues)) or "default"


def _snapshot(consumer) -> dict[str, str]:
    from celery.worker import state

    controller = consumer.controller
    pool = consumer.pool
    slots = getattr(pool, "num_processes", None) or getattr(pool, "limit", None) or controller.concurrency
    queues = [queue.name for queue in consumer.task_consumer.queues] if consumer.task_consumer else []
    hostname = consumer.hostname
    return {
        "hostname": hostname,
        "lane": lane_of(hostname, queues),
        "queues": ",".join(queues),
        "pool": type(pool).__module__.rsplit(".", 1)[-1],
        "slots": str(int(slots or 0)),
        "busy": str(len(state.active_requests)),
        "pid": str(os.getpid()),
        "updated": f"{time.time():.3f}",
    }


def _publish_forever(consumer) -> None:
    import redis

    global _key
    interval = settings.CHATSITE_CAPACITY_SECONDS
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    while not _stop.is_set():
        try:
            snapshot = _snapshot(consumer)
            key = f"{key_prefix()}{snapshot['hostname']}"
            with client.pipeline() as pipe:
                pipe.hset(key, mapping=snapshot)
                pipe.expire(key, max(1, int(interval * 3)))
                pipe.execute()
            _key = key
        except Exception as exc:  # Redis away or the consumer restarting: try again next time
            logger.debug("capacity: not published (%s)", type(exc).__name__)
        _stop.wait(interval)


@signals.worker_ready.connect
def start_publishing(sender=None, **kwargs) -> None:
    """worker_ready: start publishing this worker's capacity (sender is the worker's Consumer)."""
    if sender is None or settings.CHATSITE_CAPACITY_SECONDS <= 0:
        return
    _stop.clear()
    threading.Thread(target=_publish_forever, args=(sender,), name="chatsite-capacity", daemon=True).start()


@signals.worker_shutdown.connect
def stop_publishing(**kwargs) -> None:
    """worker_shutdown: stop, and take this worker out of the report at once."""
    _stop.set()
    if _key:
        import redis

        with contextlib.suppress(redis.RedisError):  # it expires by itself
            redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1).delete(_key)


def read_capacity() -> list[dict]:
    """Every worker that published within its TTL: `[{hostname, lane, queues, pool, slots, busy, free, pid,
    age_seconds}]`, sorted by lane and hostname. Raises redis.RedisError if Redis does not answer."""
    from chats.events import sync_redis

    client = sync_redis()
    workers = []
    now = time.time()
    for key in client.scan_iter(f"{key_prefix()}*", count=500):
        found = client.hgetall(key)
        if not found:
            continue
        slots, busy = int(found.get("slots", 0)), int(found.get("busy", 0))
        workers.append(
            {
                "hostname": found.get("hostname", ""),
                "lane": found.get("lane", ""),
                "queues": found.get("queues", ""),
                "pool": found.get("pool", ""),
                "slots": slots,
                "busy": busy,
                "free": max(0, slots - busy),
                "pid": int(found.get("pid", 0)),
                "age_seconds": round(now - float(found.get("updated", now)), 1),
            }
        )
    return sorted(workers, key=lambda w: (w["lane"], w["hostname"]))


def lanes_summary(workers: list[dict]) -> dict[str, dict]:
    """Totals per lane: `{lane: {"workers", "slots", "busy", "free"}}`."""
    lanes: dict[str, dict] = {}
    for worker in workers:
        lane = lanes.setdefault(worker["lane"], {"workers": 0, "slots": 0, "busy": 0, "free": 0})
        lane["workers"] += 1
        for field in ("slots", "busy", "free"):
            lane[field] += worker[field]
    return lanes


def as_json(workers: list[dict]) -> str:
    return json.dumps({"workers": workers, "lanes": lanes_summary(workers)}, indent=2)
