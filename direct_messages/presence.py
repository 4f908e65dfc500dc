"""Who is online: a count of open sockets per user, shared by every process.

With Redis configured each user has a sorted set of connection ids scored by their
expiry time. A socket adds itself on connect, refreshes its score on every heartbeat
and removes itself on close; a process that dies without closing its sockets stops
refreshing them, so its connections drop out after ``PRESENCE_TTL_SECONDS``. Without
Redis (the embedded, single-process default) the sets live in process memory.

A conversation's socket (``/ws/dm/{account}/``) also counts in a set of the user's
sockets on that room, in the same round trip: whether the user is looking at the
conversation is what decides a notification (docs/notifications.md).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from direct_messages.conf import dm_setting

logger = logging.getLogger(__name__)


def _key(user_id: int) -> str:
    return f"dm:presence:{user_id}"


def _room_key(user_id: int, room: str) -> str:
    return f"dm:watching:{user_id}:{room}"


class MemoryPresence:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[int, set[str]] = {}
        self._watching: dict[tuple[int, str], set[str]] = {}

    async def connect(self, user_id: int, conn: str, room: str | None = None) -> int | None:
        with self._lock:
            conns = self._connections.setdefault(user_id, set())
            conns.add(conn)
            if room is not None:
                self._watching.setdefault((user_id, room), set()).add(conn)
            return len(conns)

    async def disconnect(self, user_id: int, conn: str, room: str | None = None) -> bool:
        with self._lock:
            if room is not None:
                watchers = self._watching.get((user_id, room), set())
                watchers.discard(conn)
                if not watchers:
                    self._watching.pop((user_id, room), None)
            conns = self._connections.get(user_id, set())
            conns.discard(conn)
            if not conns:
                self._connections.pop(user_id, None)
                return True
            return False

    async def refresh(self, user_id: int, conn: str, room: str | None = None) -> None:
        """Nothing expires in one process's memory: only a room joins."""
        if room is not None:
            with self._lock:
                self._watching.setdefault((user_id, room), set()).add(conn)

    def online(self, user_id: int) -> bool:
        with self._lock:
            return bool(self._connections.get(user_id))

    def watching(self, user_id: int, room: str) -> bool:
        """Whether the user has a socket open on the conversation ``room``."""
        with self._lock:
            return bool(self._watching.get((user_id, room)))

    def clear(self) -> None:
        with self._lock:
            self._connections.clear()
            self._watching.clear()


class RedisPresence:
    def __init__(self, url: str) -> None:
        self.url = url
        self._clients: dict[Any, Any] = {}

    def _client(self) -> Any:
        import redis.asyncio

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = redis.asyncio.Redis.from_url(self.url, socket_timeout=2)
        return client

    async def _count_after(
        self, user_id: int, op: str, conn: str, room: str | None = None
    ) -> int | None:
        now = time.time()
        ttl = dm_setting("PRESENCE_TTL_SECONDS")
        try:
            pipe = self._client().pipeline()
            keys = [_key(user_id)] + ([_room_key(user_id, room)] if room is not None else [])
            for key in keys:
                if op == "add":
                    pipe.zadd(key, {conn: now + ttl})
                else:
                    pipe.zrem(key, conn)
                pipe.zremrangebyscore(key, "-inf", now)
                pipe.zcard(key)
                pipe.expire(key, int(ttl) + 1)
            result = await pipe.execute()
            return int(result[2])
        except Exception as exc:
            logger.warning("presence not updated, Redis unavailable: %r", exc)
            return None

    async def connect(self, user_id: int, conn: str, room: str | None = None) -> int | None:
        """The user's open sockets, this one included (None if Redis is down)."""
        return await self._count_after(user_id, "add", conn, room)

    async def disconnect(self, user_id: int, conn: str, room: str | None = None) -> bool:
        return await self._count_after(user_id, "rem", conn, room) == 0

    async def refresh(self, user_id: int, conn: str, room: str | None = None) -> None:
        await self._count_after(user_id, "add", conn, room)

    def online(self, user_id: int) -> bool:
        return self._live(_key(user_id))

    def watching(self, user_id: int, room: str) -> bool:
        """Whether the user has a socket open on the conversation ``room``, anywhere."""
        return self._live(_room_key(user_id, room))

    def _live(self, key: str) -> bool:
        from direct_messages.ratelimit import _redis

        try:
            return bool(_redis().zcount(key, time.time(), "+inf"))
        except Exception as exc:
            logger.warning("presence unknown, Redis unavailable: %r", exc)
            return False


_store: MemoryPresence | RedisPresence | None = None


def store() -> MemoryPresence | RedisPresence:
    global _store
    url = dm_setting("REDIS_URL")
    if _store is None or (isinstance(_store, RedisPresence) and _store.url != url):
        _store = RedisPresence(url) if url else MemoryPresence()
    elif isinstance(_store, MemoryPresence) and url:
        _store = RedisPresence(url)
    return _store
