"""HTTP routes for tokens and users (PROTOCOL.md, "Auth" and "Users").

Signup is the host's: the app never creates users. The token endpoint checks the
password with Django's ``authenticate()``, so any authentication backend of the host
works.
"""

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from pydantic import Field

from direct_messages.adapters import get_adapter, user_out
from direct_messages.auth import logout as logout_flow
from direct_messages.auth import password_change as password_change_flow
from direct_messages.auth import password_login, token_issue
from direct_messages.conf import dm_setting
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
    token, expires_at = token_issue(password_login(request, payload.account, payload.password))
    return {"token": token, "expires_at": expires_at}


class LogoutIn(Schema):
    all: bool = False


@auth_router.post("/logout", response={204: None, **errors(400, 401, 403, 413)})
def logout(request: HttpRequest, payload: LogoutIn) -> Status:
    """Revoke the presented token (or end the session), or with ``{"all": true}`` every
    token of the user and this session: open sockets of what was revoked close (4401)."""
    logout_flow(request, everywhere=payload.all)
    return Status(204, None)


class PasswordIn(Schema):
    old_password: str = Field(max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


@auth_router.post("/password", response={200: TokenOut, **errors(400, 401, 403, 413)})
def password_change(request: HttpRequest, payload: PasswordIn) -> dict[str, Any]:
    """Change the password (Django's validators apply): every other token and session
    of the user is revoked, and their sockets close; the caller gets a new token (and
    keeps its session)."""
    user = password_change_flow(request, payload.old_password, payload.new_password)
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
