"""The host's adapter for the direct_messages app: the public handle, never the e-mail."""

from typing import Any

from direct_messages.adapters import DefaultUserAdapter


class HandleAdapter(DefaultUserAdapter):
    def get_handle(self, user: Any) -> str:
        return str(user.handle)

    def get_display_name(self, user: Any) -> str:
        return str(user.display_name or user.handle)

    def get_user_by_handle(self, handle: str) -> Any | None:
        from accounts.models import User

        return User.objects.filter(handle__iexact=handle, is_active=True).first()

    def search_users(self, prefix: str, viewer: Any) -> Any:
        from accounts.models import User

        users = User.objects.filter(handle__istartswith=prefix, is_active=True)
        return users.exclude(pk=viewer.pk).order_by("handle")
