"""The workflows API, under /api/ (DESIGN.md section 3)."""

from django.urls import path

from pipelines import api

urlpatterns = [
    path("workflows", api.WorkflowListView.as_view(), name="api-workflows"),
    path("workflows/<str:workflow_id>", api.WorkflowDetailView.as_view(), name="api-workflow"),
]
