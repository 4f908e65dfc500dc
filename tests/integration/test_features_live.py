"""Conversation features between two users' real sockets on a real server process."""

import asyncio
import signal
import time
import uuid

import pytest

from tests.support import LiveServer, WsClient, http_json, server_env, signup

pytestmark = pytest.mark.live

EDIT_WINDOW = 4


@pytest.fixture(scope="module")
def server(live_database_url):
    live = LiveServer(
        env=server_env(live_database_url, None, DM_EDIT_WINDOW_SECONDS=str(EDIT_WINDOW))
    )
    live.start()
    yield live
    live.stop()


@pytest.fixture
def pair(server):
    return signup(server.http), signup(server.http)


async def dm(server, me, other, query=""):
    ws = await WsClient.open(f"{server.ws}/ws/dm/{other['account']}/{query}", me["token"])
    joined = await ws.recv_type("room.joined")
    return ws, joined


def api(server, method, path, user, body=None):
    return http_json(method, f"{server.http}/api{path}", body, user["token"])


async def updated(ws, message_id, until=lambda message: True):
    """The first ``message.updated`` of ``message_id`` for which ``until`` holds."""
    while True:
        frame = await ws.recv_type("message.updated")
        if frame["message"]["id"] == message_id and until(frame["message"]):
            return frame["message"]


async def test_reactions_set_replace_clear_and_refusals(server, pair):
    alice, bob = pair
    a, _ = await dm(server, alice, bob)
    b, _ = await dm(server, bob, alice)
    ack = await a.send_message("react to me")
    await b.send({"type": "reaction.set", "id": ack["id"], "emoji": "❤️"})
    message = await updated(a, ack["id"])
    assert message["reactions"] == [{"account": bob["account"], "emoji": "❤️"}]
    await b.send(
        {"type": "reaction.set", "id": ack["id"], "emoji": "👍🏽"}
    )  # one per user: replaced
    assert (await updated(a, ack["id"]))["reactions"] == [
        {"account": bob["account"], "emoji": "👍🏽"}
    ]
    await a.send({"type": "reaction.set", "id": ack["id"], "emoji": "👨‍👩‍👧"})
    both = await updated(b, ack["id"], lambda m: len(m["reactions"]) == 2)
    assert {r["emoji"] for r in both["reactions"]} == {"👍🏽", "👨‍👩‍👧"}
    for bad in ["a", "❤️❤️", "", ":)"]:
        await b.send({"type": "reaction.set", "id": ack["id"], "emoji": bad})
        error = await b.recv_type("error")
        assert error["code"] == "invalid" and error["ref"] == ack["id"]
    await b.send({"type": "reaction.clear", "id": ack["id"]})
    cleared = await updated(
        a,
        ack["id"],
        lambda m: len(m["reactions"]) == 1 and m["reactions"][0]["account"] == alice["account"],
    )
    assert cleared["reactions"] == [{"account": alice["account"], "emoji": "👨‍👩‍👧"}]
    # a third user cannot react to (or learn of) a message of someone else's room
    carol = signup(server.http)
    c, _ = await dm(server, carol, alice)
    await c.send({"type": "reaction.set", "id": ack["id"], "emoji": "❤️"})
    assert (await c.recv_type("error"))["code"] == "not_found"
    history = api(server, "GET", f"/dm/{bob['account']}/messages", alice)[1]["results"]
    assert [r["account"] for r in history[0]["reactions"]] == [alice["account"]]
    for ws in (a, b, c):
        await ws.close()


async def test_replies_show_the_quoted_message_even_after_unsend(server, pair):
    alice, bob = pair
    a, _ = await dm(server, alice, bob)
    b, _ = await dm(server, bob, alice)
    original = await a.send_message("question?")
    reply = await b.send_message("answer", reply_to=original["id"])
    assert reply["type"] == "message.ack"
    new = None
    while new is None or new["message"]["id"] != reply["id"]:
        new = await a.recv_type("message.new")
    assert new["message"]["reply_to"] == {
        "id": original["id"],
        "seq": 1,
        "sender": alice["account"],
        "message": "question?",
        "unsent": False,
    }
    await a.send({"type": "message.unsend", "id": original["id"]})
    await updated(b, original["id"])
    late = await b.send_message("still replying", reply_to=original["id"])
    assert late["type"] == "message.ack"
    history = api(server, "GET", f"/dm/{alice['account']}/messages", bob)[1]["results"]
    assert history[1]["reply_to"]["unsent"] is True and history[1]["reply_to"]["message"] == ""
    # a reply_to from another room is invalid
    carol = signup(server.http)
    c, _ = await dm(server, carol, alice)
    error = await c.send_message("x", reply_to=original["id"])
    assert error["type"] == "error" and error["code"] == "invalid"
    for ws in (a, b, c):
        await ws.close()


