"""Hidden words, in process: the settings, where a request lands, accepting and deleting
a request (docs/protocol.md, "Hidden words"). The live test with real sockets, a worker
and a push service is test_hidden_words_live.py."""

import json
import uuid

import pytest

from direct_messages.models import DirectMessage, RoomMember

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("send_path")]


def send(client, account, text="hi", **extra):
    body = {"client_id": str(uuid.uuid4()), "message": text, **extra}
    return client.post(
        f"/api/dm/{account}/messages", json.dumps(body), content_type="application/json"
    )


def patch(client, body):
    return client.patch("/api/settings", json.dumps(body), content_type="application/json")


def folder(client, name):
    return [
        (c["with"]["account"], c["hidden"], c["request"])
        for c in client.get(f"/api/inbox?folder={name}").json()["results"]
    ]


@pytest.fixture
def bob_hides(bob, auth_client):
    response = patch(auth_client(bob), {"hidden_words": ["Spam", "free money"]})
    assert response.status_code == 200, response.content
    return auth_client(bob)


def test_settings_carry_hidden_words(bob, auth_client):
    client = auth_client(bob)
    assert client.get("/api/settings").json()["hidden_words"] == []
    response = patch(client, {"hidden_words": ["  Spam ", "SPAM", "free   money"]})
    assert response.status_code == 200
    assert response.json()["hidden_words"] == ["Spam", "free money"]
    assert client.get("/api/settings").json()["hidden_words"] == ["Spam", "free money"]
    # Another setting leaves the list alone; an empty list clears it.
    assert patch(client, {"previews": False}).json()["hidden_words"] == ["Spam", "free money"]
    assert patch(client, {"hidden_words": []}).json() == {
        "previews": False,
        "read_receipts": True,
        "hidden_words": [],
    }


@pytest.mark.parametrize(
    "value",
    [
        ["x" * 101],
        [""],
        ["   "],
        [f"w{i}" for i in range(201)],
        "spam",
        [1],
        [None],
        {"spam": True},
    ],
)
def test_bad_hidden_words_are_invalid_and_change_nothing(bob, auth_client, value):
    client = auth_client(bob)
    assert patch(client, {"hidden_words": ["keep"]}).status_code == 200
    response = patch(client, {"hidden_words": value})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert client.get("/api/settings").json()["hidden_words"] == ["keep"]


def test_a_matching_request_is_hidden_and_stays_hidden(alice, bob, auth_client, bob_hides):
    assert send(auth_client(alice), "bob", "cheap SPAM here").status_code == 201
    assert folder(bob_hides, "hidden") == [("alice", True, True)]
    assert folder(bob_hides, "requests") == [] and folder(bob_hides, "primary") == []
    # Later messages, matching or not, stay in the hidden request (as Instagram does).
    send(auth_client(alice), "bob", "free money!")
    send(auth_client(alice), "bob", "hello?")
    [row] = bob_hides.get("/api/inbox?folder=hidden").json()["results"]
    assert row["unread_count"] == 3 and row["last_message"]["message"] == "hello?"
    assert folder(bob_hides, "requests") == []
    # The sender sees an ordinary conversation of their own.
    assert folder(auth_client(alice), "primary") == [("bob", False, False)]


def test_a_request_that_does_not_match_is_an_ordinary_request(alice, bob, auth_client, bob_hides):
    send(auth_client(alice), "bob", "spammer, classy, free of money")  # no whole word
    assert folder(bob_hides, "requests") == [("alice", False, True)]
    assert folder(bob_hides, "hidden") == []


def test_a_matching_message_later_in_a_request_hides_it(alice, bob, auth_client, bob_hides):
    send(auth_client(alice), "bob", "hi there")
    assert folder(bob_hides, "requests") == [("alice", False, True)]
    send(auth_client(alice), "bob", "want free money?")
    assert folder(bob_hides, "hidden") == [("alice", True, True)]
    assert folder(bob_hides, "requests") == []


def test_accepted_conversations_are_never_filtered(alice, bob, auth_client, bob_hides):
    send(auth_client(bob), "alice", "hi alice")  # bob wrote first: not a request for him
    send(auth_client(alice), "bob", "spam spam spam")
    assert folder(bob_hides, "primary") == [("alice", False, False)]
    assert folder(bob_hides, "hidden") == []


def test_the_hosts_default_list_adds_to_the_users(alice, bob, make_user, auth_client, settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "HIDDEN_WORDS": ["Scam"]}
    carol = make_user("carol")
    patch(auth_client(bob), {"hidden_words": ["spam"]})
    send(auth_client(alice), "bob", "a SCAM for you")
    send(auth_client(carol), "bob", "spam for you")
    assert {a for a, *_ in folder(auth_client(bob), "hidden")} == {"alice", "carol"}
    # The user's own list is what the settings show.
    assert auth_client(bob).get("/api/settings").json()["hidden_words"] == ["spam"]


def test_new_words_apply_to_new_messages_only(alice, bob, auth_client):
    send(auth_client(alice), "bob", "spam before the filter")
    patch(auth_client(bob), {"hidden_words": ["spam"]})
    assert folder(auth_client(bob), "requests") == [("alice", False, True)]


