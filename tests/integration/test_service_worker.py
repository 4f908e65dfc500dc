"""The service worker's script (``<prefix>direct/sw.js``): served as JavaScript, never
cached without asking, under the app's prefix so that its scope covers the app's
pages, with a policy of its own; and the pages' policy lets them register it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from direct_messages.views import CONTENT_SECURITY_POLICY as APP_POLICY
from tests.integration.test_content_security_policy import directives

pytestmark = pytest.mark.django_db


def test_the_worker_is_javascript_revalidated_on_every_check():
    response = Client().get("/direct/sw.js")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/javascript; charset=utf-8"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Content-Type-Options"] == "nosniff"
    # Its scope is its directory, /direct/: no Service-Worker-Allowed needed or given.
    assert "Service-Worker-Allowed" not in response
    body = response.content.decode()
    for event in ("push", "notificationclick", "install", "activate"):
        assert f'addEventListener("{event}"' in body
    assert "{%" not in body and "{{" not in body  # a template: nothing left unrendered


def test_the_worker_has_its_own_policy_that_allows_nothing_to_load():
    # A worker's policy comes with its script: it fetches nothing and imports nothing.
    assert Client().get("/direct/sw.js")["Content-Security-Policy"] == "default-src 'none'"


def test_the_worker_needs_no_login_and_takes_only_safe_methods():
    assert Client().head("/direct/sw.js").status_code == 200
    assert Client().post("/direct/sw.js").status_code == 405


def test_the_pages_policy_allows_this_sites_workers_and_nothing_more(alice: Any):
    policy = directives(APP_POLICY)
    assert policy["worker-src"] == "'self'"
    without_it = {k: v for k, v in policy.items() if k != "worker-src"}
    assert without_it == {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' blob: data: https:",
        "media-src": "'self' blob: https:",
        "connect-src": "'self'",
        "object-src": "'none'",
        "base-uri": "'none'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    client = Client()
    client.force_login(alice)
    assert client.get("/direct/inbox/")["Content-Security-Policy"] == APP_POLICY


def config_of(page: Any) -> dict[str, Any]:
    marker = b'id="dm-config" type="application/json">'
    return json.loads(page.content.split(marker)[1].split(b"</script>")[0])  # type: ignore[no-any-return]


@pytest.mark.urls("tests.urls_chat_prefix")
def test_under_a_prefix_the_worker_and_its_scope_move_with_the_app(alice: Any, bob: Any):
    response = Client().get("/chat/direct/sw.js")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/javascript; charset=utf-8"
    assert Client().get("/direct/sw.js").status_code == 404
    client = Client()
    client.force_login(alice)
    for path in ("/chat/direct/inbox/", "/chat/direct/t/bob/"):
        page = client.get(path)
        assert page.status_code == 200
        # The page registers the worker from here; its default scope, /chat/direct/,
        # covers this page and every conversation.
        assert config_of(page)["service_worker_url"] == "/chat/direct/sw.js"
