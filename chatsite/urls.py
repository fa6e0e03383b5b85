"""Top-level routes: the browser pages, the JSON API under /api/, the admin console under /admin/."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from chats import share_views, views
from chatsite import health
from knowledge import views as knowledge_views
from protocols import urls as protocol_urls

urlpatterns = [
    # Liveness and readiness for load balancers (issue 17): no authentication, no session, no throttling.
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("", views.chat_page, name="chat-home"),
    path("c/<str:chat_id>", views.chat_page, name="chat-page"),
    path(
        "login",
        auth_views.LoginView.as_view(
            template_name="chats/login.html",
            redirect_authenticated_user=True,
            extra_context={"allow_signup": settings.CHATSITE_ALLOW_SIGNUP},
        ),
        name="login",
    ),
    path("logout", auth_views.LogoutView.as_view(), name="logout"),
    path("signup", views.signup, name="signup"),
    path("keys", views.api_keys_page, name="api-keys-page"),
    path("documents", knowledge_views.documents_page, name="documents-page"),
    path("documents/<str:document_id>", knowledge_views.document_page, name="document-page"),
    path("s/<str:token>", share_views.share_page, name="share-page"),  # share links (issue 18)
    path("admin/", admin.site.urls),
    path("api/", include("chats.urls")),
    path("api/", include("pipelines.urls")),
    path("v1/", include(protocol_urls.v1_urlpatterns)),
    path("api/v1/", include(protocol_urls.api_urlpatterns)),
]

handler404 = "chats.api_errors.json_not_found"
handler500 = "chats.api_errors.json_server_error"