def test_accepting_a_hidden_request_moves_it_to_primary(alice, bob, auth_client, bob_hides):
    send(auth_client(alice), "bob", "spam")
    assert bob_hides.post("/api/dm/alice/accept").status_code == 204
    assert folder(bob_hides, "primary") == [("alice", False, False)]
    assert folder(bob_hides, "hidden") == [] and folder(bob_hides, "requests") == []
    send(auth_client(alice), "bob", "more spam")  # accepted: no longer filtered
    assert folder(bob_hides, "primary") == [("alice", False, False)]


def test_replying_to_a_hidden_request_accepts_it(alice, bob, auth_client, bob_hides):
    send(auth_client(alice), "bob", "spam")
    send(bob_hides, "alice", "who are you?")
    assert folder(bob_hides, "primary") == [("alice", False, False)]
    assert folder(bob_hides, "hidden") == []


@pytest.mark.parametrize("hidden", [True, False])
def test_deleting_a_request_removes_it_for_me_only(alice, bob, auth_client, bob_hides, hidden):
    alice_client = auth_client(alice)
    send(alice_client, "bob", "spam" if hidden else "hello")
    send(alice_client, "bob", "anyone?")
    assert bob_hides.post("/api/dm/alice/delete").status_code == 204
    for name in ("primary", "requests", "hidden"):
        assert folder(bob_hides, name) == []
    assert bob_hides.get("/api/dm/alice/messages").json()["results"] == []
    assert bob_hides.get("/api/search?q=anyone").json()["results"] == []
    # The sender's side is as it was.
    history = alice_client.get("/api/dm/bob/messages").json()["results"]
    assert [m["message"] for m in history] == ["spam" if hidden else "hello", "anyone?"]
    assert folder(alice_client, "primary") == [("bob", False, False)]
    assert DirectMessage.objects.count() == 2
    # Deleting again is no error.
    assert bob_hides.post("/api/dm/alice/delete").status_code == 204
    # Writing again makes a new request, filtered on its own words.
    send(alice_client, "bob", "hi again")
    assert folder(bob_hides, "requests") == [("alice", False, True)]
    [row] = bob_hides.get("/api/inbox?folder=requests").json()["results"]
    assert row["unread_count"] == 1
    history = bob_hides.get("/api/dm/alice/messages").json()["results"]
    assert [m["message"] for m in history] == ["hi again"]


def test_only_a_request_can_be_deleted(alice, bob, make_user, auth_client):
    send(auth_client(alice), "bob", "hi")
    # alice wrote first: for her it is no request.
    response = auth_client(alice).post("/api/dm/bob/delete")
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    auth_client(bob).post("/api/dm/alice/accept")
    response = auth_client(bob).post("/api/dm/alice/delete")
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert auth_client(bob).post("/api/dm/nobody_here/delete").status_code == 404
    carol = make_user("carol")
    assert auth_client(bob).post(f"/api/dm/{carol.account}/delete").status_code == 404
    assert auth_client(bob).post("/api/dm/bob/delete").status_code == 403
    assert auth_client(bob).get("/api/dm/alice/delete").status_code == 405
    assert RoomMember.objects.filter(visible=False).count() == 0


def test_a_blocked_senders_request_can_be_deleted(alice, bob, auth_client):
    send(auth_client(alice), "bob", "hi")
    assert auth_client(bob).post("/api/users/alice/block").status_code == 204
    assert auth_client(bob).post("/api/dm/alice/delete").status_code == 204
    assert folder(auth_client(bob), "requests") == []


def test_the_hidden_folder_is_paged_like_the_others(make_user, bob, auth_client, bob_hides):
    senders = [make_user(f"spammer{i}") for i in range(3)]
    for sender in senders:
        send(auth_client(sender), "bob", "spam")
    page = bob_hides.get("/api/inbox?folder=hidden&limit=2").json()
    assert [c["with"]["account"] for c in page["results"]] == ["spammer2", "spammer1"]
    rest = bob_hides.get(f"/api/inbox?folder=hidden&limit=2&cursor={page['next_cursor']}")
    assert [c["with"]["account"] for c in rest.json()["results"]] == ["spammer0"]


async def next_of(ws, kind):
    while True:
        frame = await ws.receive_json_from(timeout=5)
        if frame["type"] == kind:
            return frame


async def test_what_the_sender_does_in_a_hidden_request_is_announced_to_nobody(
    alice, bob, ws_connect
):
    from asgiref.sync import sync_to_async

    from direct_messages import services

    await sync_to_async(services.settings_update)(user=bob, hidden_words=["spam"])
    inbox = await ws_connect("/ws/inbox/", bob)
    a = await ws_connect("/ws/dm/bob/", alice)
    await next_of(a, "room.joined")
    await a.send_json_to(
        {"type": "message.send", "client_id": str(uuid.uuid4()), "message": "spam"}
    )
    ack = await next_of(a, "message.ack")
    await a.send_json_to({"type": "message.edit", "id": ack["id"], "message": "spam!"})
    await next_of(a, "message.updated")
    await a.send_json_to({"type": "message.unsend", "id": ack["id"]})
    await next_of(a, "message.updated")
    assert await inbox.receive_nothing(timeout=0.5)
    # bob's own read there is his to see, placed in the hidden folder.
    await sync_to_async(services.room_mark_read)(user=bob, account="alice", seq=ack["seq"])
    update = await next_of(inbox, "inbox.update")
    assert update["conversation"]["hidden"] is True and update["conversation"]["request"] is True
