"""A host that mounts the app under ``chat/``, as docs/install.md shows."""

from django.urls import include, path

urlpatterns = [
    path("accounts/", include("users.urls")),
    path("chat/", include("direct_messages.urls")),
]
