"""An open socket gets every message even when the channel layer drops the last ones.

channels-redis keeps at most ``capacity`` (100) pending events per process and drops
the rest silently; an in-memory layer does the same per channel. A process that stalls
(CPU starvation, a long GC or VM pause, a blocked event loop) while its conversations
keep going loses the newest events. A gap in the middle is filled when the next event
arrives; the tail of a burst has no next event, so it must be noticed otherwise.
Found by ``make faults`` (reliability/): messages acked and stored, but never delivered
to a recipient whose socket stayed open.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support import WsClient, signup

pytestmark = [pytest.mark.live, pytest.mark.timeout(90)]


async def open_dm(server, me, other, query=""):
    ws = await WsClient.open(f"{server.ws}/ws/dm/{other['account']}/{query}", me["token"])
    assert (await ws.recv())["type"] == "room.joined"
    return ws


async def test_tail_dropped_by_a_stalled_process_is_still_delivered(
    asgi_server_factory, private_redis
):
    one = asgi_server_factory(private_redis.url)
    two = asgi_server_factory(private_redis.url)
    alice, bob = signup(one.http), signup(one.http)
    sender = await open_dm(one, alice, bob)
    recipient = await open_dm(two, bob, alice)
    assert (await sender.send_message("before"))["seq"] == 1
    assert (await recipient.recv_type("message.new"))["message"]["seq"] == 1

    total = 130  # more than the layer keeps for a process that does not read
    os.kill(two.proc.pid, signal.SIGSTOP)
    try:
        for i in range(total):
            ack = await sender.send_message(f"while stalled {i}")
            assert ack["type"] == "message.ack", ack
    finally:
        os.kill(two.proc.pid, signal.SIGCONT)
    seqs = []
    deadline = time.monotonic() + 30
    while len(seqs) < total and time.monotonic() < deadline:
        try:
            frame = await recipient.recv_type("message.new", timeout=2)
        except TimeoutError:
            continue
        seqs.append(frame["message"]["seq"])
    assert seqs == list(range(2, total + 2)), f"got {len(seqs)}: ...{seqs[-3:]}"
    await sender.close()
    await recipient.close()
