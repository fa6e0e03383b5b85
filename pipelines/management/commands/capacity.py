"""`manage.py capacity`: each lane's live workers, their slots and busy slots, and each lane's totals."""

from __future__ import annotations

import json
import time

import redis
from django.core.management.base import BaseCommand, CommandError

from chatsite import jobs


def read_capacity() -> dict[str, dict]:
    """`{lane: {"workers": [{worker, slots, busy, free, age_seconds}], "slots", "busy", "free"}}` for every lane,
    from the reports the workers make (`chatsite.jobs.report_capacity`, every CAPACITY_REPORT_SECONDS; one older
    than CAPACITY_TTL_SECONDS is from a worker that is gone). Raises redis.RedisError if Redis does not answer."""
    lanes = {}
    for lane in jobs.LANES:
        workers = []
        for worker, report in sorted(jobs.capacity_reports(lane).items()):
            slots, busy = report["slots"], report["busy"]
            free = None if busy is None else max(0, slots - busy)
            age = round(time.time() - report["at"], 1)
            workers.append({"worker": worker, "slots": slots, "busy": busy, "free": free, "age_seconds": age})
        lanes[lane] = {
            "workers": workers,
            "slots": sum(w["slots"] for w in workers),
            "busy": sum(w["busy"] or 0 for w in workers),
            "free": sum(w["free"] or 0 for w in workers),
        }
    return lanes


class Command(BaseCommand):
    help = (
        "Show what the workers can take: per lane (network, local, ingest) and per worker, slots (pool size), busy "
        "(tasks running) and free, from the reports workers make every few seconds."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print {lane: {workers: [...], slots, busy, free}}")

    def handle(self, *args, **options):
        try:
            lanes = read_capacity()
        except redis.RedisError as exc:
            raise CommandError(f"Redis does not answer ({type(exc).__name__}): no capacity to read.") from exc
        if options["json"]:
            self.stdout.write(json.dumps(lanes, indent=2))
            return
        self.stdout.write(f"{'lane':<10} {'worker':<36} {'slots':>6} {'busy':>6} {'free':>6} {'age s':>6}")
        for lane, total in lanes.items():
            for w in total["workers"]:
                self.stdout.write(
                    f"{lane:<10} {w['worker']:<36} {w['slots']:>6} {w['busy']!s:>6} {w['free']!s:>6} "
                    f"{w['age_seconds']:>6}"
                )
        self.stdout.write("")
        for lane, total in lanes.items():
            count = len(total["workers"])
            self.stdout.write(
                f"lane {lane}: {count} worker(s), {total['slots']} slots, {total['busy']} busy, {total['free']} free"
                if count
                else f"lane {lane}: no worker reports (none running, or none reaches Redis)"
            )
