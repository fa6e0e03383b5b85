"""Workflows named by slug, as the protocols name them (OpenAI's `model: workflow/<slug>`, seed 003's pipelines)."""

from __future__ import annotations

from django.utils.text import slugify

from chats.models import User
from pipelines.access import usable_models, usable_workflows
from pipelines.models import ModelConfig, Workflow

DEFAULT_MODEL_ID = "smollm2-135m"
"""The embedded model (pipelines migration 0002): a workflow that names no model of its own uses it."""


def workflow_slug(workflow: Workflow) -> str:
    """The slug of a workflow's name (its id when the name has no letters or digits)."""
    return slugify(workflow.name) or str(workflow.id)


def find_workflow(user: User, slug: str) -> Workflow | None:
    """The usable workflow of `user` whose slug is `slug`: their own before shared ones, then the oldest."""
    candidates = [w for w in usable_workflows(user).select_related("model") if workflow_slug(w) == slug]
    candidates.sort(key=lambda w: (w.owner_id is None, w.created_at))
    return candidates[0] if slug and candidates else None


def workflow_model(workflow: Workflow) -> ModelConfig | None:
    """The model a workflow's replies use when the request names none: the workflow's own (if active), else the
    embedded default, else the first usable model; None when no model is usable."""
    if workflow.model is not None and workflow.model.is_active:
        return workflow.model
    return usable_models().filter(model_id=DEFAULT_MODEL_ID).first() or usable_models().first()
