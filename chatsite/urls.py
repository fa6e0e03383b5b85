"""Top-level routes: the JSON API under /api/, the admin console under /admin/."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("chats.urls")),
]

handler404 = "chats.api_errors.json_not_found"
handler500 = "chats.api_errors.json_server_error"
