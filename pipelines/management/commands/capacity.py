"""`manage.py capacity`: every live Celery worker's lane, slots and busy slots, and each lane's totals."""

from __future__ import annotations

import redis
from django.core.management.base import BaseCommand, CommandError

from pipelines.capacity import as_json, lanes_summary, read_capacity


class Command(BaseCommand):
    help = (
        "Show what the Celery workers can take: per worker and per lane, slots (pool size), busy (tasks running) "
        "and free. Workers publish this every CHATSITE_CAPACITY_SECONDS; one silent for three times that is gone."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print JSON: {workers: [...], lanes: {...}}")

    def handle(self, *args, **options):
        try:
            workers = read_capacity()
        except redis.RedisError as exc:
            raise CommandError(f"Redis does not answer ({type(exc).__name__}): no capacity to read.") from exc
        if options["json"]:
            self.stdout.write(as_json(workers))
            return
        if not workers:
            self.stdout.write("No worker has published its capacity (none running, or none reaches Redis).")
            return
        header = f"{'lane':<20} {'worker':<36} {'pool':<8} {'slots':>6} {'busy':>6} {'free':>6} {'age s':>6}"
        self.stdout.write(header)
        for w in workers:
            self.stdout.write(
                f"{w['lane']:<20} {w['hostname']:<36} {w['pool']:<8} {w['slots']:>6} {w['busy']:>6} "
                f"{w['free']:>6} {w['age_seconds']:>6}"
            )
        self.stdout.write("")
        for lane, total in lanes_summary(workers).items():
            self.stdout.write(
                f"lane {lane}: {total['workers']} worker(s), {total['slots']} slots, {total['busy']} busy, "
                f"{total['free']} free"
            )
