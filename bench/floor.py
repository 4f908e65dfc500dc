"""The floor: a bare relay, written only for the benchmark, to measure against
(docs/benchmarks.md, "The floor"): ``websockets``, one raw ``INSERT`` per message, and
a fan-out through Redis publish/subscribe or in process memory.

Run: ``python -m bench.floor --port P --database-url URL --secret-key K --fanout redis``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import signal
import sqlite3
from collections import defaultdict
from typing import Any
from urllib.parse import urlsplit

import jwt
import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Response

logger = logging.getLogger("bench.floor")
USERS_TABLE = "users_user"
TABLE = "bench_floor_message"
# The relay's table and statements (the ceiling's too), with %s placeholders.
CREATE_TABLE = {
    "postgresql": f"CREATE TABLE IF NOT EXISTS {TABLE} (id BIGSERIAL PRIMARY KEY,"
    " room VARCHAR(64) NOT NULL, sender_id BIGINT NOT NULL, client_id UUID NOT NULL,"
    " message TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL)",
    "sqlite": f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " room TEXT NOT NULL, sender_id INTEGER NOT NULL, client_id TEXT NOT NULL,"
    " message TEXT NOT NULL, created_at TEXT NOT NULL)",
}
INSERT = (
    f"INSERT INTO {TABLE} (room, sender_id, client_id, message, created_at)"
    " VALUES (%s, %s, %s, %s, %s)"
)
SELECT_USER = "SELECT id, account FROM " + USERS_TABLE + " WHERE {column} = %s"


def isotime(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def room_joined(room: str, me: Any, other: Any) -> str:
    """The ``room.joined`` frame of the relay (the floor's, and the ceiling's)."""
    peer = {"id": other[0], "account": other[1], "name": "", "avatar_url": None}
    read = {me[1]: 0, other[1]: 0}
    frame = {"type": "room.joined", "room": room, "with": peer, "last_seq": 0, "read": read}
    return orjson.dumps(frame).decode()


def message_new(pk: int, room: str, sender: str, text: str, client_id: str, at: str) -> str:
    """The ``message.new`` frame of the relay (the floor's, and the ceiling's)."""
    message = {
        "id": pk,
        "room": room,
        "seq": pk,
        "sender": sender,
        "message": text,
        "attachments": [],
        "client_id": client_id,
        "reply_to": None,
        "created_at": at,
        "edited_at": None,
        "unsent": False,
        "reactions": [],
    }
    return orjson.dumps({"type": "message.new", "message": message}).decode()


class SqliteStore:
    def __init__(self, url: str) -> None:
        self.db = sqlite3.connect(urlsplit(url).path, isolation_level=None, timeout=20)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(CREATE_TABLE["sqlite"])

    async def start(self) -> None:
        pass

    async def user(self, *, pk: int | None = None, account: str | None = None) -> Any:
        column, value = ("id", pk) if pk is not None else ("account", account)
        sql = SELECT_USER.format(column=column).replace("%s", "?")
        return self.db.execute(sql, (value,)).fetchone()

    async def insert(self, room: str, sender_id: int, client_id: str, text: str, at: str) -> int:
        cur = self.db.execute(INSERT.replace("%s", "?"), (room, sender_id, client_id, text, at))
        return int(cur.lastrowid or 0)


class PostgresStore:
    def __init__(self, url: str) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(
            url, min_size=4, max_size=10, open=False, kwargs={"autocommit": True}
        )

    async def start(self) -> None:
        import psycopg

        await self.pool.open(wait=True)
        async with self.pool.connection() as conn:
            with contextlib.suppress(psycopg.errors.UniqueViolation):  # the other process won
                await conn.execute(CREATE_TABLE["postgresql"])

    async def user(self, *, pk: int | None = None, account: str | None = None) -> Any:
        column, value = ("id", pk) if pk is not None else ("account", account)
        async with self.pool.connection() as conn:
            cur = await conn.execute(SELECT_USER.format(column=column), (value,))
            return await cur.fetchone()

    async def insert(self, room: str, sender_id: int, client_id: str, text: str, at: str) -> int:
        async with self.pool.connection() as conn:
            args = (room, sender_id, client_id, text, at)
            cur = await conn.execute(INSERT + " RETURNING id", args)
            row = await cur.fetchone()
            return int(row[0]) if row else 0


class Relay:
    def __init__(self, args: argparse.Namespace) -> None:
        self.secret = args.secret_key
        self.store: Any = (
            PostgresStore(args.database_url)
            if args.database_url.startswith("postgres")
            else SqliteStore(args.database_url)
        )
        self.local: dict[str, set[ServerConnection]] = defaultdict(set)
        self.tasks: set[asyncio.Future[None]] = set()
        self.redis: Any = None
        self.pubsub: Any = None
        self.redis_url = args.redis_url if args.fanout == "redis" else ""

    async def start(self) -> None:
        await self.store.start()
        if self.redis_url:
            import redis.asyncio as aioredis

            self.redis = aioredis.Redis.from_url(self.redis_url)
            self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            await self.pubsub.subscribe("bench-floor-boot")
            asyncio.get_running_loop().create_task(self.listen())

    async def listen(self) -> None:
        """Relay every published event to this process's sockets in its room."""
        async for item in self.pubsub.listen():
            if item.get("type") != "message":
                continue
            self.fan_out(item["channel"].decode(), item["data"].decode())

    def fan_out(self, room: str, data: str) -> None:
        for conn in list(self.local.get(room, ())):
            task = asyncio.ensure_future(self._send(conn, data))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _send(conn: ServerConnection, data: str) -> None:
        with contextlib.suppress(Exception):
            await conn.send(data)

    async def publish(self, room: str, data: str) -> None:
        if self.redis is not None:
            await self.redis.publish(room, data)
        else:
            self.fan_out(room, data)

    async def join(self, room: str, conn: ServerConnection) -> None:
        first = not self.local[room]
        self.local[room].add(conn)
        if first and self.pubsub is not None:
            await self.pubsub.subscribe(room)

    async def leave(self, room: str, conn: ServerConnection) -> None:
        members = self.local.get(room)
        if members is None:
            return
        members.discard(conn)
        if not members:
            del self.local[room]
            if self.pubsub is not None:
                await self.pubsub.unsubscribe(room)

    def authenticate(self, conn: ServerConnection) -> int | None:
        header = conn.request.headers.get("Authorization", "") if conn.request else ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        try:
            claims = jwt.decode(
                token, self.secret, algorithms=["HS256"], audience="direct_messages"
            )
            return int(claims["sub"])
        except (jwt.InvalidTokenError, KeyError, ValueError):
            return None

    async def handler(self, conn: ServerConnection) -> None:
        path = conn.request.path.split("?", 1)[0] if conn.request else ""
        parts = path.strip("/").split("/")
        user_id = self.authenticate(conn)
        if user_id is None:
            await conn.close(4401)
            return
        if len(parts) != 3 or parts[:2] != ["ws", "dm"]:
            await conn.close(4404)
            return
        me = await self.store.user(pk=user_id)
        other = await self.store.user(account=parts[2].lower())
        if me is None or other is None or me[0] == other[0]:
            await conn.close(4404)
            return
        low, high = sorted((me[0], other[0]))
        room = f"dm.{low}.{high}"
        await self.join(room, conn)
        try:
            await conn.send(room_joined(room, me, other))
            async for raw in conn:
                await self.frame(conn, room, me, raw)
        finally:
            await self.leave(room, conn)

    async def frame(self, conn: ServerConnection, room: str, me: Any, raw: Any) -> None:
        try:
            frame = orjson.loads(raw)
            kind = frame.get("type")
        except (orjson.JSONDecodeError, AttributeError):
            await conn.send('{"type":"error","code":"invalid","detail":"not JSON","ref":null}')
            return
        if kind == "ping":
            await conn.send('{"type":"pong"}')
            return
        if kind != "message.send" or not isinstance(frame.get("client_id"), str):
            error = {"type": "error", "code": "invalid", "detail": "unsupported", "ref": None}
            await conn.send(orjson.dumps(error).decode())
            return
        at = isotime(dt.datetime.now(dt.UTC))
        text = str(frame.get("message", ""))
        pk = await self.store.insert(room, me[0], frame["client_id"], text, at)
        ack = {"type": "message.ack", "client_id": frame["client_id"], "id": pk, "seq": pk}
        await conn.send(orjson.dumps({**ack, "created_at": at}).decode())
        await self.publish(room, message_new(pk, room, me[1], text, frame["client_id"], at))


async def health(conn: ServerConnection, request: Any) -> Response | None:
    """Plain HTTP on the relay's port (the harness's port probe) gets a 200."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return conn.respond(200, "floor\n")
    return None


async def main(args: argparse.Namespace) -> None:
    relay = Relay(args)
    await relay.start()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        relay.handler,
        "127.0.0.1",
        args.port,
        compression=None,
        max_size=1 << 20,
        process_request=health,
        backlog=4096,
    ):
        await stop


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--secret-key", required=True)
    parser.add_argument("--fanout", choices=["redis", "memory"], default="redis")
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
