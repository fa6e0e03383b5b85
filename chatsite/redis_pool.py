"""One Redis connection pool per URL per process, and one client over it, for Django's Redis cache backend.

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
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient


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


class SharedClientCacheClient(RedisCacheClient):
    """Django's Redis cache client, with one `redis.Redis` per connection pool for the whole process.

    Django's client builds a new `redis.Redis` for every cache call (`get_client`), and building one costs about
    0.1 ms of CPU in redis-py 8 (it fills a case-insensitive table of some 170 response callbacks; measured on a
    2-core machine): a send makes 3 or 4 cache calls (session, rate limit). A `redis.Redis` over a pool is
    thread-safe (each command takes a connection from the pool), so one per pool serves every thread.
    """

    _clients: dict[int, redis.Redis] = {}
    _lock = threading.Lock()

    def get_client(self, key: Any = None, *, write: bool = False) -> redis.Redis:
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None or client.connection_pool is not pool:
            with self._lock:
                client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(DjangoRedisCache):
    """Django's `RedisCache` with `SharedClientCacheClient`: name it as the cache's BACKEND."""

    def __init__(self, server: str, params: dict) -> None:
        super().__init__(server, params)
        self._class = SharedClientCacheClient
