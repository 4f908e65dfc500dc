import datetime as dt
import json

import jwt
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from direct_messages.auth import token_issue

pytestmark = pytest.mark.django_db


def post(client, url, body, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(url, data=data, content_type="application/json", **extra)


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["detail"]


def test_signup_returns_user_and_a_working_token():
    response = post(
        Client(),
        "/api/auth/signup",
        {"account": "Alice.Smith", "password": "correct-horse-battery", "name": "Al"},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["user"]["account"] == "alice.smith" and body["user"]["name"] == "Al"
    assert body["user"]["avatar_url"] is None
    me = Client().get("/api/users/me", HTTP_AUTHORIZATION=f"Bearer {body['token']}")
    assert me.json() == body["user"]


def test_duplicate_account_in_any_case_is_a_conflict():
    post(Client(), "/api/auth/signup", {"account": "bob", "password": "correct-horse-battery"})
    response = post(Client(), "/api/auth/signup", {"account": "BOB", "password": "correct-horse-9"})
    assert_error(response, 409, "conflict")
    assert get_user_model().objects.count() == 1


@pytest.mark.parametrize("account", [".bob", "bob.", "b..b", "x" * 31, "bo b", "", "bob!"])
def test_bad_handles_are_invalid_and_store_nothing(account):
    response = post(
        Client(), "/api/auth/signup", {"account": account, "password": "correct-horse-9"}
    )
    assert_error(response, 400, "invalid")
    assert "account" in response.json()["error"]["detail"]
    assert not get_user_model().objects.exists()


@pytest.mark.parametrize("password", ["short", "12345678901", "password123", "carol123x"])
def test_weak_passwords_are_refused_by_djangos_validators(password):
    response = post(Client(), "/api/auth/signup", {"account": "carol123x", "password": password})
    assert_error(response, 400, "invalid")
    assert response.json()["error"]["detail"].startswith("password")


def test_token_exchange(make_user):
    make_user("dave")
    response = post(
        Client(), "/api/auth/token", {"account": "DAVE", "password": "correct-horse-battery"}
    )
    assert response.status_code == 200
    assert response.json()["expires_at"].endswith("Z") or "+00:00" in response.json()["expires_at"]
    bad = post(Client(), "/api/auth/token", {"account": "dave", "password": "nope"})
    assert_error(bad, 401, "unauthenticated")


def test_password_is_hashed(make_user):
    user = make_user("erin")
    assert user.password.startswith(("pbkdf2_", "argon2", "bcrypt", "scrypt"))


def forged(claims, key=None):
    return jwt.encode(claims, key or settings.SECRET_KEY, algorithm="HS256")


@pytest.mark.parametrize(
    "kind", ["expired", "tampered", "wrong_key", "deleted_user", "no_exp", "none_alg", "garbage"]
)
def test_bad_tokens_are_refused(make_user, kind):
    user = make_user()
    token, _ = token_issue(user)
    now = dt.datetime.now(dt.UTC)
    base = {"sub": str(user.pk), "aud": "instamg", "iat": now}
    if kind == "expired":
        token = forged({**base, "exp": now - dt.timedelta(seconds=1)})
    elif kind == "tampered":
        head, payload, sig = token.split(".")
        token = f"{head}.{payload[:-2]}AA.{sig}"
    elif kind == "wrong_key":
        token = forged({**base, "exp": now + dt.timedelta(hours=1)}, key="k" * 40)
    elif kind == "deleted_user":
        user.delete()
    elif kind == "no_exp":
        token = forged(base)
    elif kind == "none_alg":
        token = jwt.encode({**base, "exp": now + dt.timedelta(hours=1)}, None, algorithm="none")
    else:
        token = "not-a-jwt"
    response = Client().get("/api/users/me", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert_error(response, 401, "unauthenticated")


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic abc", "Token x", "bearer a b", "x"])
def test_malformed_authorization_headers_are_401(make_user, header):
    response = Client().get("/api/users/me", HTTP_AUTHORIZATION=header)
    assert_error(response, 401, "unauthenticated")


def test_no_credentials_is_401_even_on_a_post_without_csrf():
    client = Client(enforce_csrf_checks=True)
    assert_error(post(client, "/api/dm/bob/messages", {"client_id": "x"}), 401, "unauthenticated")
    assert_error(client.get("/api/inbox"), 401, "unauthenticated")


def test_session_auth_works_and_needs_csrf_for_writes(make_user):
    user = make_user("frank")
    make_user("gina")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get("/api/users/me").json()["account"] == "frank"
    body = {"client_id": "3f1f8a0e-8f0c-4c59-9c53-5b8f4c0e1a11", "message": "hi"}
    assert_error(post(client, "/api/dm/gina/messages", body), 403, "forbidden")
    client.get("/api/users/me")  # any page would set the cookie; set it ourselves:
    from django.middleware.csrf import _get_new_csrf_string

    csrf = _get_new_csrf_string()
    client.cookies["csrftoken"] = csrf
    ok = post(client, "/api/dm/gina/messages", body, HTTP_X_CSRFTOKEN=csrf)
    assert ok.status_code == 201, ok.content


def test_user_search_by_prefix(make_user, auth_client):
    me = make_user("zed")
    for account in ["anna", "annabel", "ann.x", "bert"]:
        make_user(account)
    response = auth_client(me).get("/api/users/?q=ANN")
    assert [u["account"] for u in response.json()["results"]] == ["ann.x", "anna", "annabel"]


def test_user_search_returns_at_most_20(make_user, auth_client):
    me = make_user("searcher")
    for i in range(25):
        make_user(f"pre{i:02d}")
    assert len(auth_client(me).get("/api/users/?q=pre").json()["results"]) == 20


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "code"),
    [
        ("post", "/api/auth/signup", "{not json", 400, "invalid"),
        ("post", "/api/auth/signup", {"account": 5, "password": []}, 400, "invalid"),
        ("post", "/api/auth/signup", {}, 400, "invalid"),
        ("post", "/api/auth/signup", {"account": "a" * 10_000, "password": "x"}, 400, "invalid"),
        ("post", "/api/auth/signup", "[1, 2]", 400, "invalid"),
        ("get", "/api/does/not/exist", None, 404, "not_found"),
        ("delete", "/api/auth/signup", None, 405, "method_not_allowed"),
        ("get", "/api/auth/token", None, 405, "method_not_allowed"),
    ],
)
def test_error_envelope(method, url, body, status, code):
    client = Client()
    if method == "post":
        response = post(client, url, body)
    else:
        response = getattr(client, method)(url)
    assert_error(response, status, code)


def test_oversized_body_is_413():
    response = post(Client(), "/api/auth/signup", "x" * (2 * 1024 * 1024))
    assert_error(response, 413, "too_large")


def test_unexpected_exception_is_a_json_500(monkeypatch, make_user, auth_client):
    from direct_messages import selectors

    def boom(**kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(selectors, "inbox_list", boom)
    response = auth_client(make_user()).get("/api/inbox")
    assert_error(response, 500, "internal")
    assert "bug" not in response.content.decode()


def test_openapi_document_and_docs_are_served():
    spec = Client().get("/api/openapi.json").json()
    assert "/api/auth/signup" in spec["paths"] and "/api/dm/{account}/messages" in spec["paths"]
    assert Client().get("/api/docs").status_code == 200