async def test_edit_own_message_within_the_window_only(server, pair):
    alice, bob = pair
    a, _ = await dm(server, alice, bob)
    b, _ = await dm(server, bob, alice)
    ack = await a.send_message("typo")
    await a.send({"type": "message.edit", "id": ack["id"], "message": "fixed"})
    message = await updated(b, ack["id"])
    assert message["message"] == "fixed" and message["edited_at"] is not None
    await b.send({"type": "message.edit", "id": ack["id"], "message": "hijack"})
    assert (await b.recv_type("error"))["code"] == "forbidden"
    await a.send({"type": "message.edit", "id": ack["id"], "message": "x" * 1001})
    assert (await a.recv_type("error"))["code"] == "invalid"
    await asyncio.sleep(EDIT_WINDOW + 0.5)
    await a.send({"type": "message.edit", "id": ack["id"], "message": "too late"})
    error = await a.recv_type("error")
    assert error["code"] == "forbidden" and error["ref"] == ack["id"]
    history = api(server, "GET", f"/dm/{bob['account']}/messages", alice)[1]["results"]
    assert history[0]["message"] == "fixed"
    await a.close()
    await b.close()


async def test_unsend_removes_text_for_both_and_fixes_counts_and_inbox(server, pair):
    alice, bob = pair
    a, _ = await dm(server, alice, bob)
    first = await a.send_message("keep me")
    second = await a.send_message("oops")
    status, _ = api(server, "POST", f"/dm/{alice['account']}/accept", bob)
    assert status == 204
    inbox = await WsClient.open(f"{server.ws}/ws/inbox/", bob["token"])
    await a.send({"type": "message.unsend", "id": second["id"]})
    tombstone = await updated(a, second["id"])
    assert (
        tombstone["unsent"] is True
        and tombstone["message"] == ""
        and tombstone["attachments"] == []
    )
    assert tombstone["seq"] == second["seq"] and tombstone["sender"] == alice["account"]
    update = await inbox.recv_type("inbox.update")
    conversation = update["conversation"]
    assert conversation["unread_count"] == 1 and conversation["last_message"]["id"] == first["id"]
    history = api(server, "GET", f"/dm/{alice['account']}/messages", bob)[1]["results"]
    assert [(m["seq"], m["unsent"], m["message"]) for m in history] == [
        (1, False, "keep me"),
        (2, True, ""),
    ]
    b, _ = await dm(server, bob, alice)
    await b.send({"type": "message.unsend", "id": first["id"]})
    assert (await b.recv_type("error"))["code"] == "forbidden"
    for ws in (a, b, inbox):
        await ws.close()


async def test_read_and_seen_between_real_sockets(server, pair):
    alice, bob = pair
    a, _ = await dm(server, alice, bob)
    b, _ = await dm(server, bob, alice)
    await a.send_message("one")
    ack = await a.send_message("two")
    await b.send({"type": "read", "seq": ack["seq"]})
    seen = await a.recv_type("seen")
    assert seen["account"] == bob["account"] and seen["seq"] == 2
    await b.send({"type": "read", "seq": 1})  # never backwards: no new seen
    with pytest.raises(TimeoutError):
        await a.recv_type("seen", timeout=0.5)
    _, joined = await dm(server, alice, bob)
    assert joined["read"] == {alice["account"]: 2, bob["account"]: 2}
    await a.close()
    await b.close()


async def test_requests_until_accepted_or_replied(server, pair):
    alice, bob = pair
    a, _ = await dm(server, alice, bob)
    await a.send_message("hi stranger")
    primary = api(server, "GET", "/inbox", bob)[1]["results"]
    requests = api(server, "GET", "/inbox?folder=requests", bob)[1]["results"]
    assert primary == [] and [c["request"] for c in requests] == [True]
    assert api(server, "GET", "/inbox", alice)[1]["results"][0]["request"] is False
    b, _ = await dm(server, bob, alice)
    await b.send_message("hello back")  # replying accepts
    assert api(server, "GET", "/inbox?folder=requests", bob)[1]["results"] == []
    assert api(server, "GET", "/inbox", bob)[1]["results"][0]["request"] is False
    carol = signup(server.http)
    c, _ = await dm(server, carol, bob)
    await c.send_message("me too")
    assert api(server, "POST", f"/dm/{carol['account']}/accept", bob)[0] == 204
    assert [x["with"]["account"] for x in api(server, "GET", "/inbox", bob)[1]["results"]] == [
        carol["account"],
        alice["account"],
    ]
    assert api(server, "POST", f"/dm/{signup(server.http)['account']}/accept", bob)[0] == 404
    for ws in (a, b, c):
        await ws.close()


