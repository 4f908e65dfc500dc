"""The app under a prefix (``path("chat/", include("direct_messages.urls"))``): every
HTTP and WebSocket path of PROTOCOL.md moves under it, and nothing is left at the root.
(The wheel in a freshly generated host is tests/install.)"""

from __future__ import annotations

import io
import json
import uuid

import pytest
from django.test import Client, override_settings
from PIL import Image

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.urls("tests.urls_chat_prefix"),
]


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def test_http_api_pages_and_attachments_live_under_the_prefix(alice, bob, auth_client):
    client = auth_client(alice)
    upload = client.post("/chat/api/attachments", {"file": io.BytesIO(png())}, format="multipart")
    assert upload.status_code == 201, upload.content
    assert upload.json()["url"] == f"/chat/api/attachments/{upload.json()['id']}/file"
    body = {
        "client_id": str(uuid.uuid4()),
        "message": "hi",
        "attachment_ids": [upload.json()["id"]],
    }
    sent = client.post("/chat/api/dm/bob/messages", body, content_type="application/json")
    assert sent.status_code == 201, sent.content
    [attachment] = sent.json()["attachments"]
    assert client.get(attachment["url"]).status_code == 200
    assert client.get(attachment["thumbnail_url"]).status_code == 200
    inbox = auth_client(bob).get("/chat/api/inbox?folder=requests").json()["results"]
    assert [c["with"]["account"] for c in inbox] == ["alice"]
    assert client.get("/chat/api/openapi.json").status_code == 200
    # Nothing of the app answers at the root any more.
    assert client.get("/api/inbox").status_code == 404


def test_unknown_api_paths_under_the_prefix_are_404_envelopes(alice, auth_client):
    for method in ("get", "post"):
        response = getattr(Client(), method)("/chat/api/no/such/thing")
        assert response.status_code == 404
        assert response.json() == {"error": {"code": "not_found", "detail": "no such endpoint"}}
    wrong_method = auth_client(alice).delete("/chat/api/inbox")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


@override_settings(LOGIN_URL="/accounts/login/")
def test_pages_hand_the_client_every_url_under_the_prefix(alice):
    assert Client().get("/chat/").headers["Location"] == "/chat/direct/inbox/"
    anonymous = Client().get("/chat/direct/inbox/", HTTP_ACCEPT="text/html")
    assert anonymous.headers["Location"] == "/accounts/login/?next=/chat/direct/inbox/"
    client = Client()
    client.force_login(alice)
    page = client.get("/chat/direct/inbox/")
    assert page.status_code == 200
    config = json.loads(
        page.content.split(b'id="dm-config" type="application/json">')[1].split(b"</script>")[0]
    )
    assert config["api_url"] == "/chat/api/"
    assert config["ws_url"] == "/chat/ws/"
    assert config["login_url"] == "/accounts/login/"
    assert config["logout_url"] == "/chat/logout/"
    assert config["inbox_url"] == "/chat/direct/inbox/"
    assert config["thread_url"] == "/chat/direct/t/ACCOUNT/"
    assert config["me"]["account"] == "alice"


def test_logout_ends_the_session_and_goes_to_the_hosts_login(alice, settings):
    settings.LOGOUT_REDIRECT_URL = None
    settings.LOGIN_URL = "/accounts/login/"
    client = Client()
    client.force_login(alice)
    assert client.get("/chat/logout/").status_code == 405  # a link cannot log anyone out
    response = client.post("/chat/logout/")
    assert response.headers["Location"] == "/accounts/login/"
    assert client.get("/chat/api/users/me").status_code == 401


async def test_websockets_live_under_the_prefix(alice, bob, ws_connect):
    ws = await ws_connect("/chat/ws/dm/bob/", alice)
    assert (await ws.receive_json_from(timeout=5))["type"] == "room.joined"
    inbox = await ws_connect("/chat/ws/inbox/", bob)
    await ws.send_json_to({"type": "message.send", "client_id": str(uuid.uuid4()), "message": "hi"})
    types = set()
    while "message.ack" not in types:
        types.add((await ws.receive_json_from(timeout=5))["type"])
    update = await inbox.receive_json_from(timeout=5)
    assert update["type"] == "inbox.update"
    assert update["conversation"]["last_message"]["message"] == "hi"
