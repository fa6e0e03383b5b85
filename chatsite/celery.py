"""The Celery application. Workers run `celery -A chatsite worker`; tasks live in `pipelines/tasks.py`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

app = Celery("chatsite")
# Every Celery setting comes from Django's settings, under the CELERY_ prefix.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
