"""Read receipts off (issue 21): between two users' real sockets on a real server
process, on the database and channel layer the run is configured with (SQLite and the
in-memory layer, or PostgreSQL and Redis)."""

import json
import os

import pytest

from tests.support import LiveServer, WsClient, http_json, server_env, signup

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def server(live_database_url):
    live = LiveServer(env=server_env(live_database_url, os.environ.get("REDIS_URL") or None))
    live.start()
    yield live
    live.stop()


@pytest.fixture
def pair(server):
    return signup(server.http), signup(server.http)


def api(server, method, path, user, body=None):
    return http_json(method, f"{server.http}/api{path}", body, user["token"])


async def dm(server, me, other):
    ws = await WsClient.open(f"{server.ws}/ws/dm/{other['account']}/", me["token"])
    joined = await ws.recv_type("room.joined")
    return ws, joined


async def joined_read(server, me, other):
    """The ``read`` map a new socket of ``me`` gets in ``room.joined``."""
    ws, joined = await dm(server, me, other)
    await ws.close()
    return joined["read"]


async def no_seen(reader_ws, watcher_ws):
    """Nothing ``seen`` reached ``watcher_ws`` for what ``reader_ws`` did so far: a
    typing frame sent after it arrives, and no ``seen`` came before it (the group keeps
    the order of one sender's events) nor a moment after."""
    await reader_ws.send({"type": "typing", "active": True})
    await watcher_ws.recv_type("typing")
    assert [f for f in watcher_ws.backlog if f["type"] == "seen"] == []
    with pytest.raises(TimeoutError):
        await watcher_ws.recv_type("seen", timeout=0.5)
    await reader_ws.send({"type": "typing", "active": False})
    await watcher_ws.recv_type("typing")


def unread(server, user, other):
    """``user``'s unread count in the conversation with ``other``, from the inbox."""
    for folder in ("primary", "requests"):
        for row in api(server, "GET", f"/inbox?folder={folder}", user)[1]["results"]:
            if row["with"]["account"] == other["account"]:
                return row["unread_count"]
    raise AssertionError("no such conversation")


def http_views(server, user, other):
    """Everything ``user`` reads over HTTP about the conversation with ``other``."""
    return [
        api(server, "GET", f"/dm/{other['account']}/messages", user)[1],
        api(server, "GET", f"/dm/{other['account']}/messages?after=0", user)[1],
        api(server, "GET", "/inbox", user)[1],
        api(server, "GET", "/inbox?folder=requests", user)[1],
    ]


def set_mine(server, user, value):
    status, body = api(server, "PATCH", "/settings", user, {"read_receipts": value})
    assert status == 200 and body["read_receipts"] is value, body
    return body


def set_conversation(server, user, other, value):
    path = f"/dm/{other['account']}/settings"
    status, body = api(server, "PATCH", path, user, {"read_receipts": value})
    assert status == 200 and body == {"read_receipts": value}, body
    assert api(server, "GET", path, user) == (200, {"read_receipts": value})


async def test_receipts_off_no_seen_and_no_read_position_for_the_other_side(server, pair):
    alice, bob = pair
    assert api(server, "GET", "/settings", bob)[1]["read_receipts"] is True  # the default
    body = set_mine(server, bob, False)
    assert body["previews"] is True  # the other settings are left as they were
    assert api(server, "GET", "/settings", bob) == (200, body)

    a, _ = await dm(server, alice, bob)
    b, _ = await dm(server, bob, alice)
    await a.send_message("one")
    two = await a.send_message("two")
    await b.recv_type("message.new")
    assert unread(server, bob, alice) == 2
    before = http_views(server, alice, bob)

    # A read over the socket, and one over HTTP: my cursor moves, nobody is told.
    await b.send({"type": "read", "seq": 1})
    await no_seen(b, a)
    assert unread(server, bob, alice) == 1  # my own count still works
    assert api(server, "POST", f"/dm/{alice['account']}/read", bob, {"seq": two["seq"]})[0] == 204
    await no_seen(b, a)
    assert unread(server, bob, alice) == 0
    assert (await joined_read(server, bob, alice))[bob["account"]] == 2  # mine, for me

    # The other side's views: no read position of mine in room.joined, nothing over
    # HTTP that my reads changed, and no field of any read position at all.
    read = await joined_read(server, alice, bob)
    assert read == {alice["account"]: 2, bob["account"]: None}
    after = http_views(server, alice, bob)
    assert after == before
    assert '"read' not in json.dumps(after) and "seen" not in json.dumps(after)

    # My reply after unread messages implies I read them: still no seen.
    three = await a.send_message("three")
    await b.recv_type("message.new")
    assert unread(server, bob, alice) == 1
    await b.send_message("a reply")
    await a.recv_type("message.new")
    await no_seen(b, a)
    assert unread(server, bob, alice) == 0
    assert (await joined_read(server, alice, bob))[bob["account"]] is None

    # Receipts off are mine only: I still see where alice has read.
    await a.send({"type": "read", "seq": three["seq"] + 1})
    seen = await b.recv_type("seen")
    assert seen["account"] == alice["account"] and seen["seq"] == 4
    assert (await joined_read(server, bob, alice)) == {alice["account"]: 4, bob["account"]: 4}
    await a.close()
    await b.close()


