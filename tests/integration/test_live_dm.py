"""Real server processes, real sockets, a real WebSocket client (``websockets``)."""

import asyncio
import uuid

import pytest
from websockets.exceptions import InvalidStatus

from tests.support import WsClient, http_json, signup

pytestmark = pytest.mark.live


async def open_dm(server, me, other, query="", **connect_options):
    ws = await WsClient.open(
        f"{server.ws}/ws/dm/{other['account']}/{query}", me["token"], **connect_options
    )
    joined = await ws.recv()
    assert joined["type"] == "room.joined", joined
    return ws, joined


async def collect_new(ws, count, timeout=15.0):
    seqs = []
    while len(seqs) < count:
        frame = await ws.recv_type("message.new", timeout=timeout)
        seqs.append(frame["message"]["seq"])
    return seqs


async def test_send_and_deliver_over_real_sockets(asgi_server):
    alice, bob = signup(asgi_server.http), signup(asgi_server.http)
    alice_ws, joined = await open_dm(asgi_server, alice, bob)
    bob_ws, _ = await open_dm(asgi_server, bob, alice)
    assert joined["read"] == {alice["account"]: 0, bob["account"]: 0}
    ack = await alice_ws.send_message("hello over tcp")
    assert ack["type"] == "message.ack" and ack["seq"] == 1
    new = await bob_ws.recv_type("message.new")
    assert new["message"]["id"] == ack["id"] and new["message"]["message"] == "hello over tcp"
    await alice_ws.close()
    await bob_ws.close()


async def test_foreign_origin_handshake_gets_403(asgi_server):
    alice = signup(asgi_server.http)
    with pytest.raises(InvalidStatus) as refused:
        await WsClient.open(
            f"{asgi_server.ws}/ws/inbox/", alice["token"], origin="https://evil.example"
        )
    assert refused.value.response.status_code == 403


async def test_no_origin_without_token_is_refused(asgi_server):
    with pytest.raises(InvalidStatus) as refused:
        await WsClient.open(f"{asgi_server.ws}/ws/inbox/")
    assert refused.value.response.status_code == 403


async def test_reconnect_with_after_while_the_other_side_keeps_sending(asgi_server):
    alice, bob = signup(asgi_server.http), signup(asgi_server.http)
    alice_ws, _ = await open_dm(asgi_server, alice, bob)
    bob_ws, _ = await open_dm(asgi_server, bob, alice)
    total = 40
    received: list[int] = []

    async def alice_sends():
        for i in range(total):
            ack = await alice_ws.send_message(f"m{i}")
            assert ack["type"] == "message.ack"
            await asyncio.sleep(0.01)

    async def bob_reconnects():
        nonlocal bob_ws
        for _ in range(4):
            await asyncio.sleep(0.08)
            await bob_ws.close()
            last = received[-1] if received else 0
            bob_ws, _ = await open_dm(asgi_server, bob, alice, f"?after={last}")
            while True:
                frame = await bob_ws.recv_type("message.new", "sync.done")
                if frame["type"] == "sync.done":
                    break
                received.append(frame["message"]["seq"])
            await bob_listens()  # whatever is live until the next reconnect

    async def bob_listens():
        try:
            while True:
                frame = await bob_ws.recv_type("message.new", timeout=0.05)
                received.append(frame["message"]["seq"])
        except TimeoutError:
            pass

    await bob_listens()
    await asyncio.gather(alice_sends(), bob_reconnects())
    while len(received) < total:
        frame = await bob_ws.recv_type("message.new", timeout=10)
        received.append(frame["message"]["seq"])
    assert received == list(range(1, total + 1))
    await alice_ws.close()
    await bob_ws.close()


async def test_concurrent_senders_on_many_sockets_every_socket_gets_every_message_once(asgi_server):
    alice, bob = signup(asgi_server.http), signup(asgi_server.http)
    sockets = [(await open_dm(asgi_server, alice, bob))[0] for _ in range(3)]
    sockets += [(await open_dm(asgi_server, bob, alice))[0] for _ in range(3)]
    per_socket = 4  # 6 sockets x 4 = 24 messages, sent all at once

    async def burst(ws):
        frames = [
            {"type": "message.send", "client_id": str(uuid.uuid4()), "message": "x"}
            for _ in range(per_socket)
        ]
        for frame in frames:
            await ws.send(frame)

    received = {i: [] for i in range(len(sockets))}

    async def listen(i, ws):
        while len(received[i]) < per_socket * len(sockets):
            frame = await ws.recv_type("message.new", timeout=20)
            received[i].append(frame["message"]["seq"])

    await asyncio.gather(*(burst(ws) for ws in sockets))
    await asyncio.gather(*(listen(i, ws) for i, ws in enumerate(sockets)))
    expected = list(range(1, per_socket * len(sockets) + 1))
    for seqs in received.values():
        assert sorted(seqs) == expected  # every seq, no gap, no repeat
        assert len(set(seqs)) == len(seqs)
    for ws in sockets:
        await ws.close()


