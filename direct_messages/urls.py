"""Everything the app serves over HTTP, under whatever prefix the host includes it at:

``path("chat/", include("direct_messages.urls"))`` gives ``/chat/`` (the inbox),
``/chat/direct/...`` (the web client's pages and its service worker, whose scope is
``/chat/direct/``) and ``/chat/api/...`` (PROTOCOL.md's HTTP API, with its OpenAPI
document at ``/chat/api/openapi.json``). The WebSockets (``/chat/ws/...``) are
:data:`direct_messages.asgi.websocket_application`'s, at the same prefix.
"""

from django.urls import path, re_path
from django.utils.module_loading import import_string

from direct_messages import views
from direct_messages.api import router as direct_messages_router
from direct_messages.api_attachments import router as attachments_router
from direct_messages.api_me import me_router
from direct_messages.api_push import router as push_router
from direct_messages.api_users import auth_router, users_router
from direct_messages.conf import dm_setting
from direct_messages.envelope import api_envelope, api_not_found
from direct_messages.http import build_api

app_name = "direct_messages"

api = build_api(title="Direct messages", version="1.0.0", urls_namespace=f"{app_name}:api")
api.add_router("/auth", auth_router)
api.add_router("/users", users_router)
api.add_router("/", direct_messages_router)
api.add_router("/attachments", attachments_router)
api.add_router("/me", me_router)
api.add_router("/", push_router)
for api_prefix, router_path in dm_setting("API_ROUTERS").items():
    api.add_router(api_prefix, import_string(router_path))

api_patterns, api_app_name, api_namespace = api.urls
for pattern in api_patterns:
    if getattr(pattern, "name", None) == "api-root":
        # django-ninja's placeholder for the API's own path, which names no endpoint.
        pattern.callback = api_not_found  # type: ignore[union-attr]
    else:
        pattern.callback = api_envelope(pattern.callback)  # type: ignore[union-attr, arg-type]

urlpatterns = [
    path("", views.home, name="home"),
    path("direct/inbox/", views.inbox, name="inbox"),
    path("direct/t/<str:account>/", views.thread, name="thread"),
    path("direct/sw.js", views.service_worker, name="service_worker"),
    path("logout/", views.logout, name="logout"),
    path("api/", (api_patterns, api_app_name, api_namespace)),
    # Every other path under the API, and the bare ``api`` (which Django would otherwise
    # redirect to ``api/``, or refuse with an HTML 500 for a POST under DEBUG).
    re_path(r"^api(?:/(?P<rest>.*))?$", api_not_found),
]