async def test_a_conversation_setting_overrides_mine_both_ways(server, pair):
    alice, bob = pair
    carol = signup(server.http)
    b_alice, _ = await dm(server, bob, alice)
    b_carol, _ = await dm(server, bob, carol)
    await b_alice.send_message("hi alice")
    await b_carol.send_message("hi carol")
    a, _ = await dm(server, alice, bob)
    c, _ = await dm(server, carol, bob)
    for account in (alice["account"], carol["account"]):
        assert api(server, "GET", f"/dm/{account}/settings", bob) == (
            200,
            {"read_receipts": None},  # no setting of its own: follows mine
        )

    # Mine off, on for alice: alice sees my reads, carol does not.
    set_mine(server, bob, False)
    set_conversation(server, bob, alice, True)
    await a.send_message("from alice")
    await c.send_message("from carol")
    await b_alice.recv_type("message.new")
    await b_carol.recv_type("message.new")
    await b_alice.send({"type": "read", "seq": 2})
    await b_carol.send({"type": "read", "seq": 2})
    seen = await a.recv_type("seen")
    assert seen["account"] == bob["account"] and seen["seq"] == 2
    await no_seen(b_carol, c)
    assert (await joined_read(server, alice, bob))[bob["account"]] == 2
    assert (await joined_read(server, carol, bob))[bob["account"]] is None

    # Mine on, off for carol: the other way round.
    set_mine(server, bob, True)
    set_conversation(server, bob, alice, None)
    set_conversation(server, bob, carol, False)
    await a.send_message("again from alice")
    await c.send_message("again from carol")
    await b_alice.recv_type("message.new")
    await b_carol.recv_type("message.new")
    await b_alice.send({"type": "read", "seq": 3})
    await b_carol.send({"type": "read", "seq": 3})
    seen = await a.recv_type("seen")
    assert seen["account"] == bob["account"] and seen["seq"] == 3
    await no_seen(b_carol, c)
    assert (await joined_read(server, alice, bob))[bob["account"]] == 3
    assert (await joined_read(server, carol, bob))[bob["account"]] is None
    # Unread counts are mine in every case.
    assert unread(server, bob, alice) == 0 and unread(server, bob, carol) == 0
    for ws in (a, b_alice, b_carol, c):
        await ws.close()


async def test_turning_receipts_back_on(server, pair):
    alice, bob = pair
    a, _ = await dm(server, alice, bob)
    b, _ = await dm(server, bob, alice)
    await a.send_message("one")
    await b.recv_type("message.new")
    set_mine(server, bob, False)
    await b.send({"type": "read", "seq": 1})
    await no_seen(b, a)
    assert (await joined_read(server, alice, bob))[bob["account"]] is None

    # On again: my read position shows again, and my next read is seen.
    set_mine(server, bob, True)
    assert (await joined_read(server, alice, bob))[bob["account"]] == 1
    await a.send_message("two")
    await b.recv_type("message.new")
    await b.send({"type": "read", "seq": 2})
    seen = await a.recv_type("seen")
    assert seen["account"] == bob["account"] and seen["seq"] == 2

    # The same through the conversation's own setting.
    set_conversation(server, bob, alice, False)
    await a.send_message("three")
    await b.recv_type("message.new")
    await b.send({"type": "read", "seq": 3})
    await no_seen(b, a)
    assert (await joined_read(server, alice, bob))[bob["account"]] is None
    set_conversation(server, bob, alice, True)
    await a.send_message("four")
    await b.recv_type("message.new")
    await b.send({"type": "read", "seq": 4})
    assert (await a.recv_type("seen"))["seq"] == 4
    assert (await joined_read(server, alice, bob))[bob["account"]] == 4
    await a.close()
    await b.close()
