"""Redis pub/sub channel layer with a bounded queue per socket: the production default.

Redis carries each group's events between processes by PUBLISH and SUBSCRIBE, a third
of the Redis commands of channels-redis' ``RedisChannelLayer`` per message
(bench/RESULTS.md). In each process the events wait for their sockets in
:class:`~direct_messages.local_layer.LocalChannelLayer`'s mailboxes: at most
``capacity`` per socket, the oldest dropped past that, so a client that stops reading
makes the server hold no more than that, and its socket refills the gap in ``seq``
from the database. ``group_send_many`` publishes a send's events in one round trip.

This replaced a subclass of channels-redis' ``RedisPubSubChannelLayer``, which queues
each socket's events without bound and publishes one event per round trip under a lock
per connection, with no public way to change either: bounding its queues and batching
its publishes took six of its private names. This layer uses redis-py's public asyncio
API only, and one Redis (several hosts would be one more hash, and no deployment here
needs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgpack
from channels.layers import BaseChannelLayer
from django.core.exceptions import ImproperlyConfigured
from redis import asyncio as aioredis

from direct_messages.local_layer import LocalChannelLayer

logger = logging.getLogger(__name__)


def _pack(message: dict[str, Any]) -> bytes:
    assert isinstance(message, dict), "message is not a dict"
    return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]


def _redis_url(hosts: Any) -> str:
    """channels-redis' ``hosts`` setting, for one Redis: a URL, or a dict with one as
    its ``address``."""
    hosts = hosts or ["redis://127.0.0.1:6379"]
    if len(hosts) != 1:
        raise ImproperlyConfigured("BoundedPubSubChannelLayer: one Redis in 'hosts'")
    host = hosts[0]
    address = host.get("address") if isinstance(host, dict) else host
    if not isinstance(address, str):
        raise ImproperlyConfigured("BoundedPubSubChannelLayer: 'hosts' takes a redis:// URL")
    return address


class _LoopLayer(LocalChannelLayer):
    """One event loop's share of the layer (redis-py's asyncio connections belong to
    one loop): the mailboxes and groups of the sockets on it, a Redis client, and the
    task that reads their subscriptions into the mailboxes."""

    def __init__(self, url: str, prefix: str, **local: Any) -> None:
        super().__init__(**local)
        self.prefix = prefix
        self.group_prefix = f"{prefix}__group__"
        self.redis = aioredis.Redis.from_url(url)
        self.pubsub = self.redis.pubsub()
        self.subscribed: set[str] = set()
        self.subscribing = asyncio.Lock()
        self.reader: asyncio.Task[None] | None = None
        self.unsubscribing: set[asyncio.Task[None]] = set()
        self.in_flight = 0  # calls on it now (BoundedPubSubChannelLayer._using)
        self.failing = False

    def _unpack(self, event: Any) -> dict[str, Any]:
        return msgpack.unpackb(event, raw=False)  # type: ignore[no-any-return]

    # --- the layer API, for this loop --------------------------------------------------

    async def new_channel(self, prefix: str = "specific.") -> str:
        channel = f"{self.prefix}{prefix}{uuid.uuid4().hex}"
        await self._subscribe(channel)
        return channel

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        self.require_valid_channel_name(channel)
        await self.redis.publish(channel, _pack(message))

    async def receive(self, channel: str) -> dict[str, Any]:
        try:
            return await super().receive(channel)
        except asyncio.CancelledError:
            # Channels cancels a consumer's receive when its socket goes: stop listening
            # for the channel (in the background: the cancellation does not wait on Redis).
            if channel not in self.mailboxes:
                self._unsubscribe_soon(channel)
            raise

    async def group_add(self, group: str, channel: str) -> None:
        await super().group_add(group, channel)
        await self._subscribe(self.group_prefix + group)

    def _leave(self, group: str, channel: str) -> None:
        """Every way a channel leaves a group (a discard, a membership past
        ``group_expiry``, a dead channel): the process stops listening to a group it
        no longer has a member of."""
        super()._leave(group, channel)
        if group not in self.groups:
            self._unsubscribe_soon(self.group_prefix + group)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.require_valid_group_name(group)
        await self.redis.publish(self.group_prefix + group, _pack(message))

    async def group_send_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for group, event in events:
            self.require_valid_group_name(group)
            pipe.publish(self.group_prefix + group, _pack(event))
        await pipe.execute()

    async def flush(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
            self.reader = None
        await self.pubsub.aclose()
        await self.redis.aclose()
        self.subscribed.clear()
        await super().flush()

    # --- subscriptions -----------------------------------------------------------------

    async def _subscribe(self, name: str) -> None:
        async with self.subscribing:
            if name not in self.subscribed:
                await self.pubsub.subscribe(name)
                self.subscribed.add(name)
        if self.reader is None:
            self.reader = asyncio.ensure_future(self._read())

    def _unsubscribe_soon(self, name: str) -> None:
        """Unsubscribe in the background (the caller does not wait on Redis)."""
        if name not in self.subscribed:
            return
        task = asyncio.ensure_future(self._unsubscribe(name))
        self.unsubscribing.add(task)  # held until done, or it may be collected
        task.add_done_callback(self.unsubscribing.discard)

    async def _unsubscribe(self, name: str) -> None:
        async with self.subscribing:
            if name in self.subscribed:
                self.subscribed.discard(name)
                try:
                    await self.pubsub.unsubscribe(name)
                except Exception as exc:  # Redis away: it forgot the subscription anyway
                    logger.info("unsubscribe %s failed: %r", name, exc)

    async def _read(self) -> None:
        """Deliver what the subscriptions receive, for the life of the loop. When Redis
        goes away, redis-py reconnects on the next read and subscribes again to every
        channel it had; until then this retries once a second (logged once)."""
        while True:
            try:
                message = await self.pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=None
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.failing:
                    logger.warning("channel layer subscription lost, retrying: %r", exc)
                self.failing = True
                await asyncio.sleep(1.0)
                continue
            if self.failing:
                logger.warning("channel layer subscription back")
                self.failing = False
            if message is not None:
                self._dispatch(message["channel"].decode(), message["data"])

    def _dispatch(self, name: str, data: bytes) -> None:
        if name.startswith(self.group_prefix):
            self._deliver(name[len(self.group_prefix) :], lambda: data)
            return
        mailbox = self._mailbox(name)  # a channel of this loop (new_channel subscribed it)
        if mailbox is not None:
            mailbox.put(time.time() + self.expiry, data)


class BoundedPubSubChannelLayer(BaseChannelLayer):  # type: ignore[misc]  # channels is untyped
    """The layer Django Channels is given: each call goes to the calling loop's share."""

    extensions = ["groups", "flush"]

    def __init__(
        self,
        hosts: Any = None,
        prefix: str = "asgi",
        capacity: int = 100,
        expiry: int = 60,
        group_expiry: int = 86400,
        channel_capacity: Any = None,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.url = _redis_url(hosts)
        self.prefix = prefix
        self.local = {
            "expiry": expiry,
            "group_expiry": group_expiry,
            "capacity": capacity,
            "channel_capacity": channel_capacity,
        }
        self.loops: dict[asyncio.AbstractEventLoop, _LoopLayer] = {}

    def _layer(self) -> _LoopLayer:
        loop = asyncio.get_running_loop()
        layer = self.loops.get(loop)
        if layer is None:
            for closed in [other for other in self.loops if other.is_closed()]:
                del self.loops[closed]
            layer = self.loops[loop] = _LoopLayer(self.url, self.prefix, **self.local)
        return layer

    @contextlib.asynccontextmanager
    async def _using(self) -> AsyncIterator[_LoopLayer]:
        """The calling loop's share, for one call. A loop that only publishes (a
        thread's ``async_to_sync``, whose loop is closed after) keeps no connection:
        the last call on it that leaves nothing subscribed or queued closes it."""
        layer = self._layer()
        layer.in_flight += 1
        try:
            yield layer
        finally:
            layer.in_flight -= 1
            if not (layer.in_flight or layer.subscribed or layer.mailboxes or layer.groups):
                if self.loops.get(asyncio.get_running_loop()) is layer:
                    del self.loops[asyncio.get_running_loop()]
                await layer.flush()

    async def new_channel(self, prefix: str = "specific.") -> str:
        async with self._using() as layer:
            return await layer.new_channel(prefix)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        async with self._using() as layer:
            await layer.send(channel, message)

    async def receive(self, channel: str) -> dict[str, Any]:
        return await self._layer().receive(channel)

    async def group_add(self, group: str, channel: str) -> None:
        async with self._using() as layer:
            await layer.group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        async with self._using() as layer:
            await layer.group_discard(group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        async with self._using() as layer:
            await layer.group_send(group, message)

    async def group_send_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """``group_send`` each (group, event), in order, in one round trip to Redis."""
        async with self._using() as layer:
            await layer.group_send_many(events)

    async def flush(self) -> None:
        layer = self.loops.pop(asyncio.get_running_loop(), None)
        if layer is not None:
            await layer.flush()
