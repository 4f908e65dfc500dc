"""direct_messages.layers against a real Redis: the production default's channel layer,
two instances standing for two processes."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis

from direct_messages.layers import BoundedPubSubChannelLayer, _LoopLayer

pytestmark = pytest.mark.redis


def layer_for(url: str, prefix: str, **options) -> BoundedPubSubChannelLayer:
    return BoundedPubSubChannelLayer(hosts=[url], prefix=prefix, **options)


async def receive(layer, channel, timeout=5.0):
    return await asyncio.wait_for(layer.receive(channel), timeout)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


async def test_group_send_many_delivers_each_event_to_its_group_in_order(redis_url, prefix):
    layer = layer_for(redis_url, prefix)
    try:
        one, two = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("room.a", one)
        await layer.group_add("room.b", two)
        await layer.group_send_many(
            [
                ("room.a", {"type": "x", "n": 1}),
                ("room.b", {"type": "x", "n": 2}),
                ("room.a", {"type": "x", "n": 3}),
            ]
        )
        got_one = [(await receive(layer, one))["n"] for _ in range(2)]
        got_two = (await receive(layer, two))["n"]
        assert (got_one, got_two) == ([1, 3], 2)
    finally:
        await layer.flush()


async def test_events_cross_processes_by_group_and_by_channel(redis_url, prefix):
    """What one process sends reaches the other's sockets, bytes and all."""
    here, there = layer_for(redis_url, prefix), layer_for(redis_url, prefix)
    try:
        mine, theirs = await here.new_channel(), await there.new_channel()
        await here.group_add("room", mine)
        await there.group_add("room", theirs)
        await here.group_send("room", {"type": "x", "body": b"\x00\xff", "n": 1})
        assert await receive(there, theirs) == {"type": "x", "body": b"\x00\xff", "n": 1}
        assert (await receive(here, mine))["n"] == 1
        await here.send(theirs, {"type": "direct"})
        assert await receive(there, theirs) == {"type": "direct"}
        await there.group_discard("room", theirs)
        await here.group_send("room", {"type": "x", "n": 2})
        assert (await receive(here, mine))["n"] == 2
        with pytest.raises(asyncio.TimeoutError):
            await receive(there, theirs, timeout=0.3)
    finally:
        await here.flush()
        await there.flush()


async def test_a_consumer_that_does_not_read_holds_at_most_capacity_events(redis_url, prefix):
    layer = layer_for(redis_url, prefix, capacity=3)
    try:
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        for n in range(1, 6):
            await layer.group_send("room", {"type": "x", "n": n})
        await asyncio.sleep(0.3)  # all five reached the process; two were dropped
        got = [(await receive(layer, channel))["n"] for _ in range(3)]
        assert got == [3, 4, 5]  # the oldest go first, as RedisChannelLayer's capacity
    finally:
        await layer.flush()


async def test_a_socket_that_goes_leaves_no_subscription_behind(redis_url, prefix):
    layer = layer_for(redis_url, prefix)
    client = redis.Redis.from_url(redis_url)
    try:
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        reading = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.05)
        reading.cancel()  # what Channels does when the socket closes
        await layer.group_discard("room", channel)
        await asyncio.sleep(0.2)
        counts = dict(client.pubsub_numsub(channel, f"{prefix}__group__room"))
        assert set(counts.values()) == {0}, counts
        assert (
            layer.loops[asyncio.get_running_loop()].subscribed,
            layer.loops[asyncio.get_running_loop()].mailboxes,
        ) == (set(), {})
    finally:
        client.close()
        await layer.flush()


def test_a_publish_from_a_thread_of_its_own_keeps_no_connection(redis_url, prefix):
    """A view or a task publishes through async_to_sync, on a loop that is closed after."""
    from asgiref.sync import async_to_sync

    layer = layer_for(redis_url, prefix)
    for n in range(3):
        async_to_sync(layer.group_send)("room", {"type": "x", "n": n})
    assert all(loop.is_closed() for loop in layer.loops) and len(layer.loops) == 0


async def test_a_group_whose_membership_expired_is_no_longer_listened_to(redis_url, prefix):
    """A socket that died without leaving: its membership expires, and with the
    group's last member gone the process unsubscribes from the group."""
    here, there = layer_for(redis_url, prefix, group_expiry=0), layer_for(redis_url, prefix)
    client = redis.Redis.from_url(redis_url)
    try:
        channel = await here.new_channel()
        await here.group_add("room", channel)
        await asyncio.sleep(1.1)  # group_expiry=0: the membership is stale
        await there.group_send("room", {"type": "x"})
        await asyncio.sleep(0.3)  # it reached here, found no member, and unsubscribed
        assert dict(client.pubsub_numsub(f"{prefix}__group__room")) == {
            f"{prefix}__group__room".encode(): 0
        }
    finally:
        client.close()
        await here.flush()
        await there.flush()


async def test_publishes_at_once_from_a_loop_without_sockets_all_go_out(
    redis_url, prefix, monkeypatch
):
    """A process with no socket (HTTP only) publishes from its loop, many sends at once:
    they share the loop's one Redis client, which closes once, after the last of them,
    not under the others. (redis-py would reconnect under a send whose client was
    closed, so the deliveries alone cannot tell; the closes can.)"""
    closes = []
    close = _LoopLayer.flush

    async def counted_close(layer):
        closes.append(layer)
        await close(layer)

    monkeypatch.setattr(_LoopLayer, "flush", counted_close)
    here, sender = layer_for(redis_url, prefix), layer_for(redis_url, prefix)
    try:
        channel = await here.new_channel()
        await here.group_add("room", channel)
        await asyncio.gather(*(sender.group_send("room", {"type": "x", "n": n}) for n in range(30)))
        got = sorted([(await receive(here, channel))["n"] for _ in range(30)])
        assert got == list(range(30))
        assert sender.loops == {}  # and then it keeps nothing open
        assert len(closes) == 1
    finally:
        await here.flush()


async def test_the_subscriptions_come_back_after_redis_restarts(private_redis, prefix):
    """redis-py subscribes again to every channel on the new connection."""
    layer = layer_for(private_redis.url, prefix)
    try:
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        private_redis.stop()
        private_redis.start()
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            try:
                await layer.group_send("room", {"type": "x", "n": 1})
                assert (await receive(layer, channel, timeout=0.5))["n"] == 1
                break
            except (TimeoutError, redis.ConnectionError, OSError):
                assert asyncio.get_running_loop().time() < deadline, "no delivery after restart"
                await asyncio.sleep(0.5)
    finally:
        await layer.flush()


def test_one_redis_only():
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured):
        BoundedPubSubChannelLayer(hosts=["redis://a:6379", "redis://b:6379"])
