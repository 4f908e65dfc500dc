"""The 1:1 consumer and the inbox consumer, driven as a client would drive them."""

import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from direct_messages.models import DirectMessage
from tests.conftest import token_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("send_path")]


async def joined(ws_connect, user, account, query=""):
    ws = await ws_connect(f"/ws/dm/{account}/{query}", user)
    frame = await ws.receive_json_from(timeout=5)
    assert frame["type"] == "room.joined", frame
    return ws, frame


async def recv_type(ws, *types, timeout=5):
    while True:
        frame = await ws.receive_json_from(timeout=timeout)
        if frame["type"] in types:
            return frame


def send_frame(text="hi", client_id=None, **extra):
    return {
        "type": "message.send",
        "client_id": client_id or str(uuid.uuid4()),
        "message": text,
        **extra,
    }


async def close_code(ws):
    while True:
        output = await ws.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            return output["code"]


async def test_room_joined_for_a_new_pair(alice, bob, ws_connect):
    _, frame = await joined(ws_connect, alice, "Bob")
    lo, hi = sorted((alice.pk, bob.pk))
    assert frame["room"] == f"dm.{lo}.{hi}" and frame["last_seq"] == 0
    assert frame["read"] == {"alice": 0, "bob": 0}
    assert frame["with"] == {"id": bob.pk, "account": "bob", "name": "Bob", "avatar_url": None}


@pytest.mark.parametrize(("account", "code"), [("nobody", 4404), ("alice", 4403)])
async def test_unknown_account_and_self_are_closed(alice, ws_connect, account, code):
    ws = await ws_connect(f"/ws/dm/{account}/", alice)
    assert await close_code(ws) == code


async def test_unauthenticated_dm_socket_is_closed_4401(ws_connect):
    ws = await ws_connect("/ws/dm/bob/", None, origin="http://127.0.0.1")
    assert await close_code(ws) == 4401


async def test_send_is_acked_after_commit_and_delivered_to_every_socket(alice, bob, ws_connect):
    alice_ws, _ = await joined(ws_connect, alice, "bob")
    alice_tab2, _ = await joined(ws_connect, alice, "bob")
    bob_ws, _ = await joined(ws_connect, bob, "alice")
    frame = send_frame("hello bob")
    await alice_ws.send_json_to(frame)
    # The sending socket gets the ack first, before its own copy (which is broadcast
    # before the ack is written, so that the recipient does not wait for the ack).
    ack = await alice_ws.receive_json_from(timeout=5)
    assert ack["type"] == "message.ack"
    assert ack["client_id"] == frame["client_id"] and ack["seq"] == 1
    stored = await sync_to_async(DirectMessage.objects.get)(pk=ack["id"])
    assert stored.message == "hello bob"
    for ws in (alice_ws, alice_tab2, bob_ws):
        new = await recv_type(ws, "message.new")
        assert (
            new["message"]["id"] == ack["id"] and new["message"]["created_at"] == ack["created_at"]
        )
        assert new["message"]["sender"] == "alice"
    for ws in (alice_ws, alice_tab2, bob_ws):  # delivered once: no second copy follows
        extra = []
        while not await ws.receive_nothing(timeout=0.2):
            extra.append((await ws.receive_json_from())["type"])
        assert "message.new" not in extra and "message.ack" not in extra, extra


async def test_retry_over_websocket_returns_the_original_ack_and_no_broadcast(
    alice, bob, ws_connect
):
    alice_ws, _ = await joined(ws_connect, alice, "bob")
    bob_ws, _ = await joined(ws_connect, bob, "alice")
    frame = send_frame("once")
    await alice_ws.send_json_to(frame)
    first = await recv_type(alice_ws, "message.ack")
    await recv_type(bob_ws, "message.new")
    await alice_ws.send_json_to(frame)
    second = await recv_type(alice_ws, "message.ack")
    assert second == first
    assert await bob_ws.receive_nothing(timeout=0.3)
    assert await sync_to_async(DirectMessage.objects.count)() == 1


async def test_retry_across_transports_is_one_message(alice, bob, ws_connect):
    alice_ws, _ = await joined(ws_connect, alice, "bob")
    frame = send_frame("both ways")
    await alice_ws.send_json_to(frame)
    ack = await recv_type(alice_ws, "message.ack")

    def http_retry():
        client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
        return client.post(
            "/api/dm/bob/messages", json.dumps(frame), content_type="application/json"
        )

    response = await sync_to_async(http_retry)()
    assert response.status_code == 200 and response.json()["id"] == ack["id"]
    assert await sync_to_async(DirectMessage.objects.count)() == 1


