"""Wire shapes of the demo host's signup (PROTOCOL.md, "Auth")."""

from ninja import Schema
from pydantic import Field, field_validator

from direct_messages.schemas import UserOut
from users.accounts import is_valid_account, normalize_account


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


class SignupOut(Schema):
    user: UserOut
    token: str
