"""ASGI entry point: HTTP to Django, WebSockets to the app (docs/install.md)."""

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "instamg.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from direct_messages.asgi import websocket_application  # noqa: E402


def daphne_leaves_bodies_to_django() -> None:
    """Stop daphne's Twisted from parsing every multipart POST body itself.

    Twisted decodes it into ``request.args``, which daphne never reads (a second copy
    of every upload in memory), and answers a body it cannot parse with a bare
    ``400`` and no JSON, before the application sees the request. Django parses the
    body with the API's limits and errors; that is the only parse we want.
    """
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # served by another ASGI server
        return
    if getattr(WebRequest, "bodies_left_to_django", False):
        return
    init = WebRequest.__init__

    def __init__(self: WebRequest, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parsePOSTFormSubmission", False)
        init(self, *args, **kwargs)

    WebRequest.__init__ = __init__
    WebRequest.bodies_left_to_django = True


daphne_leaves_bodies_to_django()

application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": websocket_application})
