"""The operators' console for models and workflows."""

from django import forms
from django.contrib import admin
from django.db import models
from rest_framework.exceptions import ValidationError as ApiValidationError

from pipelines.models import Connector, ModelConfig, Workflow
from pipelines.steps import validate_steps


@admin.register(ModelConfig)
class ModelConfigAdmin(admin.ModelAdmin):
    list_display = ["model_id", "display_name", "provider", "context_window", "default_max_tokens", "is_active"]
    list_filter = ["provider", "is_active"]
    search_fields = ["model_id", "display_name", "provider_model"]
    list_editable = ["is_active"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


class WorkflowForm(forms.ModelForm):
    """Checks the steps as the API does (pipelines.steps.validate_steps)."""

    class Meta:
        model = Workflow
        fields = [
            "owner", "name", "description", "system_prompt", "steps", "model", "temperature", "max_tokens", "is_active",
        ]  # fmt: skip

    def clean_steps(self) -> list[dict]:
        try:
            # `owner` is cleaned before `steps` (field order): retrieve steps may name only its collections.
            return validate_steps(self.cleaned_data.get("steps") or [], owner=self.cleaned_data.get("owner"))
        except ApiValidationError as exc:
            raise forms.ValidationError([str(message) for message in exc.detail]) from exc


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    form = WorkflowForm
    list_display = ["name", "owner", "model", "is_active", "updated_at"]
    list_filter = ["is_active", ("owner", admin.EmptyFieldListFilter)]
    search_fields = ["name", "description", "owner__username"]
    list_select_related = ["owner", "model"]
    raw_id_fields = ["owner"]


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):
    """Staff create connectors and grant them to users and groups (nothing is granted to everyone)."""

    list_display = ["name", "url_env", "statement_timeout_ms", "max_rows", "is_active"]
    list_filter = ["is_active", "groups"]
    search_fields = ["name", "description", "url_env"]
    filter_horizontal = ["users", "groups"]
