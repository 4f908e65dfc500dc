"""HTTP routes for tokens and users (PROTOCOL.md, "Auth" and "Users").

Signup is the host's: the app never creates users. The token endpoint checks the
password with Django's ``authenticate()``, so any authentication backend of the host
works.
"""

from typing import Any

from django.contrib.auth import authenticate as password_authenticate
from django.http import HttpRequest
from ninja import Query, Router, Schema
from pydantic import Field

from direct_messages.adapters import get_adapter, user_out
from direct_messages.auth import token_issue
from direct_messages.errors import Unauthenticated
from direct_messages.http import errors
from direct_messages.schemas import TokenIn, TokenOut, UserList, UserOut

auth_router = Router(tags=["auth"])
users_router = Router(tags=["users"])

SEARCH_LIMIT = 20


@auth_router.post("/token", response={200: TokenOut, **errors(400, 401, 413)}, auth=None)
def token(request: HttpRequest, payload: TokenIn) -> dict[str, Any]:
    """A Bearer token for ``account`` (the public handle, or whatever the host's login
    takes as the username) and ``password``."""
    known = get_adapter().get_user_by_handle(payload.account)
    username = known.get_username() if known is not None else payload.account
    user = password_authenticate(request, username=username, password=payload.password)
    if user is None or not get_adapter().is_active(user):
        raise Unauthenticated("wrong account or password")
    token, expires_at = token_issue(user)
    return {"token": token, "expires_at": expires_at}


@users_router.get("/me", response={200: UserOut, **errors(401)})
def me(request: HttpRequest) -> dict[str, Any]:
    return user_out(request.user)


class SearchQuery(Schema):
    q: str = Field("", max_length=64)


@users_router.get("/", response={200: UserList, **errors(400, 401)})
def search(request: HttpRequest, query: Query[SearchQuery]) -> dict[str, Any]:
    prefix = query.q.strip()
    if "\x00" in prefix:  # matches no handle, and PostgreSQL refuses it in a query
        return {"results": []}
    users = get_adapter().search_users(prefix, request.user)
    return {"results": [user_out(u) for u in users[:SEARCH_LIMIT]]}
