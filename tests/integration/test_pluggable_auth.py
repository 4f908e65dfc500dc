"""Authentication and users go through what the host plugs in: an authenticator of its
own (a host that already issues tokens), and the user adapter's lookups."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core import signing
from django.test import Client

from direct_messages.adapters import DefaultUserAdapter
from direct_messages.auth import Credentials
from direct_messages.errors import Unauthenticated

pytestmark = pytest.mark.django_db(transaction=True)


class HostTokenAuthenticator:
    """A host's own tokens: ``Authorization: HostToken <signed user id>``."""

    def authenticate(self, credentials: Credentials) -> Any | None:
        scheme, _, value = (credentials.authorization or "").partition(" ")
        if scheme != "HostToken":
            return None
        try:
            user_id = signing.loads(value, salt="host-token")
        except signing.BadSignature as exc:
            raise Unauthenticated("bad host token") from exc
        return get_user_model().objects.filter(pk=user_id, is_active=True).first()


@pytest.fixture
def host_tokens(settings):
    settings.DIRECT_MESSAGES = {
        **settings.DIRECT_MESSAGES,
        "AUTHENTICATORS": [
            f"{__name__}.HostTokenAuthenticator",
            "direct_messages.auth.TokenAuthenticator",
            "direct_messages.auth.SessionAuthenticator",
        ],
    }


def host_token(user: Any) -> str:
    return "HostToken " + signing.dumps(user.pk, salt="host-token")


def test_a_hosts_authenticator_serves_http(host_tokens, alice, auth_client):
    me = Client(HTTP_AUTHORIZATION=host_token(alice)).get("/api/users/me")
    assert me.status_code == 200 and me.json()["account"] == "alice"
    forged = Client(HTTP_AUTHORIZATION="HostToken 1:forged").get("/api/users/me")
    assert forged.json()["error"] == {"code": "unauthenticated", "detail": "bad host token"}
    # The app's own tokens still work beside it; an unknown scheme does not.
    assert auth_client(alice).get("/api/users/me").status_code == 200
    assert Client(HTTP_AUTHORIZATION="Basic eDp5").get("/api/users/me").status_code == 401


async def test_a_hosts_authenticator_serves_websockets(host_tokens, alice, bob, ws_connect):
    headers = [(b"host", b"127.0.0.1"), (b"authorization", host_token(alice).encode())]
    ws = await ws_connect("/ws/dm/bob/", headers=headers)  # no Origin: a script, with credentials
    assert (await ws.receive_json_from(timeout=5))["type"] == "room.joined"


def test_without_an_authenticator_for_the_scheme_nothing_is_accepted(alice):
    response = Client(HTTP_AUTHORIZATION=host_token(alice)).get("/api/users/me")
    assert response.status_code == 401


def test_the_default_adapter_finds_handles_in_any_case_and_only_active_users(make_user):
    adapter = DefaultUserAdapter()  # USERNAME_FIELD of the demo's model is `account`
    carol = make_user("carol")
    make_user("carl", is_active=False)
    assert adapter.get_handle(carol) == "carol"
    assert adapter.get_user_by_handle("CAROL") == carol
    assert adapter.get_user_by_handle("carl") is None
    assert adapter.get_user_by_handle("nobody") is None
    assert list(adapter.search_users("ca", make_user("viewer"))) == [carol]
    assert adapter.get_avatar_url(carol) is None
