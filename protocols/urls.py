"""Routes of the protocols: the OpenAI-compatible API under /v1/ (`v1_urlpatterns`) and the seeds' APIs under
/api/v1/ (`api_urlpatterns`)."""

from django.urls import path

from protocols import openai_api, rag_stream, search_sessions, text_to_sql

v1_urlpatterns = [
    path("models", openai_api.ModelsView.as_view(), name="openai-models"),
    path("models/<path:model>", openai_api.ModelDetailView.as_view(), name="openai-model"),
    path("chat/completions", openai_api.ChatCompletionsView.as_view(), name="openai-chat-completions"),
]

api_urlpatterns = [
    path("chat/stream", rag_stream.RagChatStreamView.as_view(), name="seed002-chat-stream"),
    path(
        "workspaces/<str:workspace>/search_sessions",
        search_sessions.SearchSessionsView.as_view(),
        name="seed003-search-sessions",
    ),
    path(
        "workspaces/<str:workspace>/pipelines/<str:pipeline>/chat-stream",
        search_sessions.ChatStreamView.as_view(),
        name="seed003-chat-stream",
    ),
    path("stream/generate_sql", text_to_sql.StreamGenerateSqlView.as_view(), name="seed001-stream-generate-sql"),
    path("stream/ask", text_to_sql.StreamAskView.as_view(), name="seed001-stream-ask"),
    path("stream_explanation", text_to_sql.StreamExplanationView.as_view(), name="seed001-stream-explanation"),
]
