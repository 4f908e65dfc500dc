"""System checks (``manage.py check``): a host's wiring mistakes, each said with what to set."""

from __future__ import annotations

import difflib
from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.urls import NoReverseMatch, reverse
from django.utils.module_loading import import_string

from direct_messages.conf import DEFAULTS

ADAPTER_METHODS = (
    "get_handle",
    "get_display_name",
    "get_avatar_url",
    "get_user_by_handle",
    "search_users",
    "is_active",
)
# Settings that must be at least 1 (the others of their kind may be 0).
POSITIVE = {
    "MESSAGE_MAX_LENGTH",
    "FRAME_MAX_BYTES",
    "ATTACHMENTS_PER_MESSAGE",
    "FILE_MAX_BYTES",
    "IMAGE_MAX_PIXELS",
    "THUMBNAIL_SIZE",
    "UPLOAD_RATE_LIMIT",
    "UPLOAD_RATE_WINDOW_SECONDS",
    "UNCLAIMED_MAX_FILES",
    "UNCLAIMED_MAX_BYTES",
    "IMAGE_DECODE_CONCURRENCY",
    "SEND_RATE_LIMIT",
    "SEND_RATE_WINDOW_SECONDS",
    "TOKEN_LIFETIME_SECONDS",
    "PRESENCE_TTL_SECONDS",
    "MAX_SOCKETS_PER_USER",
    "DATABASE_THREADS",
    "FRAME_RATE",
    "FRAME_BURST",
    "REPLAY_BATCH",
}


@register()
def check_channel_layers(app_configs: Any, **kwargs: Any) -> list[Error]:
    layers = getattr(settings, "CHANNEL_LAYERS", None)
    if isinstance(layers, dict) and "default" in layers:
        return []
    return [
        Error(
            "CHANNEL_LAYERS has no 'default' layer: sockets would connect and no message "
            "would be delivered live.",
            hint='Set CHANNEL_LAYERS = {"default": {"BACKEND": '
            '"direct_messages.local_layer.LocalChannelLayer"} for one process, or '
            'channels_redis.core.RedisChannelLayer with {"CONFIG": {"hosts": [REDIS_URL]}} '
            "for several (docs/install.md).",
            id="direct_messages.E001",
        )
    ]


@register()
def check_settings(app_configs: Any, **kwargs: Any) -> list[Error]:
    options = getattr(settings, "DIRECT_MESSAGES", {})
    if not isinstance(options, dict):
        return [
            Error(
                f"DIRECT_MESSAGES must be a dict, not {type(options).__name__}.",
                hint='For example DIRECT_MESSAGES = {"MESSAGE_MAX_LENGTH": 1000}.',
                id="direct_messages.E002",
            )
        ]
    errors = []
    for name, value in options.items():
        if name not in DEFAULTS:
            close = difflib.get_close_matches(str(name), DEFAULTS, n=1)
            errors.append(
                Error(
                    f"DIRECT_MESSAGES has an unknown key {name!r}.",
                    hint=f"Did you mean {close[0]!r}?"
                    if close
                    else "docs/install.md lists the keys.",
                    id="direct_messages.E003",
                )
            )
        elif (problem := _value_problem(name, value)) is not None:
            errors.append(
                Error(
                    f"DIRECT_MESSAGES[{name!r}] is {value!r}: {problem}.",
                    hint=f"The default is {DEFAULTS[name]!r}.",
                    id="direct_messages.E004",
                )
            )
    return errors + _check_imports(options)


