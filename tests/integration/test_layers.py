"""direct_messages.layers against a real Redis: the one module of the product that uses
channels-redis internals (its docstring says why, with the figure). These tests fail,
by name, on a channels-redis upgrade that moves them."""

from __future__ import annotations

import asyncio
import uuid

import channels_redis
import pytest
from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer

from direct_messages.layers import BoundedPubSubChannelLayer

pytestmark = pytest.mark.redis


def test_the_channels_redis_internals_the_layer_uses_are_there():
    """What group_send_many and the bounded queues reach into (channels-redis 4.3)."""
    missing = [
        name
        for owner, name in [
            (RedisPubSubChannelLayer, "_get_layer"),
            (RedisPubSubLoopLayer, "_get_group_channel_name"),
            (RedisPubSubLoopLayer, "_get_shard"),
        ]
        if not callable(getattr(owner, name, None))
    ]
    assert not missing, (
        f"channels-redis {channels_redis.__version__} no longer has {missing}: "
        "direct_messages/layers.py must change (or drop group_send_many)"
    )


async def test_group_send_many_delivers_each_event_to_its_group_in_order(redis_url):
    layer = BoundedPubSubChannelLayer(hosts=[redis_url], prefix=f"t{uuid.uuid4().hex[:8]}")
    try:
        one, two = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("room.a", one)
        await layer.group_add("room.b", two)
        await asyncio.sleep(0.1)  # the subscriptions reach Redis
        await layer.group_send_many(
            [
                ("room.a", {"type": "x", "n": 1}),
                ("room.b", {"type": "x", "n": 2}),
                ("room.a", {"type": "x", "n": 3}),
            ]
        )
        got_one = [(await asyncio.wait_for(layer.receive(one), 5))["n"] for _ in range(2)]
        got_two = (await asyncio.wait_for(layer.receive(two), 5))["n"]
        assert (got_one, got_two) == ([1, 3], 2)
    finally:
        await layer.flush()


async def test_a_consumer_that_does_not_read_holds_at_most_capacity_events(redis_url):
    layer = BoundedPubSubChannelLayer(
        hosts=[redis_url], prefix=f"t{uuid.uuid4().hex[:8]}", capacity=3
    )
    try:
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        await asyncio.sleep(0.1)
        for n in range(1, 6):
            await layer.group_send("room", {"type": "x", "n": n})
        await asyncio.sleep(0.3)  # all five reached the process; two were dropped
        got = [(await asyncio.wait_for(layer.receive(channel), 5))["n"] for _ in range(3)]
        assert got == [3, 4, 5]  # the oldest go first, as RedisChannelLayer's capacity
    finally:
        await layer.flush()
