"""Mobile push end to end: a daphne process takes the device registrations and the
send, the task waits in the database, a ``manage.py dm_worker`` process runs it and
pushes through the HTTPS proxy to the FCM and APNs stand-ins, which check each request
as the real services do."""

import os
import time
import uuid

import pytest

from tests.conftest import WORKER_PUSH_DELAY as DELAY
from tests.mobile_push_service import MobilePushService, apns_token, fcm_token
from tests.support import http_json, signup

pytestmark = pytest.mark.live


@pytest.fixture
def mobile(tmp_path):
    with MobilePushService(tmp_path) as service:
        yield service


@pytest.fixture
def worker(mobile, worker_factory):
    """The worker, with the mobile push stand-ins' settings and proxy."""
    return worker_factory(**mobile.process_environ())


def post(base, path, body, token, method="POST"):
    return http_json(method, f"{base}{path}", body, token)


def test_devices_are_pushed_by_the_worker_and_a_gone_token_is_forgotten(
    asgi_server_factory, mobile, worker
):
    server = asgi_server_factory(
        os.environ.get("REDIS_URL") or None,
        DM_PUSH_DELAY_SECONDS=DELAY,
        **mobile.process_environ(),
    )
    alice, bob = signup(server.http), signup(server.http)
    android, iphone, old_iphone = fcm_token(), apns_token(), apns_token()
    for platform, token in (("fcm", android), ("apns", iphone), ("apns", old_iphone)):
        body = {"platform": platform, "token": token}
        assert post(server.http, "/api/push/devices", body, bob["token"])[0] == 201
    mobile.answers[old_iphone] = [410]  # the app was deleted from that phone
    hello = {"client_id": str(uuid.uuid4()), "message": "hi"}
    assert post(server.http, f"/api/dm/{alice['account']}/messages", hello, bob["token"])[0] == 201

    started = time.monotonic()
    message = {"client_id": str(uuid.uuid4()), "message": "are you there?"}
    status, sent = post(server.http, f"/api/dm/{bob['account']}/messages", message, alice["token"])
    assert status == 201
    pushes = mobile.wait_for(2, timeout=30)
    assert time.monotonic() - started >= float(DELAY)  # the delay was kept
    worker.wait_for_tasks(1)
    assert mobile.rejected == []
    by_platform = {p.platform: p for p in pushes}
    fcm = by_platform["fcm"].body["message"]
    assert fcm["token"] == android
    assert fcm["android"]["notification"]["body"] == "are you there?"
    assert fcm["android"]["collapse_key"] == sent["room"]
    assert fcm["data"]["url"] == f"/direct/t/{alice['account']}/"
    assert fcm["data"]["message_id"] == str(sent["id"])
    apns = by_platform["apns"]
    assert apns.token == iphone and apns.headers["apns-collapse-id"] == sent["room"]
    assert apns.body["aps"]["alert"] == {"title": alice["account"], "body": "are you there?"}
    assert apns.body["aps"]["badge"] == 1
    assert sorted(mobile.requests) == sorted(
        [("fcm", android), ("apns", iphone), ("apns", old_iphone)]
    )

    # The gone token was deleted: registering it again makes a new row (201).
    body = {"platform": "apns", "token": old_iphone}
    assert post(server.http, "/api/push/devices", body, bob["token"])[0] == 201
    # Logging out deletes the device: the next message reaches only the other two.
    for platform, token in (("apns", old_iphone), ("apns", iphone)):
        body = {"platform": platform, "token": token}
        assert post(server.http, "/api/push/devices", body, bob["token"], "DELETE")[0] == 204
    message = {"client_id": str(uuid.uuid4()), "message": "still there?"}
    assert (
        post(server.http, f"/api/dm/{bob['account']}/messages", message, alice["token"])[0] == 201
    )
    mobile.wait_for(3, timeout=30)
    worker.wait_for_tasks(2)
    assert [p.platform for p in mobile.pushes[2:]] == ["fcm"] and len(mobile.requests) == 4
