"""One way to hand work to a worker: replies and document ingestion, in full mode (Celery) and embedded mode.

Work comes in kinds, registered by the app that does the work in its `AppConfig.ready()` (`pipelines`: `reply`;
`knowledge`: `ingest`). The code that submits work (chats' sends, knowledge's uploads, the watchdog) calls
`submit(kind, object_id, lane=...)` and imports no worker code: in full mode the job goes to the lane's Celery
queue by task name (`Celery.send_task`), in embedded mode to the lane's thread pool in this process.

Lanes (DESIGN.md section 1) are kinds of worker, each serving one Celery queue:

- `network`: replies whose models are remote (OpenAI-compatible servers). They spend their life waiting on the
  network, so one worker process carries many at once: the Procfile's `worker` runs Celery's gevent pool with
  `CHATSITE_NETWORK_SLOTS` greenlets (see README, "Many replies at once").
- `local`: replies on a local model (llama_cpp). They are CPU-bound: a prefork pool of `CHATSITE_LOCAL_WORKERS`
  processes, each with its own loaded model, never shared between threads.
- `ingest`: document ingestion (extraction and embedding), one at a time, so a long PDF never holds a reply up.

Raises nothing to its callers for a broker that cannot be reached: the kind's `unqueueable` handler ends the
object instead (a reply fails with `queue_unavailable`, a document is marked failed).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import connections

logger = logging.getLogger(__name__)

NETWORK, LOCAL, INGEST = "network", "local", "ingest"
LANES = (NETWORK, LOCAL, INGEST)


@dataclass(frozen=True)
class JobKind:
    """A kind of work a worker does on one object, named by its id.

    `task`: the Celery task's name (it takes the object id as its one argument). `run` and `unqueueable` are
    `"module:function"` paths, imported on first use, each called with the object id: `run` does the work in
    embedded mode (on a thread of the lane's pool), `unqueueable` ends the object when the job queue cannot be
    reached.
    """

    name: str
    task: str
    run: str
    unqueueable: str


_kinds: dict[str, JobKind] = {}


def register(kind: JobKind) -> None:
    """Make `kind` submittable (called from an app's `ready()`; registering a name again replaces it)."""
    _kinds[kind.name] = kind


def _function(path: str) -> Callable[[str], object]:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def lane_queue(lane: str) -> str:
    """The Celery queue that `lane`'s workers serve (settings: CHATSITE_CELERY_QUEUE, CHATSITE_LOCAL_QUEUE,
    CHATSITE_INGEST_QUEUE).

    Raises:
        KeyError: for a lane that does not exist.
    """
    return {
        NETWORK: settings.CELERY_TASK_DEFAULT_QUEUE,
        LOCAL: settings.CHATSITE_LOCAL_QUEUE,
        INGEST: settings.CHATSITE_INGEST_QUEUE,
    }[lane]


def submit(kind: str, object_id: str, *, lane: str) -> None:
    """Run job `kind` on `object_id` in `lane`: Celery's queue for the lane, or, in embedded mode, its thread pool.

    Raises:
        KeyError: for a kind nobody registered or a lane that does not exist (a bug, not a user's error).
    """
    job = _kinds[kind]
    queue = lane_queue(lane)
    if settings.CHATSITE_EMBEDDED:
        _pool(lane).submit(_run_here, job, object_id)
        return
    from chatsite.celery import app

    try:
        app.send_task(job.task, args=[object_id], queue=queue)
    except Exception:
        # The broker is down: end the object now rather than leave it queued for ever.
        logger.exception("could not queue %s %s", kind, object_id)
        _function(job.unqueueable)(object_id)


# --- embedded mode: a thread pool per lane ---------------------------------------------------------------

_pools: dict[str, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def pool_size(lane: str) -> int:
    """How many threads embedded mode gives `lane` (CHATSITE_EMBEDDED_WORKERS, CHATSITE_LOCAL_WORKERS, 1)."""
    if lane == NETWORK:
        return settings.CHATSITE_EMBEDDED_WORKERS
    if lane == LOCAL:
        return settings.CHATSITE_LOCAL_WORKERS
    return 1


def _pool(lane: str) -> ThreadPoolExecutor:
    with _pools_lock:
        if lane not in _pools:
            _pools[lane] = ThreadPoolExecutor(pool_size(lane), thread_name_prefix=f"{lane}-lane")
        return _pools[lane]


def _run_here(job: JobKind, object_id: str) -> None:
    try:
        _function(job.run)(object_id)
    except Exception:
        logger.exception("%s %s failed in the embedded worker", job.name, object_id)
    finally:
        connections.close_all()  # this thread's connection goes back (to the pool, on PostgreSQL)


# --- capacity: the slots each lane's workers report --------------------------------------------------------

# A worker reports its lane's slots every CAPACITY_REPORT_SECONDS; a report older than CAPACITY_TTL_SECONDS is from
# a worker that is gone.
CAPACITY_REPORT_SECONDS = 10.0
CAPACITY_TTL_SECONDS = 30.0


def _capacity_key(lane: str) -> str:
    return f"{settings.CHATSITE_STREAM_KEY_PREFIX}lanes:{lane}"


def report_capacity(lane: str, worker: str, slots: int, busy: int) -> None:
    """Record that `worker` (its Celery node name) serves `lane` with `slots` slots, `busy` of them taken now.

    Raises:
        redis.RedisError: when Redis cannot be reached.
    """
    import json
    import time

    from chats.events import sync_redis

    report = json.dumps({"slots": slots, "busy": busy, "at": time.time()})
    sync_redis().hset(_capacity_key(lane), worker, report)


def withdraw_capacity(lane: str, worker: str) -> None:
    """Remove `worker`'s report from `lane` (it is stopping).

    Raises:
        redis.RedisError: when Redis cannot be reached.
    """
    from chats.events import sync_redis

    sync_redis().hdel(_capacity_key(lane), worker)


def capacity_reports(lane: str) -> dict[str, dict]:
    """The live reports of `lane`'s workers: `{worker: {"slots", "busy", "at"}}` (`at`: Unix seconds); stale
    ones are dropped. In embedded mode, this process's pool.

    Raises:
        redis.RedisError: when Redis cannot be reached.
    """
    import json
    import time

    if settings.CHATSITE_EMBEDDED:
        return {"embedded": {"slots": pool_size(lane), "busy": None, "at": time.time()}}
    from chats.events import sync_redis

    client = sync_redis()
    reports, stale = {}, []
    for worker, raw in client.hgetall(_capacity_key(lane)).items():
        report = json.loads(raw)
        if time.time() - report["at"] > CAPACITY_TTL_SECONDS:
            stale.append(worker)
        else:
            reports[worker.decode() if isinstance(worker, bytes) else worker] = report
    if stale:
        client.hdel(_capacity_key(lane), *stale)
    return reports


def capacity(lane: str) -> int | None:
    """How many replies `lane` can run at once: the slots its live workers report, summed (None: no worker
    reports, so nothing is known; a lane whose workers are all gone).

    Raises:
        redis.RedisError: when Redis cannot be reached.
    """
    reports = capacity_reports(lane)
    return sum(r["slots"] for r in reports.values()) if reports else None


def lane_of_queue(queue: str) -> str | None:
    """The lane whose Celery queue is `queue` (None: not one of chatsite's)."""
    return next((lane for lane in LANES if lane_queue(lane) == queue), None)
