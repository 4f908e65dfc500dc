import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from instamg.asgi import application
from tests.conftest import token_for, ws_headers

pytestmark = pytest.mark.django_db(transaction=True)


async def first_close(communicator):
    output = await communicator.receive_output(timeout=5)
    while output["type"] != "websocket.close":
        output = await communicator.receive_output(timeout=5)
    return output["code"]


async def test_bearer_token_authenticates_a_websocket(alice, ws_connect):
    ws = await ws_connect("/ws/inbox/", alice)
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(timeout=5) == {"type": "pong"}


async def test_no_credentials_is_accepted_then_closed_4401(ws_connect):
    ws = await ws_connect("/ws/inbox/", None, origin="http://127.0.0.1")
    assert await first_close(ws) == 4401


async def test_bad_token_is_closed_4401(ws_connect):
    headers = [(b"host", b"127.0.0.1"), (b"authorization", b"Bearer not.a.token")]
    ws = await ws_connect("/ws/inbox/", headers=headers)
    assert await first_close(ws) == 4401


async def test_foreign_origin_is_refused_whatever_the_credentials(alice):
    communicator = WebsocketCommunicator(
        application,
        "/ws/inbox/",
        headers=await sync_to_async(ws_headers)(alice, origin="https://evil.example"),
    )
    connected, _ = await communicator.connect(timeout=5)
    assert not connected


async def test_allowed_origin_with_token_is_accepted(alice, ws_connect):
    headers = [
        (b"host", b"localhost:8000"),
        (b"authorization", f"Bearer {await sync_to_async(token_for)(alice)}".encode()),
        (b"origin", b"http://localhost:8000"),
    ]
    ws = await ws_connect("/ws/inbox/", headers=headers)
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "pong"


async def test_origin_must_be_the_servers_own_port_and_scheme(alice):
    """``Host`` says which origin the page came from; another port or scheme on the
    same host is another site."""
    for origin in (b"http://127.0.0.1:8001", b"https://127.0.0.1:8000", b"http://localhost:8000"):
        communicator = WebsocketCommunicator(
            application,
            "/ws/inbox/",
            headers=[(b"host", b"127.0.0.1:8000"), (b"origin", origin)],
        )
        connected, _ = await communicator.connect(timeout=5)
        assert not connected, origin


async def test_session_cookie_needs_an_origin(alice_session_cookie):
    cookie = alice_session_cookie
    without_origin = WebsocketCommunicator(
        application, "/ws/inbox/", headers=[(b"host", b"127.0.0.1"), (b"cookie", cookie)]
    )
    connected, _ = await without_origin.connect(timeout=5)
    assert not connected
    with_origin = WebsocketCommunicator(
        application,
        "/ws/inbox/",
        headers=[
            (b"host", b"127.0.0.1:8000"),
            (b"cookie", cookie),
            (b"origin", b"http://127.0.0.1:8000"),
        ],
    )
    connected, _ = await with_origin.connect(timeout=5)
    assert connected
    await with_origin.send_json_to({"type": "ping"})
    assert (await with_origin.receive_json_from(timeout=5))["type"] == "pong"
    await with_origin.disconnect()


@pytest.fixture
def alice_session_cookie(alice):
    from django.test import Client

    client = Client()
    client.force_login(alice)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def test_token_for_helper_roundtrip(alice):
    from direct_messages.auth import authenticate

    assert authenticate(f"Bearer {token_for(alice)}", None) == alice
