"""Every page has a Content-Security-Policy: the host's pages (login, signup, the admin,
the API's docs) the host's policy, the app's pages and downloads their stricter own."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, override_settings

from direct_messages.views import CONTENT_SECURITY_POLICY as APP_POLICY
from instamg.middleware import CONTENT_SECURITY_POLICY as HOST_POLICY

pytestmark = pytest.mark.django_db

HOST_PAGES = [
    "/accounts/login/",
    "/accounts/signup/",
    "/admin/login/",
    "/api/docs",
    "/api/openapi.json",
    "/api/nope",  # the API's errors too
]


def directives(policy: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


@pytest.mark.parametrize("path", HOST_PAGES)
def test_host_pages_have_the_hosts_policy(path):
    response = Client().get(path)
    assert response.status_code in (200, 404), (path, response.status_code)
    assert response.headers["Content-Security-Policy"] == HOST_POLICY


def test_the_hosts_policy_allows_no_inline_script_no_plugin_no_framing():
    policy = directives(HOST_POLICY)
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["default-src"] == "'self'" and policy["base-uri"] == "'none'"
    assert "unsafe" not in HOST_POLICY


def test_admin_pages_of_a_staff_user_have_the_hosts_policy(make_user: Any):
    admin = make_user("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    for path in ("/admin/", "/admin/users/user/", f"/admin/users/user/{admin.pk}/change/"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["Content-Security-Policy"] == HOST_POLICY, path


def test_the_apps_pages_keep_their_own_stricter_policy(alice: Any):
    client = Client()
    client.force_login(alice)
    response = client.get("/direct/inbox/")
    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"] == APP_POLICY


def test_api_docs_load_swagger_from_this_site_not_a_cdn():
    page = Client().get("/api/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in page
    assert "cdn." not in page and "<script>" not in page


@override_settings(DEBUG=True)
def test_debug_error_pages_go_without_so_their_inline_styles_work():
    assert "Content-Security-Policy" not in Client().get("/no/such/page/").headers
    assert Client().get("/accounts/login/").headers["Content-Security-Policy"] == HOST_POLICY