async def test_http_send_reaches_websocket_clients(alice, bob, ws_connect):
    bob_ws, _ = await joined(ws_connect, bob, "alice")
    inbox = await ws_connect("/ws/inbox/", bob)

    def http_send():
        client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
        body = {"client_id": str(uuid.uuid4()), "message": "over http"}
        return client.post(
            "/api/dm/bob/messages", json.dumps(body), content_type="application/json"
        )

    sent = (await sync_to_async(http_send)()).json()
    new = await recv_type(bob_ws, "message.new")
    assert new["message"] == sent
    update = await recv_type(inbox, "inbox.update")
    conversation = update["conversation"]
    assert conversation["with"]["account"] == "alice" and conversation["unread_count"] == 1
    assert conversation["request"] is True and conversation["last_message"]["id"] == sent["id"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid"),
        ("[1, 2]", "invalid"),
        ('{"type": "nope"}', "invalid"),
        ('{"no_type": 1}', "invalid"),
        ('{"type": "message.send", "client_id": "x", "message": "hi"}', "invalid"),
        (
            '{"type": "message.send", "client_id": "7d9e4f7e-1c2b-4f1a-9a55-0d6e1b2c3d4e", "message": 5}',
            "invalid",
        ),
        (
            '{"type": "message.send", "client_id": "7d9e4f7e-1c2b-4f1a-9a55-0d6e1b2c3d4e", "message": ""}',
            "invalid",
        ),
        ('{"type": "read", "seq": "many"}', "invalid"),
        ('{"type": "typing"}', "invalid"),
        ('{"type": "sync", "after": -1}', "invalid"),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_stays_usable(
    alice, bob, ws_connect, raw, code
):
    ws, _ = await joined(ws_connect, alice, "bob")
    await ws.send_to(text_data=raw)
    error = await recv_type(ws, "error")
    assert error["code"] == code and error["detail"]
    await ws.send_json_to({"type": "ping"})
    assert (await recv_type(ws, "pong"))["type"] == "pong"
    assert await sync_to_async(DirectMessage.objects.count)() == 0


async def test_error_ref_is_the_client_id(alice, bob, ws_connect):
    ws, _ = await joined(ws_connect, alice, "bob")
    client_id = str(uuid.uuid4())
    await ws.send_json_to(send_frame("x" * 1001, client_id))
    error = await recv_type(ws, "error")
    assert error == {
        "type": "error",
        "code": "invalid",
        "ref": client_id,
        "detail": "message: at most 1000 characters",
    }


async def test_binary_and_oversized_frames(alice, bob, ws_connect):
    ws, _ = await joined(ws_connect, alice, "bob")
    await ws.send_to(bytes_data=b"\x00\x01")
    assert (await recv_type(ws, "error"))["code"] == "invalid"
    big = json.dumps(send_frame("x" * (64 * 1024)))
    await ws.send_to(text_data=big)
    assert (await recv_type(ws, "error"))["code"] == "too_large"
    exact = '{"type": "ping", "pad": "' + "x" * (64 * 1024 - 27) + '"}'
    assert len(exact.encode()) == 64 * 1024
    await ws.send_to(text_data=exact)
    assert (await recv_type(ws, "pong", "error"))["type"] == "pong"
    assert await sync_to_async(DirectMessage.objects.count)() == 0


async def test_after_replays_missed_messages_then_sync_done(alice, bob, ws_connect):
    alice_ws, _ = await joined(ws_connect, alice, "bob")
    for i in range(5):
        await alice_ws.send_json_to(send_frame(f"m{i}"))
        await recv_type(alice_ws, "message.ack")
    bob_ws, frame = await joined(ws_connect, bob, "alice", "?after=2")
    assert frame["last_seq"] == 5
    seqs = [(await recv_type(bob_ws, "message.new"))["message"]["seq"] for _ in range(3)]
    assert seqs == [3, 4, 5]
    assert await recv_type(bob_ws, "sync.done") == {
        "type": "sync.done",
        "last_seq": 5,
        "more": False,
    }
    await bob_ws.send_json_to({"type": "sync", "after": 4})
    assert (await recv_type(bob_ws, "message.new"))["message"]["seq"] == 5
    assert (await recv_type(bob_ws, "sync.done"))["last_seq"] == 5


async def test_read_frame_sends_seen_to_the_other_side(alice, bob, ws_connect):
    alice_ws, _ = await joined(ws_connect, alice, "bob")
    bob_ws, _ = await joined(ws_connect, bob, "alice")
    await alice_ws.send_json_to(send_frame("read me"))
    await recv_type(alice_ws, "message.ack")
    await recv_type(bob_ws, "message.new")
    await bob_ws.send_json_to({"type": "read", "seq": 1})
    seen = await recv_type(alice_ws, "seen")
    assert seen["account"] == "bob" and seen["seq"] == 1 and seen["at"].endswith("Z")
    _, again = await joined(ws_connect, alice, "bob")
    assert again["read"] == {"alice": 1, "bob": 1}


async def test_typing_reaches_only_the_other_side_and_expires_on_disconnect(alice, bob, ws_connect):
    alice_ws, _ = await joined(ws_connect, alice, "bob")
    bob_ws, _ = await joined(ws_connect, bob, "alice")
    await alice_ws.send_json_to({"type": "typing", "active": True})
    assert await recv_type(bob_ws, "typing") == {
        "type": "typing",
        "account": "alice",
        "active": True,
    }
    await alice_ws.send_json_to({"type": "typing", "active": True})  # throttled
    assert await bob_ws.receive_nothing(timeout=0.3)
    assert await alice_ws.receive_nothing(timeout=0.1)
    await alice_ws.disconnect()
    assert await recv_type(bob_ws, "typing") == {
        "type": "typing",
        "account": "alice",
        "active": False,
    }
