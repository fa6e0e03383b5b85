"""`manage.py ensure_demo_user`: on a fresh install, create a superuser to log in with, and say so once.

The demo user joins the group "demo-data", which the seeded demo connector is granted to (pipelines migration
0006): it may query the demo sales database with the sql_query tool. Nobody else may until staff grant it.
"""

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from pipelines.access import DEMO_DATA_GROUP


class Command(BaseCommand):
    help = "Create a demo superuser when there are no users yet, and print its name and password."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="demo")

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        if User.objects.exists():
            return
        password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=options["username"], email="", password=password)
        user.groups.add(Group.objects.get_or_create(name=DEMO_DATA_GROUP)[0])
        self.stdout.write(
            self.style.SUCCESS(
                f"Created the demo user (also an admin at /admin/): username {options['username']!r}, "
                f"password {password!r}. It is shown only this once."
            )
        )
