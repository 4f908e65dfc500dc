"""A client that closes while the server still has frames to send it (found by
``make soak``: reconnect churn crashed consumers with daphne's "Attempt to send on a
closed protocol"). The consumer must not crash: it would skip its cleanup, leaving the
user counted as online (and toward the per-user socket cap) until the presence TTL,
and its channel in the pair's group."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from tests.support import WsClient, http_json, signup

pytestmark = [pytest.mark.live, pytest.mark.timeout(90)]


async def test_closing_with_replies_pending_does_not_crash_the_consumer(asgi_server):
    alice, bob = signup(asgi_server.http), signup(asgi_server.http)
    status, _ = http_json(
        "POST",
        f"{asgi_server.http}/api/dm/{bob['account']}/messages",
        {"client_id": str(uuid.uuid4()), "message": "hi"},
        alice["token"],
    )
    assert status == 201
    for _ in range(15):
        ws = await WsClient.open(f"{asgi_server.ws}/ws/dm/{alice['account']}/", bob["token"])
        assert (await ws.recv())["type"] == "room.joined"
        for _ in range(100):  # replies still to send when the close arrives
            await ws.conn.send(json.dumps({"type": "ping"}))
        await ws.conn.close()
    # every socket is gone, and each consumer cleaned up after itself
    deadline = time.monotonic() + 10
    while True:
        status, body = http_json(
            "GET", f"{asgi_server.http}/api/users/{bob['account']}/presence", token=alice["token"]
        )
        assert status == 200, body
        if not body["online"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert body["online"] is False, "a crashed consumer left bob online"
    log = asgi_server.log_path.read_text(errors="replace")
    assert "closed protocol" not in log and "Exception inside application" not in log, log[-3000:]
