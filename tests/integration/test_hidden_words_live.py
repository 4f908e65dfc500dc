"""Hidden words end to end: real sockets of two (and three) users on a daphne process,
the notification worker and a Web Push service stand-in. A request whose text matches
the recipient's hidden words lands in ``folder=hidden`` with no ``inbox.update`` and no
push; accepting moves it to primary; deleting removes it for the recipient only."""

import asyncio
import os

import pytest

from tests.conftest import WORKER_PUSH_DELAY as DELAY
from tests.push_service import PushService
from tests.support import WsClient, http_json, signup

pytestmark = pytest.mark.live


def api(server, method, path, user, body=None):
    return http_json(method, f"{server.http}/api{path}", body, user["token"])


def folder(server, user, name):
    status, body = api(server, "GET", f"/inbox?folder={name}", user)
    assert status == 200
    return [(c["with"]["account"], c["hidden"]) for c in body["results"]]


async def test_a_hidden_request_makes_no_inbox_update_and_no_push_until_accepted(
    asgi_server_factory, worker
):
    server = asgi_server_factory(os.environ.get("REDIS_URL") or None, DM_PUSH_DELAY_SECONDS=DELAY)
    alice, bob, carol = signup(server.http), signup(server.http), signup(server.http)
    status, settings = api(server, "PATCH", "/settings", bob, {"hidden_words": ["Free Money"]})
    assert status == 200 and settings["hidden_words"] == ["Free Money"]
    status, key = api(server, "GET", "/push/vapid-public-key", bob)
    assert status == 200
    with PushService(key["key"]) as service:
        browser = service.subscription("bob")
        assert api(server, "POST", "/push/subscriptions", bob, browser.to_json())[0] == 201
        inbox = await WsClient.open(f"{server.ws}/ws/inbox/", bob["token"])
        a = await WsClient.open(f"{server.ws}/ws/dm/{bob['account']}/", alice["token"])
        await a.recv_type("room.joined")

        ack = await a.send_message("FREE money, click here")
        assert ack["type"] == "message.ack"  # (and no notification task: it is hidden)
        # Control: carol's request is not hidden, and is both announced and pushed.
        c = await WsClient.open(f"{server.ws}/ws/dm/{bob['account']}/", carol["token"])
        await c.recv_type("room.joined")
        assert (await c.send_message("hello bob"))["type"] == "message.ack"
        update = await inbox.recv_type("inbox.update")
        assert update["conversation"]["with"]["account"] == carol["account"]
        assert update["conversation"]["request"] is True
        assert update["conversation"]["hidden"] is False
        (push,) = service.wait_for(1, timeout=30)
        assert browser.decrypt(push.body)["title"] == carol["account"]
        await asyncio.to_thread(worker.wait_for_tasks, 1)
        assert len(service.requests) == 1  # alice's hidden request pushed nothing
        assert not [f for f in inbox.backlog if f["type"] == "inbox.update"]  # nor announced

        assert folder(server, bob, "hidden") == [(alice["account"], True)]
        assert folder(server, bob, "requests") == [(carol["account"], False)]
        assert folder(server, bob, "primary") == []
        # Another message in the hidden request is no more visible than the first.
        assert (await a.send_message("hello?"))["type"] == "message.ack"
        with pytest.raises(TimeoutError):
            await inbox.recv_type("inbox.update", timeout=1)

        # Accepting moves it to primary, and its messages then announce themselves.
        assert api(server, "POST", f"/dm/{alice['account']}/accept", bob)[0] == 204
        update = await inbox.recv_type("inbox.update")
        assert update["conversation"]["request"] is False
        assert update["conversation"]["hidden"] is False
        assert folder(server, bob, "primary") == [(alice["account"], False)]
        assert folder(server, bob, "hidden") == []
        assert (await a.send_message("free money again"))["type"] == "message.ack"
        update = await inbox.recv_type("inbox.update")
        assert update["conversation"]["last_message"]["message"] == "free money again"
        # ... and notify (not "hello?": what arrived hidden never does). Every task of
        # this test has run: the live database's queue is shared, and one left pending
        # would be counted by the next test's worker.
        _, push = service.wait_for(2, timeout=30)
        assert browser.decrypt(push.body)["body"] == "free money again"
        await asyncio.to_thread(worker.wait_for_tasks, 2)
        assert len(service.requests) == 2
        for ws in (inbox, a, c):
            await ws.close()


async def test_deleting_a_hidden_request_removes_it_for_me_only(asgi_server):
    server = asgi_server
    alice, bob = signup(server.http), signup(server.http)
    assert api(server, "PATCH", "/settings", bob, {"hidden_words": ["spam"]})[0] == 200
    a = await WsClient.open(f"{server.ws}/ws/dm/{bob['account']}/", alice["token"])
    await a.recv_type("room.joined")
    for text in ("spam offer", "are you there?"):
        assert (await a.send_message(text))["type"] == "message.ack"
    assert folder(server, bob, "hidden") == [(alice["account"], True)]

    assert api(server, "POST", f"/dm/{alice['account']}/delete", bob)[0] == 204
    for name in ("primary", "requests", "hidden"):
        assert folder(server, bob, name) == []
    status, mine = api(server, "GET", f"/dm/{alice['account']}/messages", bob)
    assert status == 200 and mine["results"] == []
    # alice's side is intact: her history, her inbox, her socket.
    status, theirs = api(server, "GET", f"/dm/{bob['account']}/messages", alice)
    assert [m["message"] for m in theirs["results"]] == ["spam offer", "are you there?"]
    assert folder(server, alice, "primary") == [(bob["account"], False)]
    # Writing again brings it back to bob as a new request, filtered on its own words.
    inbox = await WsClient.open(f"{server.ws}/ws/inbox/", bob["token"])
    assert (await a.send_message("sorry, hello"))["type"] == "message.ack"
    update = await inbox.recv_type("inbox.update")
    assert update["conversation"]["request"] is True and update["conversation"]["hidden"] is False
    assert update["conversation"]["unread_count"] == 1
    assert folder(server, bob, "requests") == [(alice["account"], False)]
    status, mine = api(server, "GET", f"/dm/{alice['account']}/messages", bob)
    assert [m["message"] for m in mine["results"]] == ["sorry, hello"]
    # An accepted conversation cannot be deleted this way (clear it instead).
    assert api(server, "POST", f"/dm/{alice['account']}/accept", bob)[0] == 204
    status, body = api(server, "POST", f"/dm/{alice['account']}/delete", bob)
    assert status == 403 and body["error"]["code"] == "forbidden"
    for ws in (inbox, a):
        await ws.close()
