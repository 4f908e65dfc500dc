"""Writes for users: signup."""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from direct_messages.errors import Conflict, Invalid
from users.accounts import normalize_account


def user_signup(*, account: str, password: str, name: str = "") -> Any:
    """Create the user; the password is hashed before the transaction begins.

    Hashing takes a few hundred milliseconds of CPU on purpose. On SQLite a transaction
    holds the database's only write lock from its ``BEGIN IMMEDIATE``, so hashing inside
    it made every other write (sends, reads, other signups) queue behind it, and under
    a burst of signups some waited out the busy timeout: ``database is locked``, a 500.
    """
    User = get_user_model()
    account = normalize_account(account)
    user = User(account=account, name=name)
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        raise Invalid("password: " + " ".join(exc.messages)) from exc
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save(force_insert=True)
            return user
    except IntegrityError as exc:
        raise Conflict(f"account: '{account}' is taken") from exc
