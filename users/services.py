"""Writes for users: signup."""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from direct_messages.errors import Conflict, Invalid
from users.accounts import normalize_account


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
