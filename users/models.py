from typing import Any, ClassVar

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.core.exceptions import ValidationError
from django.db import models

from users.accounts import ACCOUNT_MAX_LENGTH, is_valid_account, normalize_account


def validate_account(value: str) -> None:
    if not is_valid_account(value):
        raise ValidationError(
            "1 to 30 characters of a-z 0-9 . _, not starting or ending with '.', no '..'",
            code="invalid_account",
        )


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create(self, account: str, password: str | None, **extra: Any) -> "User":
        user = self.model(account=normalize_account(account), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, account: str, password: str | None = None, **extra: Any) -> "User":
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(account, password, **extra)

    def create_superuser(self, account: str, password: str | None = None, **extra: Any) -> "User":
        extra.update(is_staff=True, is_superuser=True)
        return self._create(account, password, **extra)

    def get_by_natural_key(self, username: str | None) -> "User":
        return self.get(account=normalize_account(username or ""))


class User(AbstractUser):
    """A person with an Instagram-style ``account`` handle.

    The handle may change; everything that must survive a rename (conversation rooms)
    refers to the immutable ``id``.
    """

    username = None  # type: ignore[assignment]
    first_name = None  # type: ignore[assignment]
    last_name = None  # type: ignore[assignment]
    account = models.CharField(
        max_length=ACCOUNT_MAX_LENGTH, unique=True, validators=[validate_account]
    )
    name = models.CharField(max_length=150, blank=True)
    avatar = models.ImageField(upload_to="avatars/", blank=True)

    USERNAME_FIELD = "account"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    objects = UserManager()  # type: ignore[misc, assignment]

    class Meta:
        ordering = ["account"]

    def __str__(self) -> str:
        return self.account

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.account = normalize_account(self.account)
        super().save(*args, **kwargs)