async def inbox_shows(ws, message_id):
    """Wait for an ``inbox.update`` whose last message is ``message_id``."""
    while True:
        update = await ws.recv_type("inbox.update")
        if update["conversation"]["last_message"]["id"] == message_id:
            return update


async def test_two_processes_share_delivery_through_redis(asgi_server_factory, redis_url):
    one = asgi_server_factory(redis_url)
    two = asgi_server_factory(redis_url)
    alice, bob = signup(one.http), signup(two.http)
    alice_ws, _ = await open_dm(one, alice, bob)
    bob_ws, _ = await open_dm(two, bob, alice)
    bob_inbox = await WsClient.open(f"{two.ws}/ws/inbox/", bob["token"])
    alice_inbox = await WsClient.open(f"{one.ws}/ws/inbox/", alice["token"])
    await asyncio.sleep(0.2)
    sent_ids = []
    for i in range(5):
        sent_ids.append((await alice_ws.send_message(f"a{i}"))["id"])
        await inbox_shows(bob_inbox, sent_ids[-1])
        sent_ids.append((await bob_ws.send_message(f"b{i}"))["id"])
        await inbox_shows(alice_inbox, sent_ids[-1])
    # an HTTP send on process one reaches bob on process two
    status, body = http_json(
        "POST",
        f"{one.http}/api/dm/{bob['account']}/messages",
        {"client_id": str(uuid.uuid4()), "message": "via http"},
        alice["token"],
    )
    assert status == 201
    sent_ids.append(body["id"])
    # both sockets (the sender's own included) saw every message exactly once, in order
    for ws in (alice_ws, bob_ws):
        got = []
        try:
            for _ in sent_ids:
                got.append((await ws.recv_type("message.new", timeout=3))["message"]["id"])
        except TimeoutError:
            pass
        assert got == sent_ids
        with pytest.raises(TimeoutError):
            await ws.recv_type("message.new", timeout=0.5)
    for ws in (alice_ws, bob_ws, bob_inbox, alice_inbox):
        await ws.close()


@pytest.mark.parametrize("layer", ["pubsub", "redis"])
async def test_redis_outage_sends_still_acked_and_nothing_is_lost(
    asgi_server_factory, private_redis, layer
):
    server = asgi_server_factory(private_redis.url, CHANNEL_LAYER=layer)
    alice, bob = signup(server.http), signup(server.http)
    alice_ws, _ = await open_dm(server, alice, bob)
    bob_ws, _ = await open_dm(server, bob, alice)
    assert (await alice_ws.send_message("before"))["seq"] == 1
    assert (await bob_ws.recv_type("message.new"))["message"]["seq"] == 1

    private_redis.stop()
    for i in range(3):  # acked and stored during the outage
        ack = await asyncio.wait_for(alice_ws.send_message(f"during {i}"), 10)
        assert ack["type"] == "message.ack" and ack["seq"] == 2 + i
    status, body = http_json(
        "POST",
        f"{server.http}/api/dm/{bob['account']}/messages",
        {"client_id": str(uuid.uuid4()), "message": "during, http"},
        alice["token"],
    )
    assert status == 201 and body["seq"] == 5

    private_redis.start()  # same port, empty: every group membership is gone
    # the open socket rejoins its group and fills the gap from the database
    seqs = [(await bob_ws.recv_type("message.new", timeout=20))["message"]["seq"] for _ in range(4)]
    assert seqs == [2, 3, 4, 5]
    ack = await alice_ws.send_message("after")
    assert (await bob_ws.recv_type("message.new", timeout=10))["message"]["id"] == ack["id"]
    # and a client that reconnects with ?after= recovers everything, once, in order
    late, _ = await open_dm(server, bob, alice, "?after=1")
    replay = []
    while True:
        frame = await late.recv_type("message.new", "sync.done")
        if frame["type"] == "sync.done":
            break
        replay.append(frame["message"]["seq"])
    assert replay == [2, 3, 4, 5, 6]
    for ws in (alice_ws, bob_ws, late):
        await ws.close()


async def test_a_frame_over_the_1_mib_hard_cap_drops_the_connection(asgi_server):
    from websockets.exceptions import ConnectionClosed

    alice, bob = signup(asgi_server.http), signup(asgi_server.http)
    ws, _ = await open_dm(asgi_server, alice, bob, max_size=None)
    await ws.conn.send('{"type": "ping", "pad": "' + "x" * (1024 * 1024) + '"}')
    with pytest.raises(ConnectionClosed):
        await ws.recv(timeout=10)
    # a frame between 64 KiB and 1 MiB only gets an error, and nothing is stored
    ws, _ = await open_dm(asgi_server, alice, bob)
    await ws.send(
        {"type": "message.send", "client_id": str(uuid.uuid4()), "message": "x" * 100_000}
    )
    assert (await ws.recv_type("error"))["code"] == "too_large"
    assert (
        http_json(
            "GET", f"{asgi_server.http}/api/dm/{bob['account']}/messages", token=alice["token"]
        )[1]["results"]
        == []
    )
    await ws.close()
