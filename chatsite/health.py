"""Liveness and readiness for load balancers and orchestrators (issue 17).

- `GET /healthz`: the process answers; no I/O at all. 200 `{"status": "ok"}`.
- `GET /readyz`: the database, Redis and the Celery broker each answer a round trip within
  `CHATSITE_READY_TIMEOUT_SECONDS`. 200 `{"status": "ready", "checks": {name: {"ok": true, "ms": 1.2}}}`, or 503
  `{"status": "unavailable", "checks": {..., name: {"ok": false, "ms": 2000.4, "error": "<code>"}}}` with
  `Retry-After`. In embedded mode Redis and the broker are not used and are reported as `{"ok": true,
  "skipped": "embedded"}`.

Both are plain Django views: no authentication, no session, no throttling, no CSRF (GET only), and they never
write. Django logs every response of status 400 or more; a failing probe would log one line per probe, so the
view marks its 503 as logged and logs only changes of readiness (per process), at WARNING.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from chats.api_errors import DATABASE_RETRY_AFTER_SECONDS

logger = logging.getLogger("chatsite.health")

_last_ready: bool | None = None


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: 200 while the process serves requests. Touches nothing, so a slow database never kills it."""
    return JsonResponse({"status": "ok"})


def check_database() -> None:
    """One `SELECT 1` on the default database. With PostgreSQL's pool (settings: DATABASES pool), the connection
    comes from the pool, waiting at most CHATSITE_READY_TIMEOUT_SECONDS for one (the pool's own timeout, used by
    requests, is longer). Raises on any failure."""
    from django.db import connections

    connection = connections["default"]
    pool = getattr(connection, "pool", None) if connection.vendor == "postgresql" else None
    if pool is not None:
        pool.open()  # Django opens it on first use (a no-op once open)
        with pool.connection(timeout=settings.CHATSITE_READY_TIMEOUT_SECONDS) as raw:
            raw.execute("SELECT 1").fetchone()
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_redis() -> None:
    """PING on the event bus's Redis (REDIS_URL), on a connection of its own with a short timeout: the process's
    pooled client retries for up to CHATSITE_REDIS_RETRY_SECONDS, too long for a probe. Raises on failure."""
    import redis

    timeout = settings.CHATSITE_READY_TIMEOUT_SECONDS
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()


def check_broker() -> None:
    """Connect to the Celery broker (CELERY_BROKER_URL, by default the same Redis) once, without retrying.
    Raises on failure."""
    from chatsite.celery import app

    timeout = settings.CHATSITE_READY_TIMEOUT_SECONDS
    with app.connection_for_write() as connection:
        connection.transport_options.update(socket_connect_timeout=timeout, socket_timeout=timeout)
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
        # kombu connects lazily: a channel's client makes the round trip.
        client = getattr(connection.default_channel, "client", None)
        if client is not None and hasattr(client, "ping"):
            client.ping()


CHECKS: dict[str, Callable[[], None]] = {"database": check_database, "redis": check_redis, "broker": check_broker}


def run_checks() -> tuple[bool, dict[str, dict]]:
    """Run every check in turn; returns (all passed, `{name: {"ok", "ms", "error"?, "skipped"?}}`).

    A failure's `error` is the exception's class name (never its text, which can name hosts or users)."""
    results: dict[str, dict] = {}
    for name, check in CHECKS.items():
        if settings.CHATSITE_EMBEDDED and name in ("redis", "broker"):
            results[name] = {"ok": True, "ms": 0.0, "skipped": "embedded"}
            continue
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # any failure means not ready; the kind is reported
            results[name] = {"ok": False, "ms": _ms(started), "error": type(exc).__name__}
        else:
            results[name] = {"ok": True, "ms": _ms(started)}
    return all(r["ok"] for r in results.values()), results


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when this process can serve (database, Redis, broker reachable), else 503."""
    global _last_ready
    ready, checks = run_checks()
    if ready != _last_ready:
        if not ready or _last_ready is not None:
            failing = sorted(name for name, result in checks.items() if not result["ok"])
            logger.warning("readiness: %s%s", "ready" if ready else "NOT ready: ", ", ".join(failing))
        _last_ready = ready
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    response = JsonResponse(body, status=200 if ready else 503)
    if not ready:
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        response._has_been_logged = True  # Django would log every failing probe at ERROR
    return response
