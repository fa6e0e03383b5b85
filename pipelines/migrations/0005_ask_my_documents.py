"""The shared "Ask my documents" workflow: retrieve passages from every collection the user may search, then
answer from them with numbered citations ([1], [2])."""

from django.db import migrations

STEPS = [
    {
        "type": "system_prompt",
        "text": (
            "You answer {user_name}'s questions from their documents. Use only the numbered sources given with "
            "the question, cite them like [1], and say so when they do not hold the answer."
        ),
    },
    {
        "type": "retrieve",
        "sources": [],
        # all-MiniLM-L6-v2 gives related passages similarities of about 0.3-0.7; seed 002's default of 0.7
        # would drop most answers.
        "limit": 5,
        "similarity_threshold": 0.25,
        "retrieval_strategy": "merge",
        "max_total_results": 5,
    },
    {"type": "generate", "max_tokens": 300, "temperature": 0.2, "max_tool_rounds": 3},
]


def add(apps, schema_editor):
    apps.get_model("pipelines", "Workflow").objects.get_or_create(
        owner=None,
        name="Ask my documents",
        defaults={"description": "Answers from your collections, with citations.", "steps": STEPS},
    )


def remove(apps, schema_editor):
    apps.get_model("pipelines", "Workflow").objects.filter(owner=None, name="Ask my documents").delete()


class Migration(migrations.Migration):
    dependencies = [("pipelines", "0004_sql_analyst")]

    operations = [migrations.RunPython(add, remove)]
