"""Read receipts off (issue 21), in process: the settings bodies and their refusals, the
send path's implied read on both ways a send is stored, and the data export. The
sockets between two users on a live server are in test_read_receipts_live.py."""

import io
import json
import uuid

import pytest

from direct_messages import exports, services

pytestmark = pytest.mark.django_db(transaction=True)


def send(sender, recipient, text="hi"):
    return services.message_send(
        sender=sender, recipient=recipient, client_id=uuid.uuid4(), text=text
    ).message


def patch(client, path, body):
    data = body if isinstance(body, str) else json.dumps(body)
    return client.patch(path, data, "application/json")


def invalid(response):
    return response.status_code == 400 and response.json()["error"]["code"] == "invalid"


def test_settings_carry_read_receipts_on_by_default(bob, auth_client):
    client = auth_client(bob)
    assert client.get("/api/settings").json() == {
        "previews": True,
        "read_receipts": True,
        "hidden_words": [],
    }
    response = patch(client, "/api/settings", {"read_receipts": False})
    assert response.status_code == 200
    assert response.json() == {"previews": True, "read_receipts": False, "hidden_words": []}
    assert patch(client, "/api/settings", {"previews": False}).json() == {
        "previews": False,
        "read_receipts": False,
        "hidden_words": [],
    }
    assert patch(client, "/api/settings", {"read_receipts": None}).json()["read_receipts"] is False
    assert patch(client, "/api/settings", {"read_receipts": True}).json()["read_receipts"] is True


@pytest.mark.parametrize("value", ["yes", "false", 0, 1, [], {}])
def test_settings_refuse_a_read_receipts_that_is_not_a_boolean(bob, auth_client, value):
    client = auth_client(bob)
    assert invalid(patch(client, "/api/settings", {"read_receipts": value}))
    assert client.get("/api/settings").json()["read_receipts"] is True


@pytest.mark.parametrize(
    "body",
    [{}, {"read_receipts": "off"}, {"read_receipts": 0}, {"read_receipts": []}, [], "{not json"],
    ids=["empty", "string", "integer", "list", "array-body", "malformed"],
)
def test_conversation_settings_refuse_bad_bodies(alice, bob, auth_client, body):
    send(alice, bob)
    client = auth_client(bob)
    assert invalid(patch(client, "/api/dm/alice/settings", body))
    assert client.get("/api/dm/alice/settings").json() == {"read_receipts": None}


def test_conversation_settings_of_a_conversation_i_do_not_have(alice, bob, make_user, auth_client):
    carol = make_user("carol")
    make_user("dave", is_active=False)
    client = auth_client(bob)
    for account in ("carol", "dave", "nobody_here"):
        for response in (
            client.get(f"/api/dm/{account}/settings"),
            patch(client, f"/api/dm/{account}/settings", {"read_receipts": False}),
        ):
            assert response.status_code == 404, (account, response.content)
            assert response.json()["error"]["code"] == "not_found"
    send(alice, carol)  # someone else's conversation is still not mine
    assert client.get("/api/dm/carol/settings").status_code == 404
    for response in (
        client.get("/api/dm/bob/settings"),
        patch(client, "/api/dm/bob/settings", {"read_receipts": False}),
    ):
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert auth_client(alice).get("/api/dm/carol/settings").json() == {"read_receipts": None}


def test_conversation_settings_need_credentials(alice, bob, client):
    send(alice, bob)
    assert client.get("/api/dm/alice/settings").status_code == 401
    assert patch(client, "/api/dm/alice/settings", {"read_receipts": False}).status_code == 401


def test_conversation_setting_is_set_and_reset(alice, bob, auth_client):
    send(alice, bob)
    client = auth_client(bob)
    for value in (False, True, None):
        response = patch(client, "/api/dm/alice/settings", {"read_receipts": value})
        assert response.status_code == 200 and response.json() == {"read_receipts": value}
        assert client.get("/api/dm/alice/settings").json() == {"read_receipts": value}
    # The other side's setting of the same conversation is its own.
    patch(client, "/api/dm/alice/settings", {"read_receipts": False})
    assert auth_client(alice).get("/api/dm/bob/settings").json() == {"read_receipts": None}


async def _frames_until(ws, frame_type):
    types = []
    while True:
        frame = await ws.receive_json_from(timeout=5)
        types.append(frame["type"])
        if frame["type"] == frame_type:
            return types


@pytest.mark.usefixtures("send_path")
@pytest.mark.parametrize("receipts", [True, False])
async def test_a_reply_to_unread_messages_is_seen_only_with_receipts_on(
    alice, bob, ws_connect, receipts
):
    """A send reads everything before it: with receipts on the other side gets ``seen``
    with it, off it gets the message alone (on both ways a send is stored)."""
    from asgiref.sync import sync_to_async

    await sync_to_async(send)(alice, bob, "first")
    await sync_to_async(services.settings_update)(user=bob, read_receipts=receipts)
    alice_ws = await ws_connect("/ws/dm/bob/", alice)
    bob_ws = await ws_connect("/ws/dm/alice/", bob)
    for ws in (alice_ws, bob_ws):
        assert (await ws.receive_json_from(timeout=5))["type"] == "room.joined"
    await bob_ws.send_json_to(
        {"type": "message.send", "client_id": str(uuid.uuid4()), "message": "reply"}
    )
    await _frames_until(bob_ws, "message.ack")
    await bob_ws.send_json_to({"type": "typing", "active": True})
    types = await _frames_until(alice_ws, "typing")
    assert ("seen" in types) is receipts, types


def test_the_export_holds_my_settings_and_each_conversations(alice, bob, make_user):
    carol = make_user("carol")
    send(alice, bob)
    send(alice, carol)
    services.settings_update(user=alice, read_receipts=False)
    services.conversation_settings_update(user=alice, account="bob", read_receipts=True)
    data = exports.export_write(alice, io.BytesIO())
    assert data["settings"] == {"previews": True, "read_receipts": False, "hidden_words": []}
    by_with = {c["with"]["account"]: c for c in data["conversations"]}
    assert by_with["bob"]["read_receipts"] is True
    assert by_with["carol"]["read_receipts"] is None