async def test_block_refuses_sends_closes_sockets_and_hides_presence(server, pair):
    alice, bob = pair
    a, _ = await dm(server, alice, bob)
    b, _ = await dm(server, bob, alice)
    await a.send_message("before the block")
    assert api(server, "GET", f"/users/{alice['account']}/presence", bob)[1]["online"] is True
    assert api(server, "POST", f"/users/{alice['account']}/block", bob)[0] == 204
    # open sockets of the pair are closed 4403, new ones too
    for ws in (a, b):
        with pytest.raises(Exception):  # noqa: B017 - ConnectionClosed
            while True:
                await ws.recv(timeout=5)
        assert ws.conn.close_code == 4403
    blocked, _ = await WsClient.open(f"{server.ws}/ws/dm/{bob['account']}/", alice["token"]), None
    with pytest.raises(Exception):  # noqa: B017
        await blocked.recv(timeout=5)
    assert blocked.conn.close_code == 4403
    status, body = api(
        server,
        "POST",
        f"/dm/{bob['account']}/messages",
        alice,
        {"client_id": str(uuid.uuid4()), "message": "let me in"},
    )
    assert status == 403 and body["error"]["code"] == "forbidden"
    # the blocker still reads the history; neither sees the other's presence
    history = api(server, "GET", f"/dm/{alice['account']}/messages", bob)[1]["results"]
    assert [m["message"] for m in history] == ["before the block"]
    hidden = {"online": False, "last_active_at": None}
    assert api(server, "GET", f"/users/{alice['account']}/presence", bob)[1] == hidden
    assert api(server, "GET", f"/users/{bob['account']}/presence", alice)[1] == hidden
    assert api(server, "POST", f"/users/{alice['account']}/unblock", bob)[0] == 204
    a, _ = await dm(server, alice, bob)
    assert (await a.send_message("after unblock"))["type"] == "message.ack"
    await a.close()


async def test_mute_keeps_the_row_but_stops_the_push(server, pair):
    alice, bob = pair
    a, _ = await dm(server, alice, bob)
    await a.send_message("first")
    api(server, "POST", f"/dm/{alice['account']}/accept", bob)
    assert api(server, "POST", f"/dm/{alice['account']}/mute", bob)[0] == 204
    inbox = await WsClient.open(f"{server.ws}/ws/inbox/", bob["token"])
    await a.send_message("muted message")
    with pytest.raises(TimeoutError):
        await inbox.recv_type("inbox.update", timeout=1)
    row = api(server, "GET", "/inbox", bob)[1]["results"][0]
    assert row["muted"] is True and row["unread_count"] == 2
    assert row["last_message"]["message"] == "muted message"
    assert api(server, "POST", f"/dm/{alice['account']}/unmute", bob)[0] == 204
    await inbox.recv_type("inbox.update")  # the unmute itself updates the row
    await a.send_message("loud again")
    update = await inbox.recv_type("inbox.update")
    assert update["conversation"]["last_message"]["message"] == "loud again"
    await a.close()
    await inbox.close()


async def test_clear_hides_history_for_me_only(server, pair):
    alice, bob = pair
    a, _ = await dm(server, alice, bob)
    await a.send_message("old secret")
    assert api(server, "POST", f"/dm/{bob['account']}/clear", alice)[0] == 204
    assert api(server, "GET", f"/dm/{bob['account']}/messages", alice)[1]["results"] == []
    assert api(server, "GET", "/inbox", alice)[1]["results"] == []
    assert api(server, "GET", "/search?q=secret", alice)[1]["results"] == []
    assert len(api(server, "GET", f"/dm/{alice['account']}/messages", bob)[1]["results"]) == 1
    await dm(server, alice, bob, "?after=0")
    b, _ = await dm(server, bob, alice)
    await b.send_message("new one")
    assert [
        m["message"]
        for m in api(server, "GET", f"/dm/{bob['account']}/messages", alice)[1]["results"]
    ] == ["new one"]
    assert len(api(server, "GET", "/inbox", alice)[1]["results"]) == 1
    await a.close()
    await b.close()


