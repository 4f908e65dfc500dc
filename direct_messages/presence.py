"""Who is online: a count of open sockets per user, shared by every process.

With Redis configured each user has a sorted set of connection ids scored by their
expiry time. A socket adds itself on connect, refreshes its score on every heartbeat
and removes itself on close; a process that dies without closing its sockets stops
refreshing them, so its connections drop out after ``PRESENCE_TTL_SECONDS``. Without
Redis (the embedded, single-process default) the sets live in process memory.

A conversation's socket (``/ws/dm/{account}/``) also counts in a set of the user's
sockets on that room, in the same round trip: whether the user is looking at the
conversation is what decides a notification (docs/notifications.md). The task worker
that decides is another process: without Redis, the sockets of users who have push
subscriptions are also written to the database (``ConversationWatch``) for it to read.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from django.db import models

from direct_messages import push_mobile
from direct_messages.conf import dm_setting
from direct_messages.db import in_thread

logger = logging.getLogger(__name__)


def _key(user_id: int) -> str:
    return f"dm:presence:{user_id}"


def _room_key(user_id: int, room: str) -> str:
    return f"dm:watching:{user_id}:{room}"


def _watch_store(user_id: int, room: str, conn: str) -> bool:
    """Write ``conn`` as watching ``room`` if the user may be notified at all (has a
    push subscription or a mobile device); whether it was written."""
    from direct_messages.models import ConversationWatch, PushDevice, PushSubscription

    if (
        not PushSubscription.objects.filter(user_id=user_id).exists()
        and not PushDevice.objects.filter(user_id=user_id).exists()
    ):
        return False
    ConversationWatch.objects.create(
        user_id=user_id, room_key=room, conn=conn, expires_at=_expiry()
    )
    return True


def _watch_extend(user_id: int, conn: str) -> None:
    from direct_messages.models import ConversationWatch

    ConversationWatch.objects.filter(user_id=user_id, conn=conn).update(expires_at=_expiry())


def _watch_delete(user_id: int, conn: str) -> None:
    from direct_messages.models import ConversationWatch

    now = _expiry(0)
    ConversationWatch.objects.filter(user_id=user_id).filter(
        models.Q(conn=conn) | models.Q(expires_at__lt=now)
    ).delete()


def _watch_exists(user_id: int, room: str) -> bool:
    from direct_messages.models import ConversationWatch

    return ConversationWatch.objects.filter(
        user_id=user_id, room_key=room, expires_at__gt=_expiry(0)
    ).exists()


def _expiry(seconds: float | None = None) -> Any:
    import datetime as dt

    from django.utils import timezone

    ttl = dm_setting("PRESENCE_TTL_SECONDS") if seconds is None else seconds
    return timezone.now() + dt.timedelta(seconds=ttl)


class MemoryPresence:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[int, set[str]] = {}
        self._watching: dict[tuple[int, str], set[str]] = {}
        # Conversation sockets, and whether each is also in the database (_watch_store).
        self._stored: dict[str, bool] = {}

    async def connect(self, user_id: int, conn: str, room: str | None = None) -> int | None:
        with self._lock:
            conns = self._connections.setdefault(user_id, set())
            conns.add(conn)
            if room is not None:
                self._watching.setdefault((user_id, room), set()).add(conn)
            return len(conns)

    async def disconnect(self, user_id: int, conn: str, room: str | None = None) -> bool:
        with self._lock:
            stored = self._stored.pop(conn, False)
        if stored:
            await self._in_database(_watch_delete, user_id, conn)
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
        """Nothing expires in one process's memory: a conversation's socket joins its
        room, and its row in the database (if it has one) is kept from expiring."""
        if room is None:
            return
        with self._lock:
            self._watching.setdefault((user_id, room), set()).add(conn)
            stored = self._stored.get(conn)
        if stored:
            await self._in_database(_watch_extend, user_id, conn)
        elif stored is None:
            # No thread hop where no notification can go out at all (no Web Push, no FCM, no APNs).
            notifying = dm_setting("VAPID_PRIVATE_KEY") or push_mobile.enabled_platforms()
            written = notifying and await self._in_database(_watch_store, user_id, room, conn)
            with self._lock:
                self._stored[conn] = bool(written)

    async def _in_database(self, func: Any, *args: Any) -> Any:
        """``func(*args)`` in a database thread; a failure is logged: the socket goes on
        (at worst a notification comes while the user looks)."""
        try:
            return await in_thread(func)(*args)
        except Exception as exc:
            logger.warning("conversation watch not recorded: %r", exc)
            return None

    def online(self, user_id: int) -> bool:
        with self._lock:
            return bool(self._connections.get(user_id))

    def watching(self, user_id: int, room: str) -> bool:
        """Whether the user has a socket open on the conversation ``room``: in this
        process, or in the server's, as the database says."""
        with self._lock:
            if self._watching.get((user_id, room)):
                return True
        return _watch_exists(user_id, room)

    def clear(self) -> None:
        with self._lock:
            self._connections.clear()
            self._watching.clear()
            self._stored.clear()


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
