"""`manage.py chatsite_mode`: say which mode chatsite will run in and why; exit 0 for full, 3 for embedded.

`make run` uses it to start either daphne + Celery worker + beat (full) or daphne alone (embedded).
"""

import sys

from django.conf import settings
from django.core.management.base import BaseCommand

EMBEDDED_EXIT_CODE = 3


class Command(BaseCommand):
    help = "Print the run mode (full or embedded) and why; exit 0 for full, 3 for embedded."

    def handle(self, *args, **options) -> None:
        if settings.CHATSITE_EMBEDDED:
            self.stdout.write(
                f"chatsite: embedded mode ({settings.CHATSITE_MODE_REASON}): one process, events in memory, "
                "replies generated on a thread pool. Start Redis for the full mode (Celery workers)."
            )
            sys.exit(EMBEDDED_EXIT_CODE)
        self.stdout.write(
            f"chatsite: full mode ({settings.CHATSITE_MODE_REASON}): daphne, a Celery worker and Celery beat."
        )
