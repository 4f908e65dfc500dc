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

from channels.routing import URLRouter
from channels.sessions import SessionMiddlewareStack
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.urls import re_path, reverse

from direct_messages.auth import OriginCheckMiddleware, WebSocketAuthMiddleware
from direct_messages.consumers import DirectMessageConsumer, InboxConsumer


def websocket_urlpatterns(prefix: str) -> list[Any]:
    """The consumers' routes under ``prefix`` (``""`` or ``"chat/"``)."""
    root = re.escape(prefix)
    return [
        re_path(rf"^{root}ws/dm/(?P<account>[^/]{{1,64}})/$", DirectMessageConsumer.as_asgi()),
        re_path(rf"^{root}ws/inbox/$", InboxConsumer.as_asgi()),
    ]


@functools.cache
def _router() -> Any:
    # The prefix is known only once the host's URLconf is loaded: at the first handshake.
    prefix = reverse("direct_messages:home").lstrip("/")
    return SessionMiddlewareStack(WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns(prefix))))


@receiver(setting_changed)
def _forget_router(*, setting: str, **kwargs: Any) -> None:
    if setting == "ROOT_URLCONF":
        _router.cache_clear()


async def _routed(scope: dict[str, Any], receive: Any, send: Any) -> Any:
    return await _router()(scope, receive, send)


websocket_application = OriginCheckMiddleware(_routed)
