"""The demo host with the app under ``chat/`` (tests/urls_chat_prefix.py), for server
processes started with ``DJANGO_SETTINGS_MODULE=tests.settings_chat_prefix``.

Only the URLconf differs from instamg's settings; the admin is not mounted here.
"""

from instamg.settings import *  # noqa: F403

ROOT_URLCONF = "tests.urls_chat_prefix"
LOGIN_URL = "users:login"  # /accounts/login/
LOGIN_REDIRECT_URL = "direct_messages:inbox"  # /chat/direct/inbox/
LOGOUT_REDIRECT_URL = "users:login"
