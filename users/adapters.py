"""The demo host's user adapter: Instagram-style ``account`` handles, names and avatars."""

from typing import Any

from django.db.models import QuerySet

from direct_messages.adapters import DefaultUserAdapter
from users.accounts import is_account_prefix, is_valid_account, normalize_account
from users.models import User


class AccountAdapter(DefaultUserAdapter):
    def get_handle(self, user: Any) -> str:
        return str(user.account)

    def get_display_name(self, user: Any) -> str:
        return str(user.name)

    def get_avatar_url(self, user: Any) -> str | None:
        return user.avatar.url if user.avatar else None

    def get_user_by_handle(self, handle: str) -> User | None:
        account = normalize_account(handle)
        if not is_valid_account(account):
            return None
        return User.objects.filter(account=account, is_active=True).first()

    def search_users(self, prefix: str, viewer: Any) -> QuerySet[User] | list[User]:
        prefix = normalize_account(prefix)
        if not is_account_prefix(prefix):  # matches no handle
            return []
        users = User.objects.filter(is_active=True, account__startswith=prefix)
        return users.exclude(pk=viewer.pk).order_by("account")
