"""The web client in a real browser with the app mounted under ``chat/``.

A daphne runs the demo host with ``tests.settings_chat_prefix`` (the app at ``/chat/``,
the host's login at ``/accounts/``): two people log in, find each other, exchange a
text and a photo live, see the conversation in their inboxes and log out, and no page
asks for anything at the root's ``/api/`` or ``/ws/``: every root the client uses
comes from the page's configuration.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ACTION_TIMEOUT_MS, DESKTOP, PASSWORD, Person, login, png_bytes
from tests.e2e.test_web_client import bubbles, composer, connected, inbox_row, send_text
from tests.support import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.live]

# Where a page of the app may send requests: the app, the static files, the host's login.
ALLOWED = ("/chat/", "/static/", "/accounts/")
# The only refusals a page may meet on the way (each logged to the console by Chromium).
EXPECTED_REFUSALS = {
    # The peer's presence, asked for as a conversation opens, is a 404 until it has a
    # message.
    404: [("GET", r"/chat/api/users/[^/]+/presence")],
}


@pytest.fixture
def chat_server(asgi_server_factory: Callable[..., LiveServer], tmp_path: Path) -> LiveServer:
    """A daphne on tests.settings_chat_prefix. Its database was migrated with the demo's
    settings (live_database_url): the same apps, so the same tables."""
    return asgi_server_factory(
        os.environ.get("REDIS_URL") or None,
        MEDIA_ROOT=str(tmp_path / "media"),
        DJANGO_SETTINGS_MODULE="tests.settings_chat_prefix",  # wins over the copied environ
    )


class Watched:
    """Browser contexts whose pages record every request and WebSocket they open, and
    every uncaught script error, console error and dialog."""

    def __init__(self, browser: Any, base: str) -> None:
        self.browser = browser
        self.base = base
        self.contexts: list[Any] = []
        self.urls: list[str] = []
        self.sockets: list[str] = []
        self.problems: list[str] = []

    def page(self, who: str) -> Any:
        context = self.browser.new_context(base_url=self.base, viewport=DESKTOP)
        self.contexts.append(context)
        return self.watch(context.new_page(), who)

    def tab(self, page: Any, who: str) -> Any:
        return self.watch(page.context.new_page(), who)

    def watch(self, page: Any, who: str) -> Any:
        page.set_default_timeout(ACTION_TIMEOUT_MS)
        page.on("request", lambda request: self.urls.append(request.url))
        page.on("websocket", lambda ws: self.sockets.append(ws.url))
        page.on("pageerror", lambda exc: self.problems.append(f"{who}: {exc}"))

        def on_response(response: Any) -> None:
            path = urlsplit(response.url).path
            expected = any(
                response.request.method == method and re.fullmatch(pattern, path)
                for method, pattern in EXPECTED_REFUSALS.get(response.status, ())
            )
            if response.status >= 400 and not expected:
                self.problems.append(f"{who}: {response.status} {response.request.method} {path}")

        def on_console(message: Any) -> None:
            # A refused request is logged as "Failed to load resource": on_response judges it.
            if message.type == "error" and not message.text.startswith("Failed to load resource"):
                self.problems.append(f"{who}: console: {message.text} at {message.location}")

        def on_dialog(dialog: Any) -> None:
            self.problems.append(f"{who}: dialog {dialog.type} {dialog.message!r}")
            dialog.dismiss()

        page.on("response", on_response)
        page.on("console", on_console)
        page.on("dialog", on_dialog)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def watched(browser: Any, chat_server: LiveServer) -> Iterator[Watched]:
    pages = Watched(browser, chat_server.http)
    yield pages
    pages.close()
    assert not pages.problems, pages.problems


def status_of(method: str, url: str) -> int:
    request = urllib.request.Request(url, data=b"{}" if method == "POST" else None, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_web_client_works_under_the_chat_prefix(
    chat_server: LiveServer, watched: Watched
) -> None:
    base = chat_server.http
    # The demo's signup router rides on the app's API (DIRECT_MESSAGES["API_ROUTERS"]),
    # so it is under the prefix too; nothing of the app answers at the root.
    alice, bob = Person(f"{base}/chat", "Alice"), Person(f"{base}/chat", "Bob")
    assert status_of("POST", f"{base}/api/auth/signup") == 404
    assert status_of("GET", f"{base}/direct/inbox/") == 404

    # Alice opens the inbox, is sent to the host's login, and comes back to it.
    alice_page = watched.page(alice.account)
    alice_page.goto("/chat/direct/inbox/")
    expect(alice_page).to_have_url(f"{base}/accounts/login/?next=/chat/direct/inbox/")
    alice_page.get_by_label("Account").fill(alice.account)
    alice_page.get_by_label("Password").fill(PASSWORD)
    alice_page.get_by_role("button", name="Log in").click()
    alice_page.wait_for_url(f"{base}/chat/direct/inbox/")
    expect(alice_page.locator("body")).to_have_attribute("data-inbox-socket", "open")

    # She finds Bob with the new-message dialog (the users API, the thread URL).
    alice_page.get_by_role("button", name="Send message").click()
    alice_page.get_by_role("searchbox", name="To:").fill(bob.account)
    alice_page.locator("#new-message-results").get_by_role(
        "link", name=re.compile(bob.account)
    ).click()
    alice_page.wait_for_url(f"{base}/chat/direct/t/{bob.account}/")
    connected(alice_page)

    # Bob logs in without a next (LOGIN_REDIRECT_URL) and opens the conversation.
    bob_page = watched.page(bob.account)
    login(bob_page, bob.account, PASSWORD)
    assert bob_page.url == f"{base}/chat/direct/inbox/"
    bob_page.goto(f"/chat/direct/t/{alice.account}/")
    connected(bob_page)

    send_text(alice_page, "Hello from under /chat/")
    expect(bubbles(bob_page, "theirs").last).to_have_text("Hello from under /chat/")
    expect(alice_page.locator(".msg-row.mine").last).not_to_have_class(re.compile("pending"))

    bob_page.set_input_files(
        "#composer-file",
        files=[{"name": "sunset.png", "mimeType": "image/png", "buffer": png_bytes()}],
    )
    expect(bob_page.locator(".tile.tile-done")).to_have_count(1)
    composer(bob_page).press("Enter")

    photo = alice_page.locator(".msg-row.theirs .att-image img").last
    expect(photo).to_have_attribute("src", re.compile(r"/chat/api/attachments/\d+/thumbnail$"))
    alice_page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=photo.element_handle()
    )
    expect(inbox_row(alice_page, bob)).to_contain_text("Sent a photo")  # live, /chat/ws/inbox/
    expect(inbox_row(bob_page, alice)).to_contain_text("You sent a photo")
    stored = alice.history(bob)  # /chat/api/dm/<bob>/messages, with her token
    assert [m["message"] for m in stored].count("Hello from under /chat/") == 1, stored
    assert sum(len(m["attachments"]) for m in stored) == 1, stored

    # Both inbox pages, loaded afresh, list the conversation, linked to its thread.
    bob_inbox = watched.tab(bob_page, bob.account)
    bob_inbox.goto("/chat/direct/inbox/")
    expect(inbox_row(bob_inbox, alice)).to_contain_text("You sent a photo")
    alice_page.get_by_role("link", name="Messages").click()
    alice_page.wait_for_url(f"{base}/chat/direct/inbox/")
    row = inbox_row(alice_page, bob)
    expect(row).to_contain_text("Sent a photo")
    expect(row.get_by_role("link")).to_have_attribute("href", f"/chat/direct/t/{bob.account}/")
    expect(alice_page.locator("body")).to_have_attribute("data-inbox-socket", "open")

    # The log-out form posts to /chat/logout/ and lands on LOGOUT_REDIRECT_URL, the
    # host's login page, from the inbox and from a conversation (whose socket the logout
    # closes with 4401: the page must not send itself to the login with a ?next= instead).
    alice_page.get_by_role("button", name="Log out").click()
    alice_page.wait_for_url(f"{base}/accounts/login/")
    alice_page.goto("/chat/direct/inbox/")
    expect(alice_page).to_have_url(f"{base}/accounts/login/?next=/chat/direct/inbox/")
    assert urlsplit(bob_page.url).path == f"/chat/direct/t/{alice.account}/", bob_page.url
    bob_page.get_by_role("button", name="Log out").click()
    bob_page.wait_for_url(f"{base}/accounts/login/")
    bob_page.wait_for_timeout(500)  # a late redirect of the page's own would show here
    expect(bob_page).to_have_url(f"{base}/accounts/login/")

    # Every request went to the app, the static files or the login; the sockets too.
    server = urlsplit(base).netloc
    elsewhere = [
        url
        for url in watched.urls + watched.sockets
        if urlsplit(url).scheme in {"http", "https", "ws", "wss"}
        and (urlsplit(url).netloc != server or not urlsplit(url).path.startswith(ALLOWED))
    ]
    assert not elsewhere, elsewhere
    paths = [urlsplit(url).path for url in watched.urls]
    assert any(p.startswith("/chat/api/") for p in paths), paths
    assert "/chat/logout/" in paths, paths
    socket_paths = {urlsplit(url).path for url in watched.sockets}
    assert {f"/chat/ws/dm/{bob.account}/", f"/chat/ws/dm/{alice.account}/"} <= socket_paths
    assert "/chat/ws/inbox/" in socket_paths, socket_paths
