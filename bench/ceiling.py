"""The framework ceiling: the floor's relay (:mod:`bench.floor`) as a Channels consumer
on the product's stack (docs/benchmarks.md, "The framework ceiling").

Run: ``uvicorn bench.ceiling:application`` (or daphne) with the product's environment
(``DATABASE_URL``, ``REDIS_URL``, ``CHANNEL_LAYER``, ``SECRET_KEY``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "instamg.settings")
django.setup()

import jwt  # noqa: E402
import orjson  # noqa: E402
from channels.db import DatabaseSyncToAsync  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.db import IntegrityError, ProgrammingError, connection  # noqa: E402
from django.urls import path  # noqa: E402

from bench.floor import (  # noqa: E402
    CREATE_TABLE,
    INSERT,
    SELECT_USER,
    isotime,
    message_new,
    room_joined,
)


def in_thread(func: Any) -> Any:
    """In the loop's thread pool (Channels' default is one thread), with Channels'
    connection handling; the product keeps a connection per database thread."""
    return DatabaseSyncToAsync(func, thread_sensitive=False)


@in_thread
def user(column: str, value: Any) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(SELECT_USER.format(column=column), [value])
        return cursor.fetchone()


@in_thread
def insert(room: str, sender_id: int, client_id: str, text: str, at: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(INSERT + " RETURNING id", [room, sender_id, client_id, text, at])
        return int(cursor.fetchone()[0])


def create_table() -> None:
    """The floor's table, as the floor makes it (whichever of the two runs first)."""
    # Two processes creating it at once: PostgreSQL says so with either error.
    with contextlib.suppress(IntegrityError, ProgrammingError), connection.cursor() as cursor:
        cursor.execute(CREATE_TABLE[connection.vendor])
    connection.close()


class RelayConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        headers = dict(self.scope.get("headers", []))
        scheme, _, token = headers.get(b"authorization", b"").decode().partition(" ")
        try:
            claims = jwt.decode(
                token, settings.SECRET_KEY, algorithms=["HS256"], audience="direct_messages"
            )
            me = await user("id", int(claims["sub"]))
        except (jwt.InvalidTokenError, KeyError, ValueError):
            me = None
        other = await user("account", self.scope["url_route"]["kwargs"]["account"].lower())
        await self.accept()
        if scheme.lower() != "bearer" or me is None or other is None or me[0] == other[0]:
            await self.close(4404)
            return
        self.me = me
        low, high = sorted((me[0], other[0]))
        self.room = f"dm.{low}.{high}"
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.send(text_data=room_joined(self.room, me, other))

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "room"):
            await self.channel_layer.group_discard(self.room, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame = orjson.loads(text_data or "null")
        if not isinstance(frame, dict) or frame.get("type") == "ping":
            await self.send(text_data='{"type":"pong"}')
            return
        at = isotime(dt.datetime.now(dt.UTC))
        text = str(frame.get("message", ""))
        pk = await insert(self.room, self.me[0], str(frame["client_id"]), text, at)
        ack = {"type": "message.ack", "client_id": frame["client_id"], "id": pk, "seq": pk}
        await self.send(text_data=orjson.dumps({**ack, "created_at": at}).decode())
        event = message_new(pk, self.room, self.me[1], text, frame["client_id"], at)
        await self.channel_layer.group_send(self.room, {"type": "relay", "text": event})

    async def relay(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


create_table()
application = ProtocolTypeRouter(
    {
        "http": get_asgi_application(),
        "websocket": URLRouter([path("ws/dm/<str:account>/", RelayConsumer.as_asgi())]),
    }
)
