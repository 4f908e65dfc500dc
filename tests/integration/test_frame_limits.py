"""Bounded work per frame (issue 18, 7): every frame type is rate-limited per socket,
and a replay is paged (the client asks for the next batch)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async

from direct_messages import services
from tests.conftest import token_for

pytestmark = pytest.mark.django_db(transaction=True)


async def open_dm(ws_connect, user, account, query=""):
    token = await sync_to_async(token_for)(user)
    headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode())]
    ws = await ws_connect(f"/ws/dm/{account}/{query}", headers=headers)
    assert (await ws.receive_json_from(timeout=5))["type"] == "room.joined"
    return ws


async def test_a_frame_flood_is_refused_past_the_burst_and_the_socket_stays_open(
    alice, bob, ws_connect, settings
):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "FRAME_RATE": 10.0, "FRAME_BURST": 40}
    ws = await open_dm(ws_connect, alice, "bob")
    for _ in range(41):
        await ws.send_json_to({"type": "ping"})
    answers = [await ws.receive_json_from(timeout=5) for _ in range(41)]
    assert [a["type"] for a in answers[:40]] == ["pong"] * 40
    assert answers[40]["type"] == "error" and answers[40]["code"] == "rate_limited"
    # A send past the budget is not applied, and its error names it.
    client_id = str(uuid.uuid4())
    await ws.send_json_to({"type": "message.send", "client_id": client_id, "message": "x"})
    refused = await ws.receive_json_from(timeout=5)
    assert (refused["code"], refused["ref"]) == ("rate_limited", client_id)
    await asyncio.sleep(0.25)  # the bucket refills
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "pong"


async def test_a_replay_comes_in_batches_the_client_asks_for(alice, bob, ws_connect, settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "REPLAY_BATCH": 5}

    def send_twelve() -> None:
        for i in range(12):
            services.message_send(sender=bob, recipient=alice, client_id=uuid.uuid4(), text=f"m{i}")

    await sync_to_async(send_twelve)()
    ws = await open_dm(ws_connect, alice, "bob", "?after=0")
    seqs: list[int] = []
    batches = []
    while True:
        frame = await ws.receive_json_from(timeout=5)
        if frame["type"] == "message.new":
            seqs.append(frame["message"]["seq"])
        elif frame["type"] == "sync.done":
            batches.append((frame["last_seq"], frame["more"]))
            if not frame["more"]:
                break
            await ws.send_json_to({"type": "sync", "after": frame["last_seq"]})
    assert seqs == list(range(1, 13))
    assert batches == [(5, True), (10, True), (12, False)]
