"""Connectors are granted to users and groups (issue 13): no connector is usable by everyone any more.

The seeded demo connector now reads through its own least-privilege role (CHATSITE_DEMO_CONNECTOR_URL, which
`manage.py seed_demo_database` creates) instead of the admin URL, and is granted to the group "demo-data"
only; `manage.py ensure_demo_user` puts the demo user it creates in that group. The shared "SQL analyst"
workflow keeps working for everyone: its staff-written sql step may name any active connector.
"""

from django.conf import settings
from django.db import migrations, models

DEMO_GROUP = "demo-data"


def grant_demo(apps, schema_editor):
    Connector = apps.get_model("pipelines", "Connector")
    Group = apps.get_model("auth", "Group")
    demo = Connector.objects.filter(name="demo").first()
    if demo is None:
        return
    if demo.url_env == "CHATSITE_DEMO_DATABASE_URL":
        # That variable holds the admin URL that creates the demo database: never a connector's.
        demo.url_env = "CHATSITE_DEMO_CONNECTOR_URL"
        demo.save(update_fields=["url_env"])
    group, _ = Group.objects.get_or_create(name=DEMO_GROUP)
    demo.groups.add(group)


def ungrant_demo(apps, schema_editor):
    Connector = apps.get_model("pipelines", "Connector")
    Connector.objects.filter(name="demo", url_env="CHATSITE_DEMO_CONNECTOR_URL").update(
        url_env="CHATSITE_DEMO_DATABASE_URL"
    )


class Migration(migrations.Migration):

    dependencies = [
        ('auth', '0012_alter_user_first_name_max_length'),
        ('pipelines', '0005_ask_my_documents'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='connector',
            name='groups',
            field=models.ManyToManyField(blank=True, help_text='Groups whose members may use it, as the users above.', related_name='granted_connectors', to='auth.group'),
        ),
        migrations.AddField(
            model_name='connector',
            name='users',
            field=models.ManyToManyField(blank=True, help_text="Users who may name it in their workflows' sql steps and query it with the sql_query tool.", related_name='granted_connectors', to=settings.AUTH_USER_MODEL),
        ),
        migrations.RunPython(grant_demo, ungrant_demo),
    ]
