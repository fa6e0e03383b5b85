"""Which models, workflows and connectors a user may use."""

import uuid

from django.db.models import Q, QuerySet
from rest_framework.exceptions import NotFound, PermissionDenied

from chats.models import User
from pipelines.models import Connector, ModelConfig, Workflow

DEMO_DATA_GROUP = "demo-data"
"""The group the seeded demo connector is granted to (migration 0006); `ensure_demo_user` adds the demo user."""


def usable_models() -> QuerySet[ModelConfig]:
    """The models every user may pick (active rows of `ModelConfig`)."""
    return ModelConfig.objects.filter(is_active=True)


def usable_connectors(user: User | None) -> QuerySet[Connector]:
    """The active connectors `user` may use: those granted to them or to one of their groups.

    Nothing is usable by everyone, and staff and superusers get only their grants too (grant them in the
    admin like anyone else). An anonymous or inactive user, or None, may use none.
    """
    if user is None or not user.is_authenticated or not user.is_active:
        return Connector.objects.none()
    granted = Q(users=user) | Q(groups__in=user.groups.all())
    return Connector.objects.filter(granted, is_active=True).distinct()


def workflow_connectors(owner: User | None) -> QuerySet[Connector]:
    """The connectors a workflow of `owner` may name in its `sql` steps, on save and at every run.

    A user's workflow: the connectors granted to its owner (usable_connectors). A shared workflow (owner
    None) is written by staff and runs its fixed queries for everyone: any active connector.
    """
    if owner is None:
        return Connector.objects.filter(is_active=True)
    return usable_connectors(owner)


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
