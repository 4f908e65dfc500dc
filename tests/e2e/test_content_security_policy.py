"""The host's Content-Security-Policy breaks nothing it covers: the admin and the API's
interactive docs work in a real browser, and the browser reports no violation."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import PASSWORD
from tests.support import ROOT, LiveServer

pytestmark = [pytest.mark.live, pytest.mark.browser]

# Collects what the browser refused, whatever the console says.
WATCH_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


def superuser(server: LiveServer) -> str:
    account = f"root_{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [sys.executable, "manage.py", "createsuperuser", "--noinput", "--account", account],
        cwd=ROOT,
        env={**server.env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD},
        check=True,
        capture_output=True,
    )
    return account


PROBLEMS: dict[Any, list[str]] = {}  # each open page's script errors and CSP reports


@pytest.fixture
def page(browser: Any, web_server: LiveServer) -> Iterator[Any]:
    """A page that records every CSP violation (``violations(page)``) and script error."""
    context = browser.new_context(base_url=web_server.http)
    context.add_init_script(WATCH_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(15_000)
    PROBLEMS[page] = problems = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on(
        "console",
        lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    yield page
    context.close()
    del PROBLEMS[page]


def violations(page: Any) -> list[str]:
    return [*page.evaluate("window.cspViolations"), *PROBLEMS[page]]


def test_the_admin_works_under_the_policy(page, web_server):
    account = superuser(web_server)
    page.goto("/admin/login/")
    page.fill("#id_username", account)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    assert violations(page) == []
    page.goto("/admin/users/user/")
    page.get_by_role("link", name=account).click()  # the change form, with its widgets
    page.wait_for_selector("#user_form")
    page.locator("#id_date_joined_0").wait_for()
    page.get_by_role("link", name="Today").first.click()  # DateTimeShortcuts.js
    assert violations(page) == []
    page.goto("/admin/users/user/add/")
    page.wait_for_selector("#user_form")
    page.goto("/admin/direct_messages/room/")
    assert page.locator("#changelist").count() == 1
    assert violations(page) == []


def test_the_api_docs_render_under_the_policy(page):
    page.goto("/api/docs")
    page.locator(".swagger-ui .info .title").wait_for()
    page.locator(".opblock").first.wait_for()
    assert "Direct messages" in page.locator(".swagger-ui .info .title").inner_text()
    page.locator(".opblock-summary").first.click()  # expands, renders its schemas
    page.locator(".opblock-body").first.wait_for()
    assert violations(page) == []
