"""Reports and moderation on live servers, from two users' real sockets and a moderator's
real admin session (issue 21, 1): the copy survives the sender's unsend, and a
suspension closes the sender's sockets on every process."""

from __future__ import annotations

import asyncio
import http.cookiejar
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid

import pytest
from websockets.exceptions import ConnectionClosed

from tests.support import PASSWORD, ROOT, LiveServer, WsClient, http_json, signup

pytestmark = pytest.mark.live


class AdminSession:
    """A moderator logged in to the Django admin of ``server``, as a browser would be:
    session and CSRF cookies, the login form, then the change list's action form."""

    def __init__(self, server: LiveServer, account: str) -> None:
        self.base = server.http
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        self.post("/admin/login/?next=/admin/", {"username": account, "password": PASSWORD})

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=30) as response:
            return response.read().decode()

    def post(self, path: str, fields: dict[str, object]) -> str:
        form = self.get(path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
        assert token, form[:500]
        body = urllib.parse.urlencode(
            {"csrfmiddlewaretoken": token.group(1), **fields}, doseq=True
        ).encode()
        with self.opener.open(self.base + path, body, timeout=30) as response:
            return response.read().decode()

    def action(self, name: str, report_id: int) -> str:
        return self.post(
            "/admin/direct_messages/report/", {"action": name, "_selected_action": [report_id]}
        )


def superuser(server: LiveServer) -> str:
    """A moderator made in the live server's database, by a process of its own."""
    account = f"mod{uuid.uuid4().hex[:8]}"
    code = (
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_superuser(account={account!r}, password={PASSWORD!r})"
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=server.env,
        check=True,
        capture_output=True,
    )
    return account


async def test_the_report_keeps_a_message_its_sender_unsends(asgi_server_factory):
    server = asgi_server_factory()
    alice, bob = signup(server.http), signup(server.http)
    to_bob = await WsClient.open(f"{server.ws}/ws/dm/{bob['account']}/", alice["token"])
    to_alice = await WsClient.open(f"{server.ws}/ws/dm/{alice['account']}/", bob["token"])
    for ws in (to_bob, to_alice):
        assert (await ws.recv_type("room.joined"))["type"] == "room.joined"
    ack = await to_bob.send_message("the words bob reports")
    bad_id = ack["id"]
    assert (await to_alice.recv_type("message.new"))["message"]["id"] == bad_id
    status, body = http_json(
        "POST",
        f"{server.http}/api/dm/{alice['account']}/report",
        {"reason": "harassment", "message_ids": [bad_id]},
        token=bob["token"],
    )
    assert status == 201, body
    await to_bob.send({"type": "message.unsend", "id": bad_id})
    unsent = (await to_alice.recv_type("message.updated"))["message"]
    assert unsent["unsent"] and unsent["message"] == ""
    moderator = AdminSession(server, await asyncio.to_thread(superuser, server))
    page = moderator.get(f"/admin/direct_messages/report/{body['id']}/change/")
    assert "the words bob reports" in page
    for ws in (to_bob, to_alice):
        await ws.close()


@pytest.mark.redis
async def test_a_suspension_from_the_admin_closes_the_senders_sockets_on_two_processes(
    asgi_server_factory, redis_url
):
    one, two = asgi_server_factory(redis_url), asgi_server_factory(redis_url)
    alice, bob = signup(one.http), signup(one.http)
    sockets = [
        await WsClient.open(f"{one.ws}/ws/dm/{bob['account']}/", alice["token"]),
        await WsClient.open(f"{two.ws}/ws/inbox/", alice["token"]),
    ]
    await sockets[0].recv_type("room.joined")
    assert (await sockets[0].send_message("scam link"))["type"] == "message.ack"
    status, body = http_json(
        "POST", f"{two.http}/api/dm/{alice['account']}/report", {"reason": "scam"}, bob["token"]
    )
    assert status == 201, body
    moderator = await asyncio.to_thread(lambda: AdminSession(one, superuser(one)))
    started = time.monotonic()
    await asyncio.to_thread(moderator.action, "suspend_reported", body["id"])
    for ws in sockets:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    elapsed = time.monotonic() - started
    print(f"\nadmin suspension -> sockets closed on two processes: {elapsed * 1000:.0f} ms")
    # The suspended account cannot come back, on either process.
    assert http_json("GET", f"{two.http}/api/inbox", token=alice["token"])[0] == 401
    report_page = moderator.get(f"/admin/direct_messages/report/{body['id']}/history/")
    assert "Suspended the reported user" in report_page
