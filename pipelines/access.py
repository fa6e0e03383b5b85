"""Which models and workflows a user may use."""

import uuid

from django.db.models import Q, QuerySet
from rest_framework.exceptions import NotFound, PermissionDenied

from chats.models import User
from pipelines.models import ModelConfig, Workflow


def usable_models() -> QuerySet[ModelConfig]:
    """The models every user may pick (active rows of `ModelConfig`)."""
    return ModelConfig.objects.filter(is_active=True)


def visible_workflows(user: User) -> QuerySet[Workflow]:
    """The workflows `user` may see: their own and the shared ones (owner null), active or not."""
    return Workflow.objects.filter(Q(owner=user) | Q(owner__isnull=True))


def usable_workflows(user: User) -> QuerySet[Workflow]:
    """The active workflows `user` may run: their own and the shared ones (owner null)."""
    return visible_workflows(user).filter(is_active=True)


def access_workflow(user: User, workflow_id: str, *, for_write: bool = False) -> Workflow:
    """Return the workflow `workflow_id` if `user` may read it (own or shared) or, `for_write`, change it
    (own; shared ones only for staff).

    Raises:
        NotFound: 404 when no workflow has that id (or it is not a UUID).
        PermissionDenied: 403 when it is another user's private workflow, or a shared one and the user
            is not staff (for_write).
    """
    try:
        workflow = Workflow.objects.filter(id=uuid.UUID(str(workflow_id))).first()
    except ValueError:
        workflow = None
    if workflow is None:
        raise NotFound(f"Workflow {workflow_id} does not exist.")
    if workflow.owner_id is None:
        if for_write and not user.is_staff:
            raise PermissionDenied("Shared workflows are managed by staff.")
        return workflow
    if workflow.owner_id != user.id:
        raise PermissionDenied("This workflow belongs to another user.")
    return workflow
