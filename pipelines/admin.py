"""The operators' console for models and workflows."""

from django.contrib import admin
from django.db import models

from pipelines.models import ModelConfig, Workflow


@admin.register(ModelConfig)
class ModelConfigAdmin(admin.ModelAdmin):
    list_display = ["model_id", "display_name", "provider", "context_window", "default_max_tokens", "is_active"]
    list_filter = ["provider", "is_active"]
    search_fields = ["model_id", "display_name", "provider_model"]
    list_editable = ["is_active"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "model", "is_active", "updated_at"]
    list_filter = ["is_active", ("owner", admin.EmptyFieldListFilter)]
    search_fields = ["name", "description", "owner__username"]
    list_select_related = ["owner", "model"]
    raw_id_fields = ["owner"]
