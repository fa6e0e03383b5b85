"""The shared "Ask the database" workflow: seed 001's text-to-SQL pipeline over the demo connector, for the UI.

Its steps run with the asker's grants (pipelines.text_to_sql): people without a grant on the demo connector
get `connector_unavailable`.
"""

from django.db import migrations

NAME = "Ask the database"
STEPS = [
    {"type": "classify", "connector": "demo", "language": "English"},
    {"type": "retrieve_schema", "max_tables": 8},
    {"type": "generate_sql", "max_tokens": 256, "repair_rounds": 1, "history_turns": 3},
    {"type": "execute_sql", "preview_rows": 20},
    {"type": "summarize", "sample_size": 20, "language": "English", "max_tokens": 256},
]


def add(apps, schema_editor):
    apps.get_model("pipelines", "Workflow").objects.get_or_create(
        owner=None,
        name=NAME,
        defaults={
            "description": "Ask the demo sales database in words: the question becomes SQL, runs, and is summarised.",
            "steps": STEPS,
        },
    )


def remove(apps, schema_editor):
    apps.get_model("pipelines", "Workflow").objects.filter(owner=None, name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("pipelines", "0006_connector_grants")]

    operations = [migrations.RunPython(add, remove)]
