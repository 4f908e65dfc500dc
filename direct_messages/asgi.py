"""The app's WebSockets, ready for the host's ``ProtocolTypeRouter``::

    application = ProtocolTypeRouter(
        {"http": get_asgi_application(), "websocket": websocket_application}
    )

``<prefix>ws/dm/<handle>/`` and ``<prefix>ws/inbox/``, where ``<prefix>`` is wherever
the host included ``direct_messages.urls``. Every handshake passes PROTOCOL.md's Origin
policy, then the host's session and the app's authenticators put the user in the scope.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from django.urls import re_path, reverse


def websocket_urlpatterns(prefix: str) -> list[Any]:
    """The consumers' routes under ``prefix`` (``""`` or ``"chat/"``)."""
    from direct_messages.consumers import DirectMessageConsumer, InboxConsumer

    root = re.escape(prefix)
    return [
        re_path(rf"^{root}ws/dm/(?P<account>[^/]{{1,64}})/$", DirectMessageConsumer.as_asgi()),
        re_path(rf"^{root}ws/inbox/$", InboxConsumer.as_asgi()),
    ]


@functools.lru_cache(maxsize=8)
def _application(prefix: str) -> Any:
    from channels.routing import URLRouter
    from channels.sessions import SessionMiddlewareStack

    from direct_messages.auth import OriginCheckMiddleware, WebSocketAuthMiddleware

    routes = URLRouter(websocket_urlpatterns(prefix))
    return OriginCheckMiddleware(SessionMiddlewareStack(WebSocketAuthMiddleware(routes)))


async def websocket_application(scope: dict[str, Any], receive: Any, send: Any) -> Any:
    """The ASGI application of the app's WebSockets. It imports nothing of Django's
    models until the first handshake, so a host's ``asgi.py`` may import it before
    ``get_asgi_application()``; the prefix is read from the host's URLconf each time
    (a cached ``reverse``)."""
    prefix = reverse("direct_messages:home").lstrip("/")
    return await _application(prefix)(scope, receive, send)