def _value_problem(name: str, value: Any) -> str | None:
    default = DEFAULTS[name]
    if isinstance(default, bool) or isinstance(value, bool):
        return None if type(value) is type(default) else f"must be {type(default).__name__}"
    if isinstance(default, int | float):
        if not isinstance(value, int | float) or (
            isinstance(default, int) and not isinstance(value, int)
        ):
            return f"must be {'an integer' if isinstance(default, int) else 'a number'}"
        if value < (1 if name in POSITIVE else 0):
            return f"must be at least {1 if name in POSITIVE else 0}"
        return None
    if isinstance(default, str):
        return None if isinstance(value, str) else "must be a string"
    if name == "HIDDEN_WORDS":
        ok = isinstance(value, list | tuple) and all(
            isinstance(v, str) and v.strip() for v in value
        )
        return None if ok else "must be a list of words or phrases (strings, not blank)"
    if isinstance(default, list):
        ok = (
            isinstance(value, list | tuple)
            and bool(value)
            and all(isinstance(v, str) for v in value)
        )
        return None if ok else "must be a non-empty list of dotted paths"
    if isinstance(default, dict):
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        return None if ok else "must be a dict of URL prefix to dotted path"
    return None


def _importable(path: str) -> tuple[Any, str | None]:
    try:
        return import_string(path), None
    except ImportError as exc:
        return None, str(exc)


def _check_imports(options: dict[str, Any]) -> list[Error]:
    errors = []
    adapter_path = options.get("USER_ADAPTER", DEFAULTS["USER_ADAPTER"])
    if isinstance(adapter_path, str):
        adapter, problem = _importable(adapter_path)
        missing = [m for m in ADAPTER_METHODS if adapter is not None and not hasattr(adapter, m)]
        if problem or missing:
            errors.append(
                Error(
                    f"DIRECT_MESSAGES['USER_ADAPTER'] = {adapter_path!r} "
                    + (f"cannot be imported: {problem}." if problem else f"lacks {missing}."),
                    hint="Name a subclass of direct_messages.adapters.DefaultUserAdapter.",
                    id="direct_messages.E005",
                )
            )
    for path in _paths(options.get("AUTHENTICATORS")):
        authenticator, problem = _importable(path)
        if problem or not hasattr(authenticator, "authenticate"):
            errors.append(
                Error(
                    f"DIRECT_MESSAGES['AUTHENTICATORS'] has {path!r}, which "
                    + (f"cannot be imported: {problem}." if problem else "has no authenticate()."),
                    hint="Name classes with authenticate(credentials), as "
                    "direct_messages.auth.TokenAuthenticator.",
                    id="direct_messages.E006",
                )
            )
    routers = options.get("API_ROUTERS")
    for path in _paths(list(routers.values()) if isinstance(routers, dict) else None):
        if (problem := _importable(path)[1]) is not None:
            errors.append(
                Error(
                    f"DIRECT_MESSAGES['API_ROUTERS'] has {path!r}, which cannot be imported: "
                    f"{problem}.",
                    hint="Name a django-ninja Router, as 'myapp.api.router'.",
                    id="direct_messages.E008",
                )
            )
    return errors


def _paths(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list | tuple) else []


@register("urls")
def check_urls_included(app_configs: Any, **kwargs: Any) -> list[Error]:
    try:
        reverse("direct_messages:home")
    except NoReverseMatch:
        return [
            Error(
                "direct_messages.urls is not included in the ROOT_URLCONF: the API, the web "
                "client and the WebSockets have no address.",
                hint='Add path("chat/", include("direct_messages.urls")) (any prefix, "" '
                "included) to your urlpatterns.",
                id="direct_messages.E007",
            )
        ]
    return []


@register()
def check_sqlite_transactions(app_configs: Any, **kwargs: Any) -> list[Warning]:
    """SQLite's default (deferred) transactions fail at once with "database is locked"
    when one that has read must write while another connection writes: the busy timeout
    does not apply to that upgrade. Two people sending at the same moment do that."""
    return [
        Warning(
            f"DATABASES[{alias!r}] is SQLite without transaction_mode IMMEDIATE: concurrent "
            "sends can fail with 'database is locked'.",
            hint='Add "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20} to it '
            "(and PRAGMA journal_mode=WAL for readers that never wait), or use PostgreSQL.",
            id="direct_messages.W001",
        )
        for alias, database in settings.DATABASES.items()
        if database.get("ENGINE", "").endswith("sqlite3")
        and str(database.get("OPTIONS", {}).get("transaction_mode", "")).upper() != "IMMEDIATE"
    ]
