"""Which models and workflows a user may use."""

from django.db.models import Q, QuerySet

from chats.models import User
from pipelines.models import ModelConfig, Workflow


def usable_models() -> QuerySet[ModelConfig]:
    """The models every user may pick (active rows of `ModelConfig`)."""
    return ModelConfig.objects.filter(is_active=True)


def usable_workflows(user: User) -> QuerySet[Workflow]:
    """The active workflows `user` may run: their own and the shared ones (owner null)."""
    return Workflow.objects.filter(Q(owner=user) | Q(owner__isnull=True), is_active=True)
