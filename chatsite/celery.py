"""The Celery application. Workers run `celery -A chatsite worker`; tasks live in `pipelines/tasks.py`."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

app = Celery("chatsite")
# Every Celery setting comes from Django's settings, under the CELERY_ prefix.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect
@signals.task_postrun.connect
def release_database_connections(**kwargs) -> None:
    """Give a task's database connections back to the pool (or close them) before and after it runs.

    Celery's own per-task close is turned off by CELERY_DB_REUSE_MAX (see settings), because it also closes
    the pool; this keeps the pool, so a task starts on a connection that is already open. A connection that
    had errors and no longer works (killed server-side, say) is closed, not given back; one killed while it
    sat in the pool is found by the pool's check when it is next handed out (CONN_HEALTH_CHECKS, settings).
    """
    from django.db import close_old_connections

    close_old_connections()


# Workers publish their lanes' slots and busy slots (`manage.py capacity`); connects its signals.
from pipelines import capacity  # noqa: E402,F401
