"""ASGI entry point: HTTP to Django, WebSockets through origin and auth checks."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "instamg.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import SessionMiddlewareStack  # noqa: E402

from decorators.auth import OriginCheckMiddleware, WebSocketAuthMiddleware  # noqa: E402
from instamg.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OriginCheckMiddleware(
            SessionMiddlewareStack(WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns)))
        ),
    }
)
