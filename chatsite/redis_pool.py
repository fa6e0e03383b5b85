"""One Redis connection pool per URL per process, for Django's Redis cache backend.

Django keeps its cache objects per thread and per asyncio context, and its `RedisCache` gives each cache object a
connection pool of its own. Under ASGI every request runs in a context (and sync code on a thread) of its own, so
each request opened a new Redis connection, held until the object was collected: for an open stream, as long as
the stream. Named as the cache's `pool_class`, this class hands every cache object the same thread-safe pool,
with a fixed number of connections (`max_connections`; a request waits up to `timeout` seconds for a free one).
"""

from __future__ import annotations

import threading
from typing import Any

import redis


class SharedConnectionPool(redis.BlockingConnectionPool):
    """A `redis.BlockingConnectionPool` whose `from_url` returns one pool per (URL, options) in the process.

    redis-py pools are thread-safe and reset themselves in a forked child, so sharing one is safe in daphne's
    threads and Celery's prefork workers alike.
    """

    _shared: dict[tuple[str, str], SharedConnectionPool] = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> SharedConnectionPool:
        key = (url, repr(sorted(kwargs.items(), key=lambda item: item[0])))
        with cls._lock:
            pool = cls._shared.get(key)
            if pool is None:
                pool = cls._shared[key] = super().from_url(url, **kwargs)
            return pool
