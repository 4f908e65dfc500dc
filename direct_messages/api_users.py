"""HTTP routes for tokens and users (PROTOCOL.md, "Auth" and "Users").

Signup is the host's: the app never creates users. The token endpoint checks the
password with Django's ``authenticate()``, so any authentication backend of the host
works.
"""

from typing import Any

from django.contrib.auth import authenticate as password_authenticate
from django.contrib.auth import logout as session_logout
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from pydantic import Field

from direct_messages.adapters import get_adapter, user_out
from direct_messages.auth import (
    bearer_token,
    token_claims,
    token_issue,
    token_revoke,
    tokens_revoke_all,
)
from direct_messages.conf import dm_setting
from direct_messages.errors import Forbidden, Invalid, Unauthenticated
from direct_messages.http import RateThrottle, errors
from direct_messages.schemas import TokenIn, TokenOut, UserList, UserOut

auth_router = Router(tags=["auth"])
users_router = Router(tags=["users"])

SEARCH_LIMIT = 20


@auth_router.post(
    "/token",
    response={200: TokenOut, **errors(400, 401, 413, 429)},
    auth=None,
    throttle=RateThrottle("token", lambda: dm_setting("TOKEN_RATE"), per="client"),
)
def token(request: HttpRequest, payload: TokenIn) -> dict[str, Any]:
    """A Bearer token for ``account`` (the public handle, or whatever the host's login
    takes as the username) and ``password``."""
    if "\x00" in payload.account:  # no username holds one, and PostgreSQL refuses it
        raise Unauthenticated("wrong account or password")
    known = get_adapter().get_user_by_handle(payload.account)
    username = known.get_username() if known is not None else payload.account
    user = password_authenticate(request, username=username, password=payload.password)
    if user is None or not get_adapter().is_active(user):
        raise Unauthenticated("wrong account or password")
    token, expires_at = token_issue(user)
    return {"token": token, "expires_at": expires_at}


class LogoutIn(Schema):
    all: bool = False


@auth_router.post("/logout", response={204: None, **errors(400, 401, 403, 413)})
def logout(request: HttpRequest, payload: LogoutIn) -> Status:
    """Revoke the presented token (or end the session), or with ``{"all": true}`` every
    token of the user and this session: open sockets of what was revoked close (4401)."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is not None and not payload.all:
        token_revoke(request.user, token_claims(token))
    if payload.all:
        tokens_revoke_all(request.user)
    if token is None:
        session_logout(request)
    return Status(204, None)


class PasswordIn(Schema):
    old_password: str = Field(max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


@auth_router.post("/password", response={200: TokenOut, **errors(400, 401, 403, 413)})
def password_change(request: HttpRequest, payload: PasswordIn) -> dict[str, Any]:
    """Change the password (Django's validators apply): every other token and session
    of the user is revoked, and their sockets close; the caller gets a new token (and
    keeps its session)."""
    user: Any = request.user
    if not user.check_password(payload.old_password):
        raise Forbidden("old_password: wrong password")
    try:
        validate_password(payload.new_password, user=user)
    except ValidationError as exc:
        raise Invalid("new_password: " + " ".join(exc.messages)) from exc
    user.set_password(payload.new_password)
    user.save()
    if bearer_token(request.headers.get("Authorization")) is None:
        update_session_auth_hash(request, user)
    token, expires_at = token_issue(user)
    return {"token": token, "expires_at": expires_at}


@users_router.get("/me", response={200: UserOut, **errors(401)})
def me(request: HttpRequest) -> dict[str, Any]:
    return user_out(request.user)


class UserSearchQuery(Schema):
    q: str = Field(min_length=1, max_length=64)  # a prefix: no listing of every account


@users_router.get(
    "/",
    response={200: UserList, **errors(400, 401, 429)},
    throttle=RateThrottle("user_search", lambda: dm_setting("USER_SEARCH_RATE"), per="user"),
)
def search(request: HttpRequest, query: Query[UserSearchQuery]) -> dict[str, Any]:
    prefix = query.q.strip()
    if not prefix or "\x00" in prefix:  # matches no handle, and PostgreSQL refuses it in a query
        return {"results": []}
    users = get_adapter().search_users(prefix, request.user)
    return {"results": [user_out(u) for u in users[:SEARCH_LIMIT]]}
