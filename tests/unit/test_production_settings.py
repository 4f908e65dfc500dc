"""The production settings the README documents pass ``check --deploy``, and error
reports never show a credential."""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys

from django.test import RequestFactory, override_settings
from django.views.debug import ExceptionReporter, get_default_exception_reporter_filter

from tests.support import ROOT


def documented_production_environment() -> dict[str, str]:
    """The variables README's "Running at scale" exports, with a real ``SECRET_KEY``."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running at scale", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    env = {}
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            env.update(word.split("=", 1) for word in words[1:])
    assert env.get("DEBUG") == "false" and "SECRET_KEY" in env, block
    env["SECRET_KEY"] = secrets.token_urlsafe(50)  # the README's is "..."
    return env


def test_check_deploy_is_clean_with_the_production_environment_the_readme_documents():
    documented = documented_production_environment()
    for name in ("SECURE_SSL_REDIRECT", "SECURE_PROXY_SSL_HEADER"):
        assert name in documented, f"README's production environment does not set {name}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "DM_"))}
    env.update(documented, DJANGO_SETTINGS_MODULE="instamg.settings")
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "DEBUG"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues (0 silenced)." in output, output


def test_production_defaults_send_hsts_and_secure_cookies_but_no_https_redirect():
    # The benchmarks and live tests run DEBUG=false over plain HTTP on loopback: nothing
    # may redirect them unless SECURE_SSL_REDIRECT asks for it.
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SECURE_HSTS_SECONDS, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, getattr(s, 'SECURE_PROXY_SSL_HEADER', None))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURE_")}
    env.update(DEBUG="false", SECRET_KEY="x" * 60, DJANGO_SETTINGS_MODULE="instamg.settings")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["31536000", "False", "True", "True", "None"], out.stderr
    env["SECURE_PROXY_SSL_HEADER"] = "HTTP_X_FORWARDED_PROTO"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split()[-2:] == ["('HTTP_X_FORWARDED_PROTO',", "'https')"], out.stderr


# --- Error reports ----------------------------------------------------------------------

PASSWORD = "s3cr3t-p4ss"
DATABASE_URL = f"postgres://app:{PASSWORD}@db:5432/instamg"
REDIS_URL = f"redis://:{PASSWORD}@redis:6379/0"
CREDENTIALS = override_settings(
    DATABASE_URL=DATABASE_URL,
    REDIS_URL=REDIS_URL,
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    },
    DIRECT_MESSAGES={"REDIS_URL": REDIS_URL},
    RQ_QUEUES={"default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600}},
    CACHE_LOCATION=f"redis://cache:{PASSWORD}@cache:6379/1",
)


@CREDENTIALS
def test_error_reports_hide_connection_urls_and_any_password_in_a_url():
    reporter_filter = get_default_exception_reporter_filter()
    shown = reporter_filter.get_safe_settings()
    substitute = reporter_filter.cleansed_substitute
    assert shown["DATABASE_URL"] == substitute and shown["REDIS_URL"] == substitute
    assert shown["DIRECT_MESSAGES"]["REDIS_URL"] == substitute
    assert shown["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"] == [
        f"redis://:{substitute}@redis:6379/0"
    ]
    assert shown["RQ_QUEUES"]["default"]["URL"] == f"redis://:{substitute}@redis:6379/0"
    assert shown["CACHE_LOCATION"] == f"redis://cache:{substitute}@cache:6379/1"
    assert PASSWORD not in repr(shown)
    # Django's own rules still hold, and URLs without a password are left alone.
    assert shown["SECRET_KEY"] == substitute
    assert shown["STATIC_URL"] == "/static/"


@CREDENTIALS
def test_the_debug_page_shows_no_password():
    request = RequestFactory().get("/boom")
    try:
        raise RuntimeError(f"cannot connect to {DATABASE_URL.split('@')[1]}")
    except RuntimeError:
        html = ExceptionReporter(request, *sys.exc_info()).get_traceback_html()
    assert "DATABASE_URL" in html and "CHANNEL_LAYERS" in html
    assert PASSWORD not in html
