"""Every write to workflows (models are managed in the admin)."""

from chats.models import User
from pipelines.models import Workflow


def do_create_workflow(owner: User, **fields: object) -> Workflow:
    """Create a private workflow for `owner` from serializer-validated fields."""
    return Workflow.objects.create(owner=owner, **fields)


def do_update_workflow(workflow: Workflow, **changes: object) -> Workflow:
    """Change the given fields of a workflow."""
    for name, value in changes.items():
        setattr(workflow, name, value)
    workflow.save(update_fields=[*changes.keys(), "updated_at"])
    return workflow


def do_delete_workflow(workflow: Workflow) -> None:
    """Delete a workflow; chats and messages that used it keep working without it."""
    workflow.delete()
