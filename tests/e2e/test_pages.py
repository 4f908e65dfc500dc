"""The web client's pages on the server side: who gets which page, and the forms.

No browser here (Django's test client); test_web_client.py drives the pages in one.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def page_client(user: Any | None = None) -> Client:
    client = Client(enforce_csrf_checks=True, HTTP_ACCEPT="text/html")
    if user is not None:
        client.force_login(user)
    return client


def csrf_from(response: Any) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.content.decode())
    assert match, "the form has no CSRF token"
    return match.group(1)


def client_config(response: Any) -> dict[str, Any]:
    match = re.search(
        r'<script id="dm-config" type="application/json">(.*?)</script>',
        response.content.decode(),
        re.S,
    )
    assert match
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def test_anonymous_visitors_are_sent_to_the_login_form() -> None:
    client = page_client()
    assert client.get("/").headers["Location"] == "/direct/inbox/"
    response = client.get("/direct/inbox/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/accounts/login/?next=/direct/inbox/"
    assert client.get("/direct/t/bob/").headers["Location"].startswith("/accounts/login/")


def test_login_with_any_case_of_the_account_goes_to_next(alice: Any) -> None:
    client = page_client()
    form = client.get("/accounts/login/?next=/direct/t/bob/")
    assert form.status_code == 200
    response = client.post(
        "/accounts/login/",
        {
            "username": "ALICE",
            "password": PASSWORD,
            "next": "/direct/t/bob/",
            "csrfmiddlewaretoken": csrf_from(form),
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/direct/t/bob/"


def test_login_refuses_a_wrong_password_and_a_missing_csrf_token(alice: Any) -> None:
    client = page_client()
    form = client.get("/accounts/login/")
    wrong = client.post(
        "/accounts/login/",
        {"username": "alice", "password": "nope", "csrfmiddlewaretoken": csrf_from(form)},
    )
    assert wrong.status_code == 200
    assert "don&#x27;t match" in wrong.content.decode()
    no_csrf = page_client().post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert no_csrf.status_code == 403


def test_signup_checks_the_handle_and_the_password_then_logs_in(alice: Any) -> None:
    client = page_client()
    token = csrf_from(client.get("/accounts/signup/"))

    def signup(**fields: str) -> Any:
        return client.post("/accounts/signup/", {"csrfmiddlewaretoken": token, **fields})

    taken = signup(account="Alice", password1="a-long-passphrase", password2="a-long-passphrase")
    assert taken.status_code == 200 and "That account is taken" in taken.content.decode()
    bad = signup(account="no spaces", password1="a-long-passphrase", password2="a-long-passphrase")
    assert bad.status_code == 200 and "1 to 30 characters" in bad.content.decode()
    weak = signup(account="dora", password1="12345678", password2="12345678")
    assert weak.status_code == 200 and "too common" in weak.content.decode()
    ok = signup(
        account="Dora.Explorer",
        name="Dora",
        password1="a-long-passphrase",
        password2="a-long-passphrase",
    )
    assert ok.status_code == 302 and ok.headers["Location"] == "/direct/inbox/"
    inbox = client.get("/direct/inbox/")
    assert inbox.status_code == 200
    assert client_config(inbox)["me"]["account"] == "dora.explorer"


def test_logout_is_post_only(alice: Any) -> None:
    client = page_client(alice)
    inbox = client.get("/direct/inbox/")
    assert client.get("/accounts/logout/").status_code == 405
    response = client.post("/accounts/logout/", {"csrfmiddlewaretoken": csrf_from(inbox)})
    assert response.headers["Location"] == "/accounts/login/"
    assert client.get("/direct/inbox/").status_code == 302


def test_conversation_page_resolves_the_account(alice: Any, bob: Any) -> None:
    client = page_client(alice)
    page = client.get("/direct/t/bob/")
    assert page.status_code == 200
    config = client_config(page)
    assert config["peer"]["account"] == "bob"
    assert config["me"]["account"] == "alice"
    assert config["limits"]["message_max_length"] == 1000
    assert "csrftoken" in page.cookies
    assert client.get("/direct/t/BOB/").headers["Location"] == "/direct/t/bob/"
    assert client.get("/direct/t/alice/").headers["Location"] == "/direct/inbox/"
    assert client.get("/direct/t/nobody/").status_code == 404


def test_pages_forbid_inline_script_and_framing(alice: Any) -> None:
    response = page_client(alice).get("/direct/inbox/")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "<script>" not in response.content.decode()  # only the module and JSON data


def test_the_client_config_escapes_a_hostile_name(make_user: Any) -> None:
    mallory = make_user("mallory", name="</script><script>alert(1)</script>")
    viewer = make_user("viewer")
    response = page_client(viewer).get("/direct/t/mallory/")
    body = response.content.decode()
    assert "<script>alert(1)" not in body
    assert client_config(response)["peer"]["name"] == mallory.name
