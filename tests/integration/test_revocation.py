"""Credentials can be revoked, and the revocation reaches open sockets (issue 18, 1-3):
each test is the attack that worked before."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from typing import Any

import jwt
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from websockets.exceptions import ConnectionClosed

from direct_messages.models import DirectMessage
from tests.conftest import PASSWORD, token_for
from tests.support import ROOT, WsClient, http_json, signup

pytestmark = pytest.mark.django_db(transaction=True)

# The development key that was in the repository until 0.2: anyone could sign with it.
REPOSITORY_KEY = "django-insecure-instamg-development-key-never-use-in-production"


def bearer(token: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def test_a_token_forged_with_the_old_repository_key_is_refused(alice):
    assert settings.SECRET_KEY != REPOSITORY_KEY
    now = int(time.time())
    for audience in ("instamg", "direct_messages"):
        claims = {"sub": str(alice.pk), "iat": now, "exp": now + 600, "aud": audience}
        claims |= {"jti": "x", "ver": 0, "pwd": "x"}
        forged = jwt.encode(claims, REPOSITORY_KEY, algorithm="HS256")
        assert bearer(forged).get("/api/users/me").status_code == 401


def test_logout_revokes_the_presented_token_only(alice):
    phone, laptop = token_for(alice), token_for(alice)
    assert (
        bearer(phone).post("/api/auth/logout", {}, content_type="application/json").status_code
        == 204
    )
    refused = bearer(phone).get("/api/users/me")
    assert refused.status_code == 401 and refused.json()["error"]["detail"] == "token revoked"
    assert bearer(laptop).get("/api/users/me").status_code == 200


def test_logout_all_revokes_every_token(alice):
    phone, laptop = token_for(alice), token_for(alice)
    body = {"all": True}
    assert (
        bearer(phone).post("/api/auth/logout", body, content_type="application/json").status_code
        == 204
    )
    assert bearer(laptop).get("/api/users/me").status_code == 401
    assert bearer(token_for(alice)).get("/api/users/me").status_code == 200  # a new login works


def test_a_password_change_revokes_the_other_tokens_and_sessions(alice):
    stolen = token_for(alice)
    browser = Client()
    browser.force_login(alice)
    body = {"old_password": PASSWORD, "new_password": "a brand new passphrase"}
    changed = bearer(token_for(alice)).post(
        "/api/auth/password", body, content_type="application/json"
    )
    assert changed.status_code == 200, changed.content
    assert bearer(stolen).get("/api/users/me").json()["error"]["detail"].startswith("token revoked")
    assert browser.get("/api/users/me").status_code == 401
    assert bearer(changed.json()["token"]).get("/api/users/me").status_code == 200
    # A password changed elsewhere (the admin, a reset) revokes tokens just the same.
    newer = changed.json()["token"]
    alice.refresh_from_db()
    alice.set_password("changed in the admin")
    alice.save()
    assert bearer(newer).get("/api/users/me").status_code == 401


def test_a_password_change_needs_the_old_password_and_a_strong_new_one(alice):
    client = bearer(token_for(alice))
    wrong = client.post(
        "/api/auth/password",
        {"old_password": "nope", "new_password": "a brand new passphrase"},
        content_type="application/json",
    )
    assert wrong.status_code == 403
    weak = client.post(
        "/api/auth/password",
        {"old_password": PASSWORD, "new_password": "123"},
        content_type="application/json",
    )
    assert weak.status_code == 400 and weak.json()["error"]["code"] == "invalid"


# --- Open sockets -------------------------------------------------------------------


async def closed_with(ws: Any, timeout: float = 2.0) -> int:
    """The close code the socket gets within ``timeout`` seconds (frames before it skipped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        output = await ws.receive_output(timeout=max(remaining, 0.01))
        if output["type"] == "websocket.close":
            return int(output["code"])


async def open_dm(ws_connect, token: str, account: str) -> Any:
    headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode())]
    ws = await ws_connect(f"/ws/dm/{account}/", headers=headers)
    assert (await ws.receive_json_from(timeout=5))["type"] == "room.joined"
    return ws


async def test_deactivation_closes_the_users_open_sockets(alice, bob, ws_connect):
    ws = await open_dm(ws_connect, await sync_to_async(token_for)(alice), "bob")
    inbox_headers = [
        (b"host", b"127.0.0.1"),
        (b"authorization", f"Bearer {await sync_to_async(token_for)(alice)}".encode()),
    ]
    inbox = await ws_connect("/ws/inbox/", headers=inbox_headers)

    def deactivate() -> None:
        alice.is_active = False
        alice.save()

    await sync_to_async(deactivate)()
    assert await closed_with(ws) == 4401
    assert await closed_with(inbox) == 4401


