"""The workflows API: thin views that parse, check access, call one action, answer."""

from rest_framework import generics

from pipelines import actions
from pipelines.access import access_workflow, visible_workflows
from pipelines.models import Workflow
from pipelines.serializers import WorkflowSerializer


class WorkflowListView(generics.ListCreateAPIView):
    """`GET /api/workflows` (own and shared, by name) and `POST /api/workflows` (a private one)."""

    serializer_class = WorkflowSerializer

    def get_queryset(self):
        return visible_workflows(self.request.user).order_by("name", "id")

    def perform_create(self, serializer: WorkflowSerializer) -> None:
        serializer.instance = actions.do_create_workflow(self.request.user, **serializer.validated_data)


class WorkflowDetailView(generics.RetrieveUpdateDestroyAPIView):
    """`GET, PATCH, DELETE /api/workflows/<id>`: read own or shared; change own (shared: staff only)."""

    serializer_class = WorkflowSerializer
    http_method_names = ["get", "patch", "delete", "options"]

    def get_object(self) -> Workflow:
        return access_workflow(
            self.request.user, self.kwargs["workflow_id"], for_write=self.request.method in ("PATCH", "DELETE")
        )

    def perform_update(self, serializer: WorkflowSerializer) -> None:
        actions.do_update_workflow(serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance: Workflow) -> None:
        actions.do_delete_workflow(instance)
