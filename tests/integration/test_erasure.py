"""Erasing a user (issue 21, 6): after ``user.delete()``, or the user's own
``POST /api/me/erase``, nothing of theirs is left, rows or files, but the tombstones that
keep the other side's history whole; and the other side's history pages without a gap."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.test import Client
from websockets.exceptions import ConnectionClosed

from direct_messages import exports, moderation, services
from direct_messages.models import (
    DataExport,
    DirectMessage,
    DirectMessageAttachFiles,
    PushSubscription,
    Reaction,
    ReportedMessage,
    Room,
    RoomMember,
    UserSettings,
)
from tests.integration.test_attachments_storage import (  # noqa: F401  (fixtures)
    Backend,
    backend,
    eventually,
    http,
    moto_endpoint,
    multipart,
)
from tests.integration.test_exports import (  # noqa: F401  (immediate_tasks: a fixture)
    immediate_tasks,
    photo,
    send,
)
from tests.support import PASSWORD, WsClient, http_json, signup
from tests.unit.test_attachment_processing import png_bytes

pytestmark = pytest.mark.django_db(transaction=True)


def rows_pointing_at(user_id: Any) -> list[str]:
    """Every row of the app with a foreign key to the user ``user_id``: found from the
    models themselves, so that a table added later is checked too."""
    User = get_user_model()
    found = []
    for model in apps.get_app_config("direct_messages").get_models():
        for field in model._meta.concrete_fields:
            pointing = field.is_relation and field.related_model is User
            if pointing and model._default_manager.filter(**{field.attname: user_id}).exists():
                found.append(f"{model.__name__}.{field.name}")
    return found


def stored_names(rows) -> set[str]:
    return {name for row in rows for name in (row.file.name, row.thumbnail.name) if name}


def history(client: Client, room: str, limit: int = 3) -> list[dict]:
    """The whole history of ``room`` through ``/api/rooms/{room}/messages``, paged
    backwards ``limit`` at a time as a client scrolls up."""
    pages: list[dict] = []
    url = f"/api/rooms/{room}/messages?limit={limit}"
    while True:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        pages = body["results"] + pages
        if not body["has_more"]:
            return pages
        url = f"/api/rooms/{room}/messages?limit={limit}&before={body['results'][0]['seq']}"


def test_an_erased_user_leaves_tombstones_and_nothing_else(
    alice,
    bob,
    make_user,
    auth_client,
    backend: Backend,  # noqa: F811  (the fixture: local disk, then S3)
):
    carol = make_user("carol")
    alice_id = alice.pk
    first = send(alice, bob, "the secret word is xylophone", files=[photo("a.png")])
    send(bob, alice, "hi alice", files=[photo("b.png")], reply_to=first.pk)
    services.reaction_set(user=bob, room_key=first.room.key, message_id=first.pk, emoji_text="❤️")
    reply = send(alice, bob, "xylophone again", reply_to=first.pk)
    services.message_edit(user=alice, room_key=reply.room.key, message_id=reply.pk, text="edited")
    bobs = send(bob, alice, "bob's own words")
    services.reaction_set(user=alice, room_key=bobs.room.key, message_id=bobs.pk, emoji_text="😂")
    send(alice, bob, "", files=[photo("once.png")], view_once=1)
    send(alice, bob, "unread by bob")
    send(alice, carol, "to carol", files=[photo("c.png")])
    send(carol, alice, "from carol")
    services.user_block(user=alice, account="carol")
    services.settings_update(user=alice, previews=False)
    PushSubscription.objects.create(
        user=alice, endpoint="https://push.example.com/x", p256dh="k", auth="a"
    )
    report = moderation.report_create(
        user=bob, account="alice", reason="spam", note="", message_ids=[first.pk], block=False
    )
    export = exports.export_request(alice, enqueue=exports.export_build)
    export.refresh_from_db()
    assert export.status == "ready"

    alice_files = stored_names(DirectMessageAttachFiles.objects.filter(uploader=alice))
    bob_files = stored_names(DirectMessageAttachFiles.objects.filter(uploader=bob))
    report_copies = {
        copy["file"]
        for files in ReportedMessage.objects.filter(report=report).values_list(
            "attachments", flat=True
        )
        for copy in files
    }
    theirs = alice_files | report_copies | {export.file.name}
    assert len(alice_files) == 6 and len(report_copies) == 1
    assert all(default_storage.exists(name) for name in theirs | bob_files)
    room_key = first.room.key

    alice.delete()

    assert rows_pointing_at(alice_id) == []
    assert not UserSettings.objects.filter(user_id=alice_id).exists()
    assert not DataExport.objects.exists() and not ReportedMessage.objects.exists()
    assert [name for name in theirs if default_storage.exists(name)] == []
    assert all(default_storage.exists(name) for name in bob_files)  # bob's stay
    # Her messages are tombstones: seq and time, nothing else.
    tombstones = DirectMessage.objects.filter(sender__isnull=True)
    assert tombstones.count() == 5
    assert set(tombstones.values_list("message", flat=True)) == {""}
    assert not tombstones.filter(unsent_at__isnull=True).exists()
    assert not tombstones.filter(reply_to__isnull=False).exists()
    assert not Reaction.objects.filter(message__in=tombstones).exists()
    assert not DirectMessageAttachFiles.objects.filter(message__in=tombstones).exists()
    # Nothing of hers is found by search, in the database's own index either.
    assert not DirectMessage.objects.filter(message__icontains="xylophone").exists()
    as_bob = auth_client(bob)
    assert as_bob.get("/api/search?q=xylophone").json()["results"] == []

    # Bob's side: the conversation, with the placeholder, nothing unread, his last word.
    inbox = as_bob.get("/api/inbox").json()["results"]
    assert len(inbox) == 1
    (conversation,) = inbox
    assert conversation["with"] == {
        "id": None,
        "account": None,
        "name": "Deleted account",
        "avatar_url": None,
    }
    assert conversation["unread_count"] == 0
    assert conversation["last_message"]["message"] == "bob's own words"
    # His history pages without a gap: his messages whole, hers tombstones.
    messages = history(as_bob, room_key)
    assert [m["seq"] for m in messages] == list(range(1, 7))
    assert [(m["sender"], m["message"], m["unsent"]) for m in messages] == [
        (None, "", True),
        ("bob", "hi alice", False),
        (None, "", True),
        ("bob", "bob's own words", False),
        (None, "", True),
        (None, "", True),
    ]
    hi = next(m for m in messages if m["message"] == "hi alice")
    assert hi["reply_to"] == {
        "id": first.pk,
        "seq": 1,
        "sender": None,
        "message": "",
        "unsent": True,
    }
    assert len(hi["attachments"]) == 1 and hi["reactions"] == []
    assert all(m["attachments"] == [] and m["reactions"] == [] for m in messages if m["unsent"])
    # And his own export still renders it.
    data = exports.export_write(bob, io.BytesIO())
    assert [m["sender"] for m in data["conversations"][0]["messages"]][:1] == [None]
    # Carol's conversation with her too.
    carols = Room.objects.get(members__user=carol).key
    assert [m["sender"] for m in history(auth_client(carol), carols)] == [None, "carol"]


def test_a_conversation_goes_when_its_second_user_is_erased(alice, bob):
    send(alice, bob, "one")
    send(bob, alice, "two")
    alice.delete()
    assert Room.objects.count() == 1 and DirectMessage.objects.count() == 2
    bob.delete()
    assert not Room.objects.exists() and not DirectMessage.objects.exists()
    assert not RoomMember.objects.exists()


def test_another_users_room_is_not_found(alice, bob, make_user, auth_client):
    carol = make_user("carol")
    key = send(alice, bob, "private").room.key
    for path in (f"/api/rooms/{key}/messages", f"/api/rooms/{key}/messages?q=private"):
        response = auth_client(carol).get(path)
        assert response.status_code == 404, response.content
        assert response.json()["error"]["code"] == "not_found"
    assert auth_client(carol).get("/api/rooms/dm.nope/messages").status_code == 404
    assert auth_client(bob).get(f"/api/rooms/{key}/messages").json()["results"][0]["message"] == (
        "private"
    )


def test_erase_asks_for_the_password_then_signs_out_and_erases(alice, bob, auth_client):
    send(alice, bob, "hello")
    client = auth_client(alice)
    wrong = client.post("/api/me/erase", {"password": "not it"}, content_type="application/json")
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
    assert get_user_model().objects.filter(pk=alice.pk).exists()
    for body in ("{}", '{"password": 5}', "nope"):
        response = client.post("/api/me/erase", body, content_type="application/json")
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "invalid"

    response = client.post("/api/me/erase", {"password": PASSWORD}, content_type="application/json")
    assert response.status_code == 202 and response.json() == {"status": "pending"}
    assert not get_user_model().objects.filter(pk=alice.pk).exists()
    assert client.get("/api/inbox").status_code == 401  # the token is dead
    assert DirectMessage.objects.get().sender_id is None


def test_erase_is_404_unless_the_host_offers_it(alice, auth_client, settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "ERASE_ENDPOINT": False}
    response = auth_client(alice).post(
        "/api/me/erase", {"password": PASSWORD}, content_type="application/json"
    )
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert get_user_model().objects.filter(pk=alice.pk).exists()


def test_erase_is_throttled_against_password_guessing(alice, auth_client, settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "ERASE_RATE": "3/hour"}
    client = auth_client(alice)
    codes = [
        client.post(
            "/api/me/erase", {"password": f"guess{i}"}, content_type="application/json"
        ).status_code
        for i in range(5)
    ]
    assert codes == [403, 403, 403, 429, 429]
    assert get_user_model().objects.filter(pk=alice.pk).exists()


# --- Live: two users' real sockets, a real worker, local disk and S3 --------------------


@pytest.mark.live
async def test_erasure_over_http_closes_the_sockets_and_leaves_the_other_side_whole(
    asgi_server_factory: Callable[..., Any],
    worker_factory: Callable[..., Any],
    backend: Backend,  # noqa: F811  (the fixture)
):
    server = asgi_server_factory(os.environ.get("REDIS_URL") or None, **backend.env)
    worker = worker_factory(**backend.env)
    alice, bob = signup(server.http), signup(server.http)
    as_alice = {"Authorization": f"Bearer {alice['token']}"}
    body, content_type = multipart("file", "mine.png", png_bytes())
    status, _, raw = http(
        "POST", f"{server.http}/api/attachments", body, {**as_alice, "Content-Type": content_type}
    )
    assert status == 201, raw
    upload = json.loads(raw)
    to_bob = await WsClient.open(f"{server.ws}/ws/dm/{bob['account']}/", alice["token"])
    to_alice = await WsClient.open(f"{server.ws}/ws/dm/{alice['account']}/", bob["token"])
    try:
        joined = await to_alice.recv_type("room.joined")
        await to_bob.recv_type("room.joined")
        ack = await to_bob.send_message("a photo", attachment_ids=[upload["id"]])
        for i in range(4):
            await to_bob.send_message(f"alice {i}")
            await to_alice.send_message(f"bob {i}")
        seen = [(await to_alice.recv_type("message.new"))["message"] for _ in range(9)]
        photo_url = server.http + seen[0]["attachments"][0]["url"]
        assert len(backend.names()) == 2  # the photo and its thumbnail

        status, answer = http_json(
            "POST", f"{server.http}/api/me/erase", {"password": PASSWORD}, alice["token"]
        )
        assert status == 202, answer
        with pytest.raises(ConnectionClosed) as closed:  # signed out at once
            while True:
                await to_bob.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        worker.wait_for_tasks(1)

        assert await eventually(lambda: backend.names() == set())
        as_bob = {"Authorization": f"Bearer {bob['token']}"}
        assert http("GET", photo_url, headers=as_bob)[0] == 404
        room = joined["room"]
        messages: list[dict] = []
        url = f"{server.http}/api/rooms/{room}/messages?limit=4"
        while True:
            status, page = http_json("GET", url, token=bob["token"])
            assert status == 200, page
            messages = page["results"] + messages
            if not page["has_more"]:
                break
            url = f"{server.http}/api/rooms/{room}/messages?limit=4&before={messages[0]['seq']}"
        assert [m["seq"] for m in messages] == list(range(1, 10))
        assert [m["message"] for m in messages if m["sender"] == bob["account"]] == [
            f"bob {i}" for i in range(4)
        ]
        assert all(
            m["sender"] is None and m["unsent"] for m in messages if m["sender"] != bob["account"]
        )
        assert messages[0]["id"] == ack["id"] and messages[0]["attachments"] == []
        status, inbox = http_json("GET", f"{server.http}/api/inbox", token=bob["token"])
        assert inbox["results"][0]["with"]["account"] is None
        # Alice cannot come back: her token, her password.
        assert http_json("GET", f"{server.http}/api/inbox", token=alice["token"])[0] == 401
        status, _ = http_json(
            "POST",
            f"{server.http}/api/auth/token",
            {"account": alice["account"], "password": PASSWORD},
        )
        assert status == 401
    finally:
        await to_bob.close()
        await to_alice.close()
