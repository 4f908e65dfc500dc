"""What the app knows of the host's users, in one class the host can replace.

The app refers to users only by ``settings.AUTH_USER_MODEL`` and their primary key;
everything else it needs of a user (the public handle in URLs and frames, a display
name, an avatar, looking a handle up, searching) comes from the adapter named by
``DIRECT_MESSAGES["USER_ADAPTER"]``, as django-allauth's account adapter does. The
default works with Django's stock ``auth.User``.
"""

from __future__ import annotations

import functools
from typing import Any

from django.contrib.auth import get_user_model
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from direct_messages.conf import dm_setting


class DefaultUserAdapter:
    """The handle is the user model's ``USERNAME_FIELD``, compared case-insensitively;
    the display name is ``get_full_name()`` when the model has it; no avatar.

    A subclass overrides what differs in its host, for instance a public ``handle``
    field when ``USERNAME_FIELD`` is a private e-mail address (docs/install.md).
    """

    def get_handle(self, user: Any) -> str:
        """The user's public handle: in URLs (``/ws/dm/<handle>/``) and in frames."""
        return str(user.get_username())

    def get_display_name(self, user: Any) -> str:
        full_name = getattr(user, "get_full_name", None)
        return str(full_name() or "") if callable(full_name) else ""

    def get_avatar_url(self, user: Any) -> str | None:
        return None

    def get_user_by_handle(self, handle: str) -> Any | None:
        """The active user whose handle is ``handle`` (any case), or None."""
        User = get_user_model()
        field = User.USERNAME_FIELD
        users = list(User._default_manager.filter(**{f"{field}__iexact": handle})[:2])
        if len(users) > 1:  # two handles differing only in case: only the exact one
            users = [u for u in users if self.get_handle(u) == handle]
        user = users[0] if len(users) == 1 else None
        return user if user is not None and self.is_active(user) else None

    def search_users(self, prefix: str, viewer: Any) -> Any:
        """Active users whose handle starts with ``prefix``, in handle order, not ``viewer``:
        a queryset or a list (anything that slices).

        The app slices off the first 20: return a queryset (or a list), so that only
        those are read.
        """
        User = get_user_model()
        field = User.USERNAME_FIELD
        users = User._default_manager.filter(**{f"{field}__istartswith": prefix})
        if _has_field(User, "is_active"):
            users = users.filter(is_active=True)
        return users.exclude(pk=viewer.pk).order_by(field)

    def is_active(self, user: Any) -> bool:
        """Whether ``user`` may use the app (Django's ``is_active`` when the model has it)."""
        return bool(getattr(user, "is_active", True))

    def suspend(self, user: Any) -> None:
        """A moderator's suspension: ``is_active = False``, saved, which closes the
        user's open sockets on every process (the app's ``post_save`` receiver). A model
        without ``is_active`` needs an adapter that says how its users are suspended."""
        if not _has_field(type(user), "is_active"):
            raise NotImplementedError(
                f"{type(user).__name__} has no is_active: override suspend() in your adapter"
            )
        user.is_active = False
        user.save(update_fields=["is_active"])

    def erase(self, user: Any) -> None:
        """The user's own erasure (``POST /api/me/erase``, when the host turns it on):
        ``user.delete()``, which the app follows (erasure.py). A host that keeps its
        users' rows (a soft delete, a legal hold) says here what erasing one is."""
        user.delete()


def _has_field(model: Any, name: str) -> bool:
    return any(field.name == name for field in model._meta.get_fields())


@functools.cache
def get_adapter() -> DefaultUserAdapter:
    """The adapter of ``DIRECT_MESSAGES["USER_ADAPTER"]``, made once."""
    return import_string(dm_setting("USER_ADAPTER"))()  # type: ignore[no-any-return]


@receiver(setting_changed)
def _forget_adapter(*, setting: str, **kwargs: Any) -> None:
    if setting in ("DIRECT_MESSAGES", "AUTH_USER_MODEL"):
        get_adapter.cache_clear()


def handle_of(user: Any) -> str | None:
    """The handle of ``user``; None for an erased one (a tombstone's sender)."""
    return None if user is None else get_adapter().get_handle(user)


def user_out(user: Any) -> dict[str, Any]:
    """PROTOCOL.md's ``User`` object: the handle is its ``account``. An erased user (None)
    is a placeholder with no id and no account, which no real account can look like."""
    if user is None:
        return {"id": None, "account": None, "name": dm_setting("ERASED_NAME"), "avatar_url": None}
    adapter = get_adapter()
    return {
        "id": user.pk,
        "account": adapter.get_handle(user),
        "name": adapter.get_display_name(user),
        "avatar_url": adapter.get_avatar_url(user),
    }
