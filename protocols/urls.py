"""Routes of the OpenAI-compatible API under /v1/."""

from django.urls import path

from protocols import openai_api

urlpatterns = [
    path("models", openai_api.ModelsView.as_view(), name="openai-models"),
    path("models/<path:model>", openai_api.ModelDetailView.as_view(), name="openai-model"),
    path("chat/completions", openai_api.ChatCompletionsView.as_view(), name="openai-chat-completions"),
]
