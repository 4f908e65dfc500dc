"""Brute force and enumeration are throttled (issue 18, 5 and 9), at the documented
defaults: each test is the attack. Every test plays from addresses of its own (random
per run: the PostgreSQL pass keeps throttles in Redis, which outlives a run)."""

from __future__ import annotations

import random
import uuid

import pytest
from django.test import Client

from direct_messages.conf import DEFAULTS
from tests.conftest import PASSWORD, token_for

pytestmark = pytest.mark.django_db(transaction=True)


def address() -> str:
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


@pytest.fixture(autouse=True)
def real_limits(settings):
    # A namespace of the test's own in the cache (Redis in the PostgreSQL pass outlives a
    # run, and user ids repeat from run to run).
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": uuid.uuid4().hex}}
    settings.AXES_FAILURE_LIMIT = 10
    settings.SIGNUP_RATE = "10/hour"
    # The app's own defaults, read from where they are written (the tests below assert
    # the documented figures: 30 tokens a minute, 60 user searches, 30 message searches).
    rates = ("TOKEN_RATE", "USER_SEARCH_RATE", "SEARCH_RATE", "REPORT_RATE")
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, **{k: DEFAULTS[k] for k in rates}}


def token(client: Client, account: str, password: str):
    return client.post(
        "/api/auth/token",
        {"account": account, "password": password},
        content_type="application/json",
    )


def test_ten_wrong_passwords_lock_the_account_even_for_the_right_one(make_user):
    victim = make_user(f"v{uuid.uuid4().hex[:8]}")
    attacker = Client(REMOTE_ADDR=address())
    for _ in range(9):
        assert token(attacker, victim.account, "guess").status_code == 401
    assert token(attacker, victim.account, "guess").status_code == 429  # the 10th locks
    # From another address too: the account is locked, not only the attacker's address.
    locked = token(Client(REMOTE_ADDR=address()), victim.account, PASSWORD)
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "rate_limited"
    assert int(locked["Retry-After"]) == 15 * 60
    assert token(Client(REMOTE_ADDR=address()), make_user().account, PASSWORD).status_code == 200


def test_ten_wrong_passwords_from_one_address_lock_that_address(make_user):
    sprayer = Client(REMOTE_ADDR=address())
    for _ in range(9):  # password spraying: one guess per account
        assert token(sprayer, f"x{uuid.uuid4().hex[:8]}", "guess").status_code == 401
    assert token(sprayer, "one.more", "guess").status_code == 429
    user = make_user()
    assert token(sprayer, user.account, PASSWORD).status_code == 429
    assert token(Client(REMOTE_ADDR=address()), user.account, PASSWORD).status_code == 200


def test_the_login_page_and_the_admin_are_locked_the_same_way(make_user):
    victim = make_user(f"v{uuid.uuid4().hex[:8]}")
    attacker = Client(REMOTE_ADDR=address())
    for _ in range(10):
        attacker.post("/accounts/login/", {"username": victim.account, "password": "guess"})
    page = Client(REMOTE_ADDR=address()).post(
        "/accounts/login/", {"username": victim.account, "password": PASSWORD}
    )
    assert page.status_code == 429 and b"Too many failed logins" in page.content
    staff = make_user(f"s{uuid.uuid4().hex[:8]}", is_staff=True)
    admin = Client(REMOTE_ADDR=address())
    for _ in range(10):
        admin.post("/admin/login/", {"username": staff.account, "password": "guess"})
    assert (
        admin.post("/admin/login/", {"username": staff.account, "password": PASSWORD}).status_code
        == 429
    )


def test_signups_are_limited_per_address():
    client = Client(REMOTE_ADDR=address())
    for _ in range(10):
        body = {"account": f"n{uuid.uuid4().hex[:10]}", "password": "a long passphrase"}
        assert (
            client.post("/api/auth/signup", body, content_type="application/json").status_code
            == 201
        )
    body = {"account": f"n{uuid.uuid4().hex[:10]}", "password": "a long passphrase"}
    refused = client.post("/api/auth/signup", body, content_type="application/json")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert int(refused["Retry-After"]) >= 1
    page = client.post(
        "/accounts/signup/",
        {
            "account": f"n{uuid.uuid4().hex[:10]}",
            "password1": "a long passphrase",
            "password2": "a long passphrase",
        },
    )
    assert page.status_code == 429 and b"Too many sign-ups" in page.content


def test_the_token_endpoint_is_limited_per_address_whatever_the_answers(make_user):
    user, client = make_user(), Client(REMOTE_ADDR=address())
    for _ in range(30):
        assert token(client, user.account, PASSWORD).status_code == 200
    assert token(client, user.account, PASSWORD).status_code == 429


def test_user_search_needs_a_prefix_and_is_limited(make_user):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(make_user())}")
    empty = client.get("/api/users/?q=")
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "invalid"
    assert client.get("/api/users/").status_code == 400  # no listing of every account
    for _ in range(58):  # 60 a minute: the two refused above count too
        assert client.get("/api/users/?q=a").status_code == 200
    limited = client.get("/api/users/?q=a")
    assert limited.status_code == 429 and int(limited["Retry-After"]) >= 1


def test_message_search_is_limited_per_user_and_history_is_not(make_user):
    me, other = make_user(), make_user()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(me)}")
    sent = {"client_id": str(uuid.uuid4()), "message": "needle in a haystack"}
    assert (
        client.post(
            f"/api/dm/{other.account}/messages", sent, content_type="application/json"
        ).status_code
        == 201
    )
    for i in range(30):  # both search endpoints draw on one budget
        path = "/api/search?q=needle" if i % 2 else f"/api/dm/{other.account}/messages?q=needle"
        assert client.get(path).status_code == 200
    limited = client.get("/api/search?q=needle")
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
    assert client.get(f"/api/dm/{other.account}/messages?q=needle").status_code == 429
    assert client.get(f"/api/dm/{other.account}/messages").status_code == 200  # history


def test_reports_are_limited_per_user(make_user):
    """A report copies messages and files: 20 an hour per user, the documented default."""
    me, other = make_user(), make_user()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(me)}")
    sent = {"client_id": str(uuid.uuid4()), "message": "spam"}
    client.post(f"/api/dm/{other.account}/messages", sent, content_type="application/json")
    report = {"reason": "spam"}
    for _ in range(20):
        answer = client.post(
            f"/api/dm/{other.account}/report", report, content_type="application/json"
        )
        assert answer.status_code == 201
    limited = client.post(
        f"/api/dm/{other.account}/report", report, content_type="application/json"
    )
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
