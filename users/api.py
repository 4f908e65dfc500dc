from typing import Any

from django.contrib.auth import get_user_model
from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from pydantic import Field

from decorators.api import errors
from decorators.auth import token_issue
from users import services
from users.accounts import is_account_prefix, normalize_account
from users.schemas import SignupIn, SignupOut, TokenIn, TokenOut, UserList, UserOut, user_out

auth_router = Router(tags=["auth"])
users_router = Router(tags=["users"])

SEARCH_LIMIT = 20


@auth_router.post("/signup", response={201: SignupOut, **errors(400, 409, 413)}, auth=None)
def signup(request: HttpRequest, payload: SignupIn) -> Status:
    user = services.user_signup(
        account=payload.account, password=payload.password, name=payload.name
    )
    token, _ = token_issue(user)
    return Status(201, {"user": user_out(user), "token": token})


@auth_router.post("/token", response={200: TokenOut, **errors(400, 401, 413)}, auth=None)
def token(request: HttpRequest, payload: TokenIn) -> dict[str, Any]:
    user = services.user_check_password(account=payload.account, password=payload.password)
    token, expires_at = token_issue(user)
    return {"token": token, "expires_at": expires_at}


@users_router.get("/me", response={200: UserOut, **errors(401)})
def me(request: HttpRequest) -> dict[str, Any]:
    return user_out(request.user)


class SearchQuery(Schema):
    q: str = Field("", max_length=64)


@users_router.get("/", response={200: UserList, **errors(400, 401)})
def search(request: HttpRequest, query: Query[SearchQuery]) -> dict[str, Any]:
    prefix = normalize_account(query.q)
    if not is_account_prefix(prefix):  # matches no handle (and may hold a NUL)
        return {"results": []}
    users = get_user_model().objects.filter(is_active=True)
    if prefix:
        users = users.filter(account__startswith=prefix)
    me: Any = request.user
    users = users.exclude(pk=me.pk).order_by("account")[:SEARCH_LIMIT]
    return {"results": [user_out(u) for u in users]}
