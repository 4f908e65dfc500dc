"""The framework ceiling: the floor's relay (:mod:`bench.floor`) as a Channels consumer.

The same protocol subset, the same one raw ``INSERT`` per message into the same table,
but on the product's stack: the server the configuration uses (daphne or uvicorn),
Django's database connection reached through ``database_sync_to_async``, and the
configured channel layer's ``group_send`` for the fan-out. No validation, no seq, no
room or inbox, no rate limit, no presence: whatever the product costs beyond this
is the product's own; what this costs beyond the floor is the framework's.

Run: ``uvicorn bench.ceiling:application`` (or daphne) with the product's environment
(``DATABASE_URL``, ``REDIS_URL``, ``CHANNEL_LAYER``, ``SECRET_KEY``).
"""

from __future__ import annotations

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
from django.db import connection  # noqa: E402
from django.urls import path  # noqa: E402

from bench.floor import TABLE, USERS_TABLE, isotime, message_new  # noqa: E402


def in_thread(func: Any) -> Any:
    """In the loop's thread pool (Channels' default is one thread), with Channels'
    connection handling; the product keeps a connection per database thread."""
    return DatabaseSyncToAsync(func, thread_sensitive=False)


@in_thread
def user(column: str, value: Any) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, account FROM {USERS_TABLE} WHERE {column} = %s", [value])
        return cursor.fetchone()


@in_thread
def insert(room: str, sender_id: int, client_id: str, text: str, at: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (room, sender_id, client_id, message, created_at)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            [room, sender_id, client_id, text, at],
        )
        return int(cursor.fetchone()[0])


def create_table() -> None:
    """The floor's table, as the floor makes it (whichever of the two runs first)."""
    if connection.vendor == "postgresql":
        ddl = (
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id BIGSERIAL PRIMARY KEY,"
            " room VARCHAR(64) NOT NULL, sender_id BIGINT NOT NULL, client_id UUID NOT NULL,"
            " message TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL)"
        )
    else:
        ddl = (
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " room TEXT NOT NULL, sender_id INTEGER NOT NULL, client_id TEXT NOT NULL,"
            " message TEXT NOT NULL, created_at TEXT NOT NULL)"
        )
    with connection.cursor() as cursor:
        cursor.execute(ddl)
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
        joined = {
            "type": "room.joined",
            "room": self.room,
            "with": {"id": other[0], "account": other[1], "name": "", "avatar_url": None},
            "last_seq": 0,
            "read": {me[1]: 0, other[1]: 0},
        }
        await self.send(text_data=orjson.dumps(joined).decode())

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
