"""Wire shapes of the users API (PROTOCOL.md, "Auth" and "Users")."""

import datetime as dt
from typing import Any

from ninja import Schema
from pydantic import Field, field_validator

from users.accounts import is_valid_account, normalize_account


def user_out(user: Any) -> dict[str, Any]:
    """PROTOCOL.md's ``User`` object."""
    return {
        "id": user.pk,
        "account": user.account,
        "name": user.name,
        "avatar_url": user.avatar.url if user.avatar else None,
    }


class UserOut(Schema):
    id: int
    account: str
    name: str
    avatar_url: str | None


class SignupIn(Schema):
    account: str = Field(max_length=64)
    password: str = Field(min_length=1, max_length=256)
    name: str = Field("", max_length=150)

    @field_validator("account")
    @classmethod
    def account_is_a_handle(cls, value: str) -> str:
        value = normalize_account(value)
        if not is_valid_account(value):
            raise ValueError(
                "1 to 30 characters of a-z 0-9 . _, not starting or ending with '.', no '..'"
            )
        return value

    @field_validator("name")
    @classmethod
    def name_has_no_nul(cls, value: str) -> str:
        if "\x00" in value:  # PostgreSQL cannot store it in text
            raise ValueError("must not contain NUL (U+0000)")
        return value


class TokenIn(Schema):
    account: str = Field(max_length=64)
    password: str = Field(max_length=256)


class SignupOut(Schema):
    user: UserOut
    token: str


class TokenOut(Schema):
    token: str
    expires_at: dt.datetime


class UserList(Schema):
    results: list[UserOut]
