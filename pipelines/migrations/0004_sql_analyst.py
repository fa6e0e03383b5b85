"""A demo connector and the shared "SQL analyst" workflow: rewrite the question, query the demo sales
database (`manage.py seed_demo_database` creates it), and summarise the result."""

from django.db import migrations

STEPS = [
    {
        "type": "system_prompt",
        "text": (
            "You are a data analyst. Answer {user_name}'s question using only the query result given with it, "
            "in two or three sentences, and name the numbers you use. Today is {date}."
        ),
    },
    {"type": "rewrite_query", "max_tokens": 48},
    {
        "type": "sql",
        "connector": "demo",
        "query": (
            "SELECT product, region, SUM(amount) AS revenue, COUNT(*) AS sales "
            "FROM sales GROUP BY product, region ORDER BY revenue DESC"
        ),
    },
    {"type": "generate", "max_tokens": 200, "max_tool_rounds": 3},
]


def add(apps, schema_editor):
    Connector = apps.get_model("pipelines", "Connector")
    Workflow = apps.get_model("pipelines", "Workflow")
    Connector.objects.get_or_create(
        name="demo",
        defaults={
            "description": "Demo sales database: table sales(id, product, region, amount, sold_on).",
            "url_env": "CHATSITE_DEMO_DATABASE_URL",
        },
    )
    Workflow.objects.get_or_create(
        owner=None,
        name="SQL analyst",
        defaults={"description": "Answers questions about the demo sales database.", "steps": STEPS},
    )


def remove(apps, schema_editor):
    apps.get_model("pipelines", "Workflow").objects.filter(owner=None, name="SQL analyst").delete()
    apps.get_model("pipelines", "Connector").objects.filter(name="demo").delete()


class Migration(migrations.Migration):
    dependencies = [("pipelines", "0003_steps_and_connectors")]

    operations = [migrations.RunPython(add, remove)]
