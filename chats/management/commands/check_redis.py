"""`manage.py check_redis`: exit 1 with a one-line hint when Redis (REDIS_URL) cannot be reached."""

import sys

import redis
from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Check that Redis at REDIS_URL answers; say how to start one if not."

    def handle(self, *args, **options) -> None:
        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:
            self.stderr.write(
                f"Redis is not reachable at {settings.REDIS_URL} ({exc}). Start one with "
                "'redis-server --daemonize yes' (Debian: apt-get install redis-server) or set REDIS_URL."
            )
            sys.exit(1)
