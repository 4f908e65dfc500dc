"""``manage.py check`` tells a host what is wrong with its wiring, one message per mistake."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from direct_messages import checks


def ids(errors: list) -> list[str]:
    return [e.id for e in errors]


def test_the_demo_settings_pass_every_check():
    assert [e for e in run_checks() if e.id.startswith("direct_messages.")] == []


@pytest.mark.parametrize("layers", [None, {}, {"other": {}}])
def test_a_missing_default_channel_layer_is_an_error(settings, layers):
    if layers is None:
        del settings.CHANNEL_LAYERS
    else:
        settings.CHANNEL_LAYERS = layers
    [error] = checks.check_channel_layers(None)
    assert error.id == "direct_messages.E001"
    assert "CHANNEL_LAYERS" in error.msg and "LocalChannelLayer" in error.hint


def test_direct_messages_must_be_a_dict(settings):
    settings.DIRECT_MESSAGES = [("MESSAGE_MAX_LENGTH", 10)]
    [error] = checks.check_settings(None)
    assert error.id == "direct_messages.E002"
    assert "must be a dict, not list" in error.msg


def test_an_unknown_key_is_named_with_the_closest_known_one(settings):
    settings.DIRECT_MESSAGES = {"MESAGE_MAX_LENGTH": 10}
    [error] = checks.check_settings(None)
    assert error.id == "direct_messages.E003"
    assert "'MESAGE_MAX_LENGTH'" in error.msg
    assert error.hint == "Did you mean 'MESSAGE_MAX_LENGTH'?"


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("MESSAGE_MAX_LENGTH", "1000", "must be an integer"),
        ("MESSAGE_MAX_LENGTH", 0, "must be at least 1"),
        ("SEND_RATE_LIMIT", True, "must be int"),
        ("TYPING_THROTTLE_SECONDS", -1, "must be at least 0"),
        ("TYPING_THROTTLE_SECONDS", 0.5, None),
        ("REDIS_URL", None, "must be a string"),
        ("AUTHENTICATORS", [], "must be a non-empty list of dotted paths"),
        ("API_ROUTERS", {"/x": 1}, "must be a dict of URL prefix to dotted path"),
        ("HIDDEN_WORDS", [], None),
        ("HIDDEN_WORDS", ["spam", "free money", "🍆"], None),
        ("HIDDEN_WORDS", "spam", "must be a list of words or phrases"),
        ("HIDDEN_WORDS", ["spam", " "], "must be a list of words or phrases"),
        ("HIDDEN_WORDS", [None], "must be a list of words or phrases"),
    ],
)
def test_a_value_of_the_wrong_kind_is_an_error(settings, key, value, problem):
    settings.DIRECT_MESSAGES = {key: value}
    errors = checks.check_settings(None)
    if problem is None:
        assert errors == []
        return
    assert ids(errors) == ["direct_messages.E004"]
    assert problem in errors[0].msg and key in errors[0].msg


def test_a_user_adapter_that_cannot_be_imported(settings):
    settings.DIRECT_MESSAGES = {"USER_ADAPTER": "host.adapters.Nope"}
    [error] = checks.check_settings(None)
    assert error.id == "direct_messages.E005"
    assert "cannot be imported" in error.msg and "DefaultUserAdapter" in error.hint


def test_a_user_adapter_without_the_interface(settings):
    settings.DIRECT_MESSAGES = {"USER_ADAPTER": "builtins.object"}
    [error] = checks.check_settings(None)
    assert error.id == "direct_messages.E005"
    assert "lacks ['get_handle'" in error.msg


def test_an_authenticator_that_cannot_be_imported(settings):
    settings.DIRECT_MESSAGES = {"AUTHENTICATORS": ["direct_messages.auth.NoSuchAuthenticator"]}
    [error] = checks.check_settings(None)
    assert error.id == "direct_messages.E006"
    assert "NoSuchAuthenticator" in error.msg


def test_an_api_router_that_cannot_be_imported(settings):
    settings.DIRECT_MESSAGES = {"API_ROUTERS": {"/x": "host.api.nope"}}
    [error] = checks.check_settings(None)
    assert error.id == "direct_messages.E008"
    assert "'host.api.nope'" in error.msg


@override_settings(ROOT_URLCONF="tests.unit.urls_without_app")
def test_urls_not_included_is_an_error():
    [error] = checks.check_urls_included(None)
    assert error.id == "direct_messages.E007"
    assert 'include("direct_messages.urls")' in error.hint


def test_manage_py_check_runs_them(settings):
    settings.DIRECT_MESSAGES = {"MESSAGE_MAX_LENGTH": "long"}
    with pytest.raises(SystemCheckError, match=r"direct_messages\.E004"):
        call_command("check")


def test_sqlite_without_immediate_transactions_is_a_warning(settings):
    default = {**settings.DATABASES["default"], "ENGINE": "django.db.backends.sqlite3"}
    settings.DATABASES = {"default": {**default, "OPTIONS": {}}}
    [warning] = checks.check_sqlite_transactions(None)
    assert warning.id == "direct_messages.W001"
    assert '"transaction_mode": "IMMEDIATE"' in warning.hint
    settings.DATABASES = {"default": {**default, "OPTIONS": {"transaction_mode": "IMMEDIATE"}}}
    assert checks.check_sqlite_transactions(None) == []
