"""Redis pub/sub channel layer with a bounded queue per socket.

``channels_redis.pubsub.RedisPubSubChannelLayer`` needs a third of the Redis commands of
``RedisChannelLayer`` per message and sustains more messages a second (bench/RESULTS.md),
but it queues events for each consumer in an unbounded ``asyncio.Queue``: a client that
stops reading (the server then stops sending to it, as uvicorn does) makes the server
hold everything sent to it. This layer keeps at most ``capacity`` events per consumer
and drops the oldest past that, as ``RedisChannelLayer``'s capacity does. Nothing is
lost for good: the consumer refills a gap in ``seq`` from the database.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer


class DropOldestQueue(asyncio.Queue[Any]):
    def put_nowait(self, item: Any) -> None:
        if self.full():
            self.get_nowait()
        super().put_nowait(item)


class _BoundedQueues(dict[str, Any]):
    """The loop layer's channel -> queue map, with every new queue bounded."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def __setitem__(self, channel: str, queue: Any) -> None:
        if type(queue) is asyncio.Queue:
            queue = DropOldestQueue(maxsize=self.capacity)
        super().__setitem__(channel, queue)


class BoundedPubSubChannelLayer(RedisPubSubChannelLayer):
    def __init__(self, *args: Any, capacity: int = 100, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = capacity

    async def group_send_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """``group_send`` each (group, event), in order, in one round trip per Redis shard.

        channels-redis publishes one event per round trip, each under its shard's lock,
        so a send's three or four events queued every other publish of the process
        behind them. It has no public batch, so this reaches into its shard internals
        (``_get_group_channel_name``, ``_get_shard``, a shard's ``_lock`` and
        ``_redis``): the one place in the product that uses another library's private
        names. Worth it, measured on 2026-12-04 (scaled uvicorn + pub/sub, 2 processes,
        `python -m bench --only scaled --servers uvicorn --layers pubsub --rates 400
        --seconds 10 --no-write`, with and without this method, twice each): at 400/s,
        delivery p99 30 / 329 ms with it and 619 / 1,314 ms without, server CPU 2.3 /
        2.8 ms a message against 2.6 / 3.0; at 500/s p99 0.37 / 0.44 s against 1.5 /
        3.8 s. tests/integration/test_layers.py fails, by name, on a channels-redis that
        moves them (the lock tests 4.3; the range admits other 4.x).
        """
        layer = self._get_layer()
        batches: dict[Any, list[tuple[str, bytes]]] = {}
        for group, event in events:
            channel = layer._get_group_channel_name(group)
            batch = batches.setdefault(layer._get_shard(channel), [])
            batch.append((channel, self.serialize(event)))
        for shard, batch in batches.items():
            async with shard._lock:
                shard._ensure_redis()
                pipe = shard._redis.pipeline(transaction=False)
                for channel, data in batch:
                    pipe.publish(channel, data)
                await pipe.execute()

    def _get_layer(self) -> Any:
        """channels-redis' per-loop layer, its queues bounded (same internals, same test)."""
        layer = super()._get_layer()
        if not isinstance(layer.channels, _BoundedQueues):
            bounded = _BoundedQueues(self.capacity)
            bounded.update(layer.channels)
            layer.channels = bounded
        return layer
