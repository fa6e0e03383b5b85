"""What every step of a reply may raise or need: the user's stop, the time budget, and the model a step names."""

from __future__ import annotations

from django.db import connection

from pipelines.models import ModelConfig
from pipelines.providers.base import GenerationError


class Cancelled(Exception):
    """The user stopped the reply."""


class BudgetExceeded(Exception):
    """The reply used up its time budget (CHATSITE_REPLY_TIME_BUDGET_SECONDS)."""


def active_model(model_id: str) -> ModelConfig:
    """The active model `model_id`.

    Raises:
        GenerationError: `model_unavailable` when it is missing or inactive.
    """
    config = ModelConfig.objects.filter(model_id=model_id, is_active=True).first()
    if config is None:
        raise GenerationError(
            "model_unavailable", f"The model '{model_id}' is no longer available. Pick another model."
        )
    return config


def release_database_connection() -> None:
    """Give this thread's (greenlet's) database connection back to the pool while the reply waits on its model:
    a worker process carrying a thousand replies holds a connection only while one claims, reads its prompt or
    saves, never while it streams. The next query takes one again. Nothing inside a transaction."""
    if not connection.in_atomic_block:
        connection.close()
