"""Web Push end to end: a daphne process takes the send, the task waits in the
database, a ``manage.py dm_worker`` process runs it and pushes to a push service
stand-in, which checks the VAPID token; the push is decrypted as the browser would."""

import asyncio
import os
import time
import uuid

import pytest

from tests.conftest import WORKER_PUSH_DELAY as DELAY
from tests.push_service import PushService
from tests.support import http_json, open_dm, signup

pytestmark = pytest.mark.live


def post(base, path, body, token):
    return http_json("POST", f"{base}{path}", body, token)


def test_offline_recipient_is_pushed_by_the_worker_and_a_read_message_is_not(
    asgi_server_factory, worker
):
    server = asgi_server_factory(os.environ.get("REDIS_URL") or None, DM_PUSH_DELAY_SECONDS=DELAY)
    alice, bob = signup(server.http), signup(server.http)
    status, key = http_json("GET", f"{server.http}/api/push/vapid-public-key", token=bob["token"])
    assert status == 200
    with PushService(key["key"]) as service:
        browser = service.subscription("bob")
        status, _ = post(server.http, "/api/push/subscriptions", browser.to_json(), bob["token"])
        assert status == 201
        message = {"client_id": str(uuid.uuid4()), "message": "hi"}
        assert (
            post(server.http, f"/api/dm/{alice['account']}/messages", message, bob["token"])[0]
            == 201
        )

        # Read at once (within the delay): no push. Then one left unread: one push.
        message = {"client_id": str(uuid.uuid4()), "message": "read at once"}
        status, sent = post(
            server.http, f"/api/dm/{bob['account']}/messages", message, alice["token"]
        )
        assert status == 201
        read = {"seq": sent["seq"]}
        assert post(server.http, f"/api/dm/{alice['account']}/read", read, bob["token"])[0] == 204
        message = {"client_id": str(uuid.uuid4()), "message": "are you there?"}
        started = time.monotonic()
        status, sent = post(
            server.http, f"/api/dm/{bob['account']}/messages", message, alice["token"]
        )
        assert status == 201

        (push,) = service.wait_for(1, timeout=30)
        assert time.monotonic() - started >= float(DELAY)  # the delay was kept
        shown = browser.decrypt(push.body)
        assert shown["body"] == "are you there?" and shown["message_id"] == sent["id"]
        assert shown["title"] == alice["account"]  # no display name: the handle
        assert shown["url"] == f"/direct/t/{alice['account']}/"
        assert shown["badge"] == 1 and shown["tag"] == sent["room"]
        assert push.claims["aud"] == service.origin
        # The one worker runs tasks in the order they are due: "read at once" was
        # decided before this one, and made no request.
        assert len(service.requests) == 1 and service.rejected == []


async def test_a_socket_open_on_the_conversation_holds_the_push_back(asgi_server_factory, worker):
    """The worker is another process than the server: it sees bob's open conversation
    through Redis, or on the embedded default through the database."""
    server = asgi_server_factory(os.environ.get("REDIS_URL") or None, DM_PUSH_DELAY_SECONDS=DELAY)
    alice, bob = signup(server.http), signup(server.http)
    status, key = http_json("GET", f"{server.http}/api/push/vapid-public-key", token=bob["token"])
    assert status == 200
    with PushService(key["key"]) as service:
        browser = service.subscription("bob")
        assert (
            post(server.http, "/api/push/subscriptions", browser.to_json(), bob["token"])[0] == 201
        )
        to_alice, to_bob = (
            f"/api/dm/{alice['account']}/messages",
            f"/api/dm/{bob['account']}/messages",
        )
        assert (
            post(
                server.http,
                to_alice,
                {"client_id": str(uuid.uuid4()), "message": "hi"},
                bob["token"],
            )[0]
            == 201
        )

        # bob has the conversation open (and reads nothing: this client sends no `read`).
        conn = await open_dm(f"{server.ws}/ws/dm/{alice['account']}/", bob["token"])
        body = {"client_id": str(uuid.uuid4()), "message": "while bob looks"}
        assert post(server.http, to_bob, body, alice["token"])[0] == 201
        await asyncio.to_thread(worker.wait_for_tasks, 1)  # its task has run
        await conn.close()
        await asyncio.sleep(0.5)  # the server has seen the socket go

        body = {"client_id": str(uuid.uuid4()), "message": "after bob left"}
        assert post(server.http, to_bob, body, alice["token"])[0] == 201
        (push,) = service.wait_for(1, timeout=30)
        assert browser.decrypt(push.body)["body"] == "after bob left"
        assert len(service.requests) == 1


def test_a_worker_killed_mid_push_loses_no_notification_and_sends_it_once(
    asgi_server_factory, worker_factory
):
    """The worker dies (SIGKILL, its work horse with it) while the push service has not
    answered its push. The next worker to start runs the task again, on the database
    backend as on RQ, and the push arrives once. Its own queue: a killed RQ worker's
    scheduler lock outlives it for a minute."""
    from tests.support import LIVE_TASK_QUEUE

    env = {"DM_PUSH_CLAIM_SECONDS": "1", "DM_TASK_QUEUE": f"{LIVE_TASK_QUEUE}-killed"}
    server = asgi_server_factory(
        os.environ.get("REDIS_URL") or None, DM_PUSH_DELAY_SECONDS=DELAY, **env
    )
    alice, bob = signup(server.http), signup(server.http)
    status, key = http_json("GET", f"{server.http}/api/push/vapid-public-key", token=bob["token"])
    assert status == 200
    with PushService(key["key"]) as service:
        browser = service.subscription("bob")
        assert (
            post(server.http, "/api/push/subscriptions", browser.to_json(), bob["token"])[0] == 201
        )
        service.stalls["bob"] = 1  # the first push is never answered
        first = worker_factory(**env)
        to_alice, to_bob = (
            f"/api/dm/{alice['account']}/messages",
            f"/api/dm/{bob['account']}/messages",
        )
        hi = {"client_id": str(uuid.uuid4()), "message": "hi"}
        assert post(server.http, to_alice, hi, bob["token"])[0] == 201
        sent = {"client_id": str(uuid.uuid4()), "message": "do not lose me"}
        assert post(server.http, to_bob, sent, alice["token"])[0] == 201
        deadline = time.monotonic() + 30
        while not service.requests:  # the worker is in the middle of the push
            assert time.monotonic() < deadline, first.log.read_text()[-2000:]
            time.sleep(0.05)
        first.kill()
        assert service.pushes == [] and "SUCCESSFUL" not in first.log.read_text()
        time.sleep(1.5)  # PUSH_CLAIM_SECONDS: the task and its push are taken as dead

        second = worker_factory(**env)
        (push,) = service.wait_for(1, timeout=30)
        assert browser.decrypt(push.body)["body"] == "do not lose me"
        second.wait_for_tasks(1)
        time.sleep(1)  # and nothing more comes
        assert len(service.pushes) == 1 and len(service.requests) == 2
        assert "run again" in second.log.read_text()
        assert "SUCCESSFUL" not in first.log.read_text()  # it did die, work horse and all
