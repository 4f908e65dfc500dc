"""ASGI entry point: HTTP to Django, WebSockets to the app (docs/install.md)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "instamg.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from direct_messages.asgi import websocket_application  # noqa: E402
from instamg.daphne_bodies import leave_bodies_to_django  # noqa: E402

leave_bodies_to_django()  # before daphne builds its first request (daphne_bodies.py)

application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": websocket_application})
