"""The embedded default's channel layer: the channel layer specification's behaviour
(as Channels' InMemoryChannelLayer), with the costs moved to where they are due."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull

from direct_messages.local_layer import LocalChannelLayer


async def receive(layer: LocalChannelLayer, channel: str, timeout: float = 2.0) -> dict:
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def test_a_receive_waits_for_the_send_and_events_come_in_order():
    layer = LocalChannelLayer()
    channel = await layer.new_channel()
    waiting = asyncio.ensure_future(receive(layer, channel))
    await asyncio.sleep(0.01)
    await layer.send(channel, {"type": "x", "n": 1})
    await layer.send(channel, {"type": "x", "n": 2})
    assert (await waiting)["n"] == 1
    assert (await receive(layer, channel))["n"] == 2
    assert layer.mailboxes == {}  # read empty: nothing held for the channel


async def test_a_group_send_reaches_each_member_until_it_leaves():
    layer = LocalChannelLayer()
    one, two = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", one)
    await layer.group_add("room", two)
    await layer.group_send("room", {"type": "x", "n": 1})
    await layer.group_discard("room", two)
    await layer.group_send("room", {"type": "x", "n": 2})
    assert [(await receive(layer, one))["n"] for _ in range(2)] == [1, 2]
    assert (await receive(layer, two))["n"] == 1
    with pytest.raises(asyncio.TimeoutError):
        await receive(layer, two, timeout=0.05)
    assert layer.groups == {"room": {one: pytest.approx(time.time(), abs=5)}}


@pytest.mark.parametrize("payload", ["text", b"\x00bytes"])
async def test_each_receiver_gets_its_own_copy(payload):
    """A consumer that changes an event changes nobody else's, whatever it carries."""
    layer = LocalChannelLayer()
    one, two = await layer.new_channel(), await layer.new_channel()
    for channel in (one, two):
        await layer.group_add("room", channel)
    sent = {"type": "x", "message": {"text": payload, "seq": 1}}
    await layer.group_send("room", sent)
    first = await receive(layer, one)
    first["message"]["seq"] = 99
    assert (
        (await receive(layer, two)) == sent == {"type": "x", "message": {"text": payload, "seq": 1}}
    )


async def test_a_full_channel_drops_its_oldest_group_event_and_refuses_a_send():
    layer = LocalChannelLayer(capacity=3)
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    for n in range(1, 6):
        await layer.group_send("room", {"type": "x", "n": n})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "x", "n": 6})
    assert [(await receive(layer, channel))["n"] for _ in range(3)] == [3, 4, 5]


async def test_an_expired_event_is_not_received():
    layer = LocalChannelLayer(expiry=0)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x", "n": 1})
    await asyncio.sleep(0.01)
    with pytest.raises(asyncio.TimeoutError):
        await receive(layer, channel, timeout=0.05)


async def test_a_channel_nobody_reads_leaves_its_groups_once_its_events_expire():
    """A socket that died without leaving its groups holds at most ``capacity`` events,
    and only until they expire."""
    layer = LocalChannelLayer(expiry=0.2)
    dead, live = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", dead)
    await layer.group_add("room", live)
    await layer.group_send("room", {"type": "x", "n": 1})
    await asyncio.sleep(0.3)
    reading = asyncio.ensure_future(layer.receive(live))  # live waits; dead never reads
    await asyncio.sleep(0.01)
    await layer.group_send("room", {"type": "x", "n": 2})
    assert (await asyncio.wait_for(reading, 2))["n"] == 2
    assert list(layer.groups["room"]) == [live]
    assert dead not in layer.mailboxes and dead not in layer.memberships


async def test_a_membership_older_than_group_expiry_ends():
    layer = LocalChannelLayer(group_expiry=0)
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    await asyncio.sleep(0.01)
    await layer.group_send("room", {"type": "x"})
    assert layer.groups == {} and layer.mailboxes == {}


async def test_a_group_send_from_another_thread_wakes_a_receiver():
    """A view's broadcast runs async_to_sync in a worker thread, on another loop."""
    layer = LocalChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    waiting = asyncio.ensure_future(receive(layer, channel))
    await asyncio.sleep(0.01)
    thread = threading.Thread(
        target=async_to_sync(layer.group_send), args=("room", {"type": "x", "n": 7})
    )
    thread.start()
    assert (await waiting)["n"] == 7
    thread.join()


async def test_a_cancelled_receive_leaves_nothing_behind():
    layer = LocalChannelLayer()
    channel = await layer.new_channel()
    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert layer.mailboxes == {}


async def test_flush_forgets_everything():
    layer = LocalChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    await layer.group_send("room", {"type": "x"})
    await layer.flush()
    assert (layer.mailboxes, layer.groups, layer.memberships) == ({}, {}, {})
