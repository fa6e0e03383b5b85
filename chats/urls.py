"""Routes of the JSON API under /api/."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from chats import api, branches_api, library_api, share_api
from knowledge import api as knowledge_api

urlpatterns = [
    path("auth/csrf", api.CsrfView.as_view(), name="api-csrf"),
    path("auth/login", api.LoginView.as_view(), name="api-login"),
    path("auth/logout", api.LogoutView.as_view(), name="api-logout"),
    path("auth/me", api.MeView.as_view(), name="api-me"),
    path("models", api.ModelListView.as_view(), name="api-models"),
    path("keys", api.ApiKeyListView.as_view(), name="api-keys"),
    path("keys/<str:key_id>", api.ApiKeyDetailView.as_view(), name="api-key"),
    path("chats", api.ChatListView.as_view(), name="api-chats"),
    # Search, export and import (issue 18); before chats/<chat_id>, which would take "export" for an id.
    path("search", library_api.SearchView.as_view(), name="api-search"),
    path("chats/export", library_api.AllChatsExportView.as_view(), name="api-chats-export"),
    path("chats/import", library_api.ChatImportView.as_view(), name="api-chats-import"),
    path("chats/<str:chat_id>/export", library_api.ChatExportView.as_view(), name="api-chat-export"),
    path("chats/<str:chat_id>", api.ChatDetailView.as_view(), name="api-chat"),
    path("chats/<str:chat_id>/messages", api.MessageListView.as_view(), name="api-messages"),
    path("chats/<str:chat_id>/messages/stream", api.MessageStreamView.as_view(), name="api-message-stream"),
    path(
        "chats/<str:chat_id>/messages/<str:message_id>/stream",
        api.MessageStreamResumeView.as_view(),
        name="api-message-resume",
    ),
    path(
        "chats/<str:chat_id>/messages/<str:message_id>/cancel", api.CancelReplyView.as_view(), name="api-message-cancel"
    ),
    path(
        "chats/<str:chat_id>/messages/<str:message_id>/regenerate",
        api.RegenerateView.as_view(),
        name="api-message-regenerate",
    ),
    # Share links (issue 18).
    path("chats/<str:chat_id>/shares", share_api.ChatShareListView.as_view(), name="api-chat-shares"),
    path("chats/<str:chat_id>/shares/<str:share_id>", share_api.ChatShareDetailView.as_view(), name="api-chat-share"),
    path("shares/<str:token>", share_api.SharedChatView.as_view(), name="api-share"),
    path(
        "shares/<str:token>/messages/<str:message_ref>/stream",
        share_api.SharedReplyStreamView.as_view(),
        name="api-share-stream",
    ),
    # Branches (issue 18): edit a sent question.
    path(
        "chats/<str:chat_id>/messages/<str:message_id>/edit",
        branches_api.EditMessageView.as_view(),
        name="api-message-edit",
    ),
    # Models side by side (issue 18): one question, 2 to 4 sibling replies.
    path("chats/<str:chat_id>/messages/compare", branches_api.CompareView.as_view(), name="api-messages-compare"),
    path("embedding-models", knowledge_api.EmbeddingModelListView.as_view(), name="api-embedding-models"),
    path("collections", knowledge_api.CollectionListView.as_view(), name="api-collections"),
    path("collections/<str:collection_id>", knowledge_api.CollectionDetailView.as_view(), name="api-collection"),
    path(
        "collections/<str:collection_id>/documents",
        knowledge_api.DocumentListView.as_view(),
        name="api-collection-documents",
    ),
    path("documents", knowledge_api.AllDocumentsView.as_view(), name="api-documents"),
    path("documents/<str:document_id>", knowledge_api.DocumentDetailView.as_view(), name="api-document"),
    path(
        "documents/<str:document_id>/chunks", knowledge_api.DocumentChunkListView.as_view(), name="api-document-chunks"
    ),
    path("documents/<str:document_id>/file", knowledge_api.DocumentFileView.as_view(), name="api-document-file"),
    path("schema", SpectacularAPIView.as_view(), name="api-schema"),
    # The browsable page, with its assets from drf-spectacular-sidecar (no CDN) and its script served apart
    # from the page (the split view), as the Content Security Policy allows no inline script.
    path("schema/docs", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
]
