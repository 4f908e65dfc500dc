"""Writes for users: signup and token exchange."""

from typing import Any

from django.contrib.auth import authenticate as password_authenticate
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from decorators.errors import Conflict, Invalid, Unauthenticated
from users.accounts import is_valid_account, normalize_account


def user_signup(*, account: str, password: str, name: str = "") -> Any:
    User = get_user_model()
    account = normalize_account(account)
    candidate = User(account=account, name=name)
    try:
        validate_password(password, user=candidate)
    except ValidationError as exc:
        raise Invalid("password: " + " ".join(exc.messages)) from exc
    try:
        with transaction.atomic():
            return User.objects.create_user(account=account, password=password, name=name)
    except IntegrityError as exc:
        raise Conflict(f"account: '{account}' is taken") from exc


def user_check_password(*, account: str, password: str) -> Any:
    account = normalize_account(account)
    # Not a handle (a NUL, say, which PostgreSQL refuses in a query): no such account.
    valid = is_valid_account(account)
    user = password_authenticate(account=account, password=password) if valid else None
    if user is None:
        raise Unauthenticated("wrong account or password")
    return user