async def test_search_in_a_conversation_and_everywhere(server, pair):
    alice, bob = pair
    carol = signup(server.http)
    a, _ = await dm(server, alice, bob)
    ac, _ = await dm(server, alice, carol)
    for text in ["pizza tonight?", "no", "Pizza again", "salad"]:
        await a.send_message(text)
    await ac.send_message("pizza with carol")
    gone = await a.send_message("pizza unsent")
    await a.send({"type": "message.unsend", "id": gone["id"]})
    await updated(a, gone["id"])
    everywhere = api(server, "GET", "/search?q=pizza", alice)[1]
    assert [m["message"] for m in everywhere["results"]] == [
        "pizza with carol",
        "Pizza again",
        "pizza tonight?",
    ]
    in_room = api(server, "GET", f"/dm/{bob['account']}/messages?q=PIZZA&limit=1", alice)[1]
    assert [m["message"] for m in in_room["results"]] == ["Pizza again"]
    more = api(
        server,
        "GET",
        f"/dm/{bob['account']}/messages?q=pizza&limit=1&cursor={in_room['next_cursor']}",
        alice,
    )[1]
    assert [m["message"] for m in more["results"]] == ["pizza tonight?"] and more[
        "next_cursor"
    ] is None
    mallory = signup(server.http)
    assert api(server, "GET", "/search?q=pizza", mallory)[1]["results"] == []
    assert api(server, "GET", "/search?q=", alice)[0] == 400
    await a.close()
    await ac.close()


async def test_presence_online_offline_and_frames(server, pair):
    alice, bob = pair
    a, _ = await dm(server, alice, bob)
    await a.send_message("hi")
    stranger = signup(server.http)
    assert api(server, "GET", f"/users/{alice['account']}/presence", stranger)[0] == 404
    inbox = await WsClient.open(f"{server.ws}/ws/inbox/", bob["token"])
    assert api(server, "GET", f"/users/{alice['account']}/presence", bob)[1]["online"] is True
    await a.close()
    frame = await inbox.recv_type("presence")
    assert (
        frame["account"] == alice["account"]
        and frame["online"] is False
        and frame["last_active_at"]
    )
    _, body = api(server, "GET", f"/users/{alice['account']}/presence", bob)
    assert body["online"] is False and body["last_active_at"] == frame["last_active_at"]
    a2, _ = await dm(server, alice, bob)
    frame = await inbox.recv_type("presence")
    assert frame["online"] is True
    await a2.close()
    await inbox.close()


async def test_presence_across_processes_and_a_killed_process(asgi_server_factory, redis_url):
    ttl = "3"
    one = asgi_server_factory(redis_url, DM_PRESENCE_TTL_SECONDS=ttl)
    two = asgi_server_factory(redis_url, DM_PRESENCE_TTL_SECONDS=ttl)
    alice, bob = signup(one.http), signup(one.http)
    a1, _ = await dm(one, alice, bob)
    await a1.send_message("hi")
    a2 = await WsClient.open(f"{two.ws}/ws/inbox/", alice["token"])
    b_inbox = await WsClient.open(f"{one.ws}/ws/inbox/", bob["token"])
    await a1.close()  # alice still has a socket on process two: still online
    await asyncio.sleep(0.3)
    assert api(one, "GET", f"/users/{alice['account']}/presence", bob)[1]["online"] is True
    two.stop(signal.SIGKILL)  # dies without closing its sockets
    deadline = time.monotonic() + float(ttl) + 5
    while api(one, "GET", f"/users/{alice['account']}/presence", bob)[1]["online"]:
        assert time.monotonic() < deadline, "still online long after the expiry"
        await asyncio.sleep(0.25)
    await a2.close()
    await b_inbox.close()


async def test_typing_throttle_holds_across_processes(asgi_server_factory, redis_url):
    """One user typing in two tabs on two processes: the partner hears it once a second."""
    one = asgi_server_factory(redis_url)
    two = asgi_server_factory(redis_url)
    alice, bob = signup(one.http), signup(one.http)
    tab1, _ = await dm(one, alice, bob)
    tab2, _ = await dm(two, alice, bob)
    b, _ = await dm(one, bob, alice)
    for tab in (tab1, tab2, tab1, tab2):
        await tab.send({"type": "typing", "active": True})
    assert (await b.recv_type("typing")) == {
        "type": "typing",
        "account": alice["account"],
        "active": True,
    }
    await tab1.send({"type": "ping"})
    await tab1.recv_type("pong")
    await tab2.send({"type": "ping"})
    await tab2.recv_type("pong")  # every typing frame has been handled by now
    with pytest.raises(TimeoutError):
        await b.recv_type("typing", timeout=0.5)
    await tab2.send({"type": "typing", "active": False})  # stopping is never throttled
    assert (await b.recv_type("typing"))["active"] is False
    await tab1.send({"type": "typing", "active": True})  # and starting again is heard
    assert (await b.recv_type("typing"))["active"] is True
    for ws in (tab1, tab2, b):
        await ws.close()