async def test_logout_closes_the_sockets_of_that_token_only(alice, bob, ws_connect):
    phone, laptop = await sync_to_async(token_for)(alice), await sync_to_async(token_for)(alice)
    phone_ws, laptop_ws = (
        await open_dm(ws_connect, phone, "bob"),
        await open_dm(ws_connect, laptop, "bob"),
    )

    def logout() -> int:
        return (
            bearer(phone).post("/api/auth/logout", {}, content_type="application/json").status_code
        )

    assert await sync_to_async(logout)() == 204
    assert await closed_with(phone_ws) == 4401
    await laptop_ws.send_json_to({"type": "ping"})
    assert (await laptop_ws.receive_json_from(timeout=5))["type"] == "pong"


async def test_a_session_logout_closes_that_sessions_sockets(alice, bob, ws_connect):
    browser = Client()
    await sync_to_async(browser.force_login)(alice)
    cookie = f"sessionid={browser.cookies['sessionid'].value}".encode()
    headers = [(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1"), (b"cookie", cookie)]
    ws = await ws_connect("/ws/dm/bob/", headers=headers)
    assert (await ws.receive_json_from(timeout=5))["type"] == "room.joined"
    other_device = await open_dm(ws_connect, await sync_to_async(token_for)(alice), "bob")
    await sync_to_async(browser.logout)()
    assert await closed_with(ws) == 4401
    await other_device.send_json_to({"type": "ping"})
    assert (await other_device.receive_json_from(timeout=5))["type"] == "pong"


async def test_a_socket_whose_revocation_was_lost_still_cannot_send(alice, bob, ws_connect):
    """The channel layer may lose the revocation: the send itself refuses an inactive sender."""
    ws = await open_dm(ws_connect, await sync_to_async(token_for)(alice), "bob")
    # A bulk update sends no signal, so no revocation event goes out.
    await sync_to_async(get_user_model().objects.filter(pk=alice.pk).update)(is_active=False)
    await ws.send_json_to({"type": "message.send", "client_id": str(uuid.uuid4()), "message": "hi"})
    error = await ws.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", "unauthenticated")
    assert await closed_with(ws) == 4401
    assert await sync_to_async(DirectMessage.objects.count)() == 0


# --- Across processes ----------------------------------------------------------------


@pytest.mark.live
@pytest.mark.redis
async def test_logout_everywhere_closes_a_socket_on_another_process(asgi_server_factory, redis_url):
    """The revocation crosses processes through the channel layer: a logout on one server
    closes the user's socket on the other within a second or two."""
    one, two = asgi_server_factory(redis_url), asgi_server_factory(redis_url)
    alice, bob = signup(one.http), signup(one.http)
    ws = await WsClient.open(f"{two.ws}/ws/dm/{bob['account']}/", alice["token"])
    assert (await ws.recv())["type"] == "room.joined"
    started = time.monotonic()
    status, _ = await asyncio.to_thread(
        http_json, "POST", f"{one.http}/api/auth/logout", {"all": True}, alice["token"]
    )
    assert status == 204
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.recv(timeout=3)
    elapsed = time.monotonic() - started
    assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 4401
    assert elapsed < 2.0, f"closed after {elapsed:.2f} s"
    print(f"\nlogout on one process -> socket closed on the other: {elapsed * 1000:.0f} ms")


@pytest.mark.live
@pytest.mark.redis
async def test_a_deactivation_in_another_process_closes_the_socket(asgi_server_factory, redis_url):
    """An account deactivated anywhere (here: a management shell, a process of its own,
    as an admin's or a worker's would be) closes its sockets on a server process."""
    server = asgi_server_factory(redis_url)
    alice, bob = signup(server.http), signup(server.http)
    ws = await WsClient.open(f"{server.ws}/ws/dm/{bob['account']}/", alice["token"])
    assert (await ws.recv())["type"] == "room.joined"
    code = (
        "from django.contrib.auth import get_user_model; "
        f"u = get_user_model().objects.get(pk={alice['id']}); u.is_active = False; u.save()"
    )
    started = time.monotonic()
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=server.env,
        check=True,
        capture_output=True,
    )
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.recv(timeout=5)
    elapsed = time.monotonic() - started
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    # The shell's own start-up (Django setup, ~1 s) is inside the figure.
    print(f"\ndeactivation in another process -> socket closed: {elapsed * 1000:.0f} ms")
