"""Abuse limits on live servers: send floods, socket floods, clients that never read.

Each test reports its figure on one ``FIGURE`` line (``pytest -s`` shows them;
docs/RELIABILITY.md cites them).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidMessage

from tests.support import WsClient, http_json, signup

pytestmark = pytest.mark.live

CAP = 50  # the default DM_MAX_SOCKETS_PER_USER


def figure(name: str, **values: Any) -> None:
    print(f"FIGURE {name} {json.dumps(values)}")


# Handshakes the server dropped without an HTTP answer, tried again (see the flood test).
dropped: list[str] = []


async def open_or_close_code(url: str, token: str) -> Any:
    """An open connection past ``room.joined`` / the first answer, or its close code."""
    for attempt in range(3):
        try:
            conn = await connect(url, additional_headers={"Authorization": f"Bearer {token}"})
            break
        except InvalidMessage:
            if attempt == 2:
                raise
            dropped.append(url)
            await asyncio.sleep(0.5)
    try:
        await conn.send('{"type": "ping"}')
        while json.loads(await asyncio.wait_for(conn.recv(), 30))["type"] != "pong":
            pass
        return conn
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


async def test_one_user_opening_1000_sockets_gets_the_cap_then_4429(asgi_server_factory):
    # The handshakes of a batch share one database thread: on a loaded CI machine 25 of
    # them have taken longer than daphne's default 5 s, which drops the connection.
    server = asgi_server_factory(args=("--websocket_connect_timeout", "60"))
    alice, bob = signup(server.http), signup(server.http)
    urls = [f"{server.ws}/ws/dm/{bob['account']}/", f"{server.ws}/ws/inbox/"]
    t0 = time.monotonic()
    results = []
    for batch in range(40):  # 1,000 sockets, 25 at a time
        results += await asyncio.gather(
            *(
                open_or_close_code(urls[i % 2], alice["token"])
                for i in range(25 * batch, 25 * batch + 25)
            )
        )
    opened = [r for r in results if not isinstance(r, int | None)]
    codes = [r for r in results if isinstance(r, int | None)]
    figure(
        "socket_flood",
        tried=len(results),
        open=len(opened),
        closed_4429=codes.count(4429),
        handshakes_dropped_and_retried=len(dropped),
        seconds=round(time.monotonic() - t0, 1),
    )
    assert len(opened) == CAP and codes == [4429] * (len(results) - CAP)
    # CI has seen a loaded machine's daphne drop a handshake of the flood without an
    # HTTP answer (not yet explained); a client tries again, and so does this test, a
    # bounded number of times: more than 1% of the flood is a failure.
    assert len(dropped) <= 10, dropped
    # another user is unaffected, and a closed socket frees its place
    assert not isinstance(
        await open_or_close_code(urls[0].replace(bob["account"], alice["account"]), bob["token"]),
        int | None,
    )
    await opened.pop().close()
    for _ in range(50):
        again = await open_or_close_code(urls[1], alice["token"])
        if not isinstance(again, int | None):
            break
        await asyncio.sleep(0.1)
    assert not isinstance(again, int | None), again
    for conn in [*opened, again]:
        await conn.close()


async def test_the_socket_cap_is_shared_by_processes(asgi_server_factory, redis_url):
    one = asgi_server_factory(redis_url, DM_MAX_SOCKETS_PER_USER="4")
    two = asgi_server_factory(redis_url, DM_MAX_SOCKETS_PER_USER="4")
    alice = signup(one.http)
    held = []
    for server in (one, two, one, two):
        conn = await open_or_close_code(f"{server.ws}/ws/inbox/", alice["token"])
        assert not isinstance(conn, int | None), conn
        held.append(conn)
    for server in (one, two):
        assert await open_or_close_code(f"{server.ws}/ws/inbox/", alice["token"]) == 4429
    for conn in held:
        await conn.close()


@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "no-redis"])
async def test_a_send_flood_is_limited_across_two_processes(
    asgi_server_factory, redis_url, with_redis
):
    """30 accepted sends per 10 s per user, wherever they land, Redis or not (the
    window is in the database)."""
    layer = redis_url if with_redis else None
    one = asgi_server_factory(layer, DM_SEND_RATE_LIMIT="30")
    two = asgi_server_factory(layer, DM_SEND_RATE_LIMIT="30")
    alice, bob = signup(one.http), signup(one.http)
    sockets = [
        await WsClient.open(f"{server.ws}/ws/dm/{bob['account']}/", alice["token"])
        for server in (one, two)
    ]
    for ws in sockets:
        await ws.recv_type("room.joined")
    answers = []
    for i in range(40):  # alternate processes, then one HTTP send on top
        answers.append(await sockets[i % 2].send_message(f"flood {i}"))
    status, body = http_json(
        "POST",
        f"{two.http}/api/dm/{bob['account']}/messages",
        {"client_id": str(uuid.uuid4()), "message": "http too"},
        alice["token"],
    )
    acked = [a for a in answers if a["type"] == "message.ack"]
    limited = [a for a in answers if a.get("code") == "rate_limited"]
    figure(
        "send_flood" if with_redis else "send_flood_without_redis",
        sent=len(answers) + 1,
        acked=len(acked),
        rate_limited=len(limited) + (status == 429),
    )
    assert len(acked) == 30 and len(limited) == 10
    assert status == 429 and body["error"]["code"] == "rate_limited"
    # a retry of a stored message is answered, not limited, and stores nothing new
    again = await sockets[0].send_message("flood 0", client_id=acked[0]["client_id"])
    assert again["type"] == "message.ack" and again["id"] == acked[0]["id"]
    history = http_json(
        "GET", f"{one.http}/api/dm/{bob['account']}/messages?limit=200", None, alice["token"]
    )[1]
    assert len(history["results"]) == 30
    for ws in sockets:
        await ws.close()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _raw_dm_socket(server: Any, account: str, token: str) -> socket.socket:
    """A WebSocket handshake over a raw TCP socket with a tiny receive buffer."""
    host, port = server.ws.removeprefix("ws://").split(":")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect((host, int(port)))
    raw.sendall(
        (
            f"GET /ws/dm/{account}/ HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    assert raw.recv(12) == b"HTTP/1.1 101"
    return raw


def _kernel_queued(raw: socket.socket) -> int:
    """Bytes of this connection held by the kernel: the server side's send queue plus
    this side's receive queue (from /proc/net/tcp), i.e. not in the server's memory."""
    mine = raw.getsockname()[1]
    theirs = raw.getpeername()[1]
    total = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
            tx, rx = (int(v, 16) for v in fields[4].split(":"))
            if (local, remote) == (theirs, mine):
                total += tx
            elif (local, remote) == (mine, theirs):
                total += rx
    return total


def _drain(raw: socket.socket, timeout: float) -> tuple[int, bool]:
    """Read until the server closes (True) or ``timeout`` passes; the bytes read."""
    raw.settimeout(timeout)
    got = 0
    try:
        while chunk := raw.recv(65536):
            got += len(chunk)
    except ConnectionResetError:  # dropped with data unread: the kernel resets
        pass
    except TimeoutError:
        return got, False
    return got, True


async def _flood(server: Any, sender: dict[str, Any], to: str, count: int) -> None:
    """``count`` messages of 1,000 four-byte characters, as fast as acks come back."""
    async with connect(
        f"{server.ws}/ws/dm/{to}/",
        additional_headers={"Authorization": f"Bearer {sender['token']}"},
        max_queue=None,  # this client reads everything at once: never a slow reader itself
    ) as conn:
        acked = 0
        for _ in range(count):
            await conn.send(
                json.dumps(
                    {"type": "message.send", "client_id": str(uuid.uuid4()), "message": "😀" * 1000}
                )
            )
        while acked < count:
            if json.loads(await asyncio.wait_for(conn.recv(), 60))["type"] == "message.ack":
                acked += 1


async def _edit_flood(server: Any, sender: dict[str, Any], to: str, count: int) -> None:
    """One message, then ``count`` edits of it (4 KB each), as fast as they are applied.

    ``message.updated`` events, unlike new messages, cannot be refilled from the
    database by ``seq``: whatever a slow socket receives of them was held in memory."""
    async with connect(
        f"{server.ws}/ws/dm/{to}/",
        additional_headers={"Authorization": f"Bearer {sender['token']}"},
        max_queue=None,
        ping_interval=None,  # the flood is under test, not this client's keepalive
    ) as conn:
        await conn.send(
            json.dumps({"type": "message.send", "client_id": str(uuid.uuid4()), "message": "draft"})
        )
        while (frame := json.loads(await asyncio.wait_for(conn.recv(), 60)))[
            "type"
        ] != "message.ack":
            pass
        for i in range(count):
            text = f"{i:05d}" + "😀" * 995
            await conn.send(
                json.dumps({"type": "message.edit", "id": frame["id"], "message": text})
            )
        updated = 0
        while updated < count:
            if json.loads(await asyncio.wait_for(conn.recv(), 60))["type"] == "message.updated":
                updated += 1


@pytest.mark.parametrize("layer", ["pubsub", "redis"])
async def test_a_client_that_never_reads_costs_the_production_server_bounded_memory(
    asgi_server_factory, redis_url, layer
):
    """uvicorn (the documented production server) applies backpressure: a socket whose
    reader stopped holds at most the transport's buffers, and the channel layer keeps at
    most 100 events for it (our bounded pub/sub layer, and ``RedisChannelLayer``'s
    capacity), dropping the rest."""
    # uvicorn's keepalive pings to the flooding socket queue behind its 6 MB of frames;
    # on a slow machine they took over 20 s to get through, and uvicorn closed the
    # socket under test with 1011. Keepalive is not what this test is about.
    server = asgi_server_factory(
        redis_url, server="uvicorn", CHANNEL_LAYER=layer, UVICORN_WS_PING_TIMEOUT="300"
    )
    alice, bob = signup(server.http), signup(server.http)
    raw = _raw_dm_socket(server, alice["account"], bob["token"])
    count = 1500  # 6 MB: more than the kernel's socket buffers can hold (4 MiB)
    await _edit_flood(server, alice, bob["account"], count)
    in_kernel = _kernel_queued(raw)
    buffered, _ = _drain(raw, 5)
    sent = count * 4100
    in_server = buffered - in_kernel
    figure(
        f"slow_reader_uvicorn_{layer}",
        events=count,
        bytes_to_it=sent,
        buffered=buffered,
        in_kernel=in_kernel,
        in_server=in_server,
    )
    # the layer's 100 events and the server's write buffer, not the 6 MB
    assert in_server < 150 * 4100, "the server queued everything for a client that never read"
    raw.close()


async def test_daphne_drops_a_client_that_never_reads(asgi_server_factory):
    """daphne (the embedded default) does not apply backpressure; it drops a socket that
    stops answering its pings, which bounds the buffer by time: by default a ping after
    20 idle seconds and 30 to answer it; here 2 and 3, so that the test takes seconds."""
    interval, timeout = 2, 3
    server = asgi_server_factory(
        args=("--ping-interval", str(interval), "--ping-timeout", str(timeout)),
        DM_SEND_RATE_LIMIT="100000",
    )
    alice, bob = signup(server.http), signup(server.http)
    raw = _raw_dm_socket(server, alice["account"], bob["token"])
    t0 = time.monotonic()
    await _flood(server, alice, bob["account"], 200)
    while time.monotonic() - t0 < interval + timeout + 2:  # not read: pings go unanswered
        await asyncio.sleep(0.5)
    buffered, closed = _drain(raw, 10)
    figure(
        "slow_reader_daphne",
        messages=200,
        buffered=buffered,
        dropped_within_s=round(time.monotonic() - t0),
    )
    assert closed, "daphne kept a socket that answered no ping"
    raw.close()
