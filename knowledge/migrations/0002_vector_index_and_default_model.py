"""An HNSW index for the default embedding model's vectors (PostgreSQL), and that model's row.

The `embedding` column has no fixed dimension (one table serves every embedding model), so the index is on
the column cast to 384 dimensions, for chunks of that dimension only; knowledge.vectors queries with the
same cast so that the planner can use it.
"""

from django.db import migrations

INDEX = "knowledge_chunk_embedding_384_hnsw"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON knowledge_chunk "
            "USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE dimensions = 384"
        )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


def add_default_model(apps, schema_editor):
    EmbeddingModel = apps.get_model("knowledge", "EmbeddingModel")
    EmbeddingModel.objects.get_or_create(
        name="all-minilm-l6-v2",
        defaults={
            "display_name": "all-MiniLM-L6-v2 (local)",
            "provider": "local",
            "provider_model": "",
            "dimensions": 384,
            "max_input_tokens": 256,
        },
    )


def remove_default_model(apps, schema_editor):
    apps.get_model("knowledge", "EmbeddingModel").objects.filter(name="all-minilm-l6-v2", collections=None).delete()


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0001_initial")]

    operations = [
        migrations.RunPython(create_index, drop_index),
        migrations.RunPython(add_default_model, remove_default_model),
    ]
