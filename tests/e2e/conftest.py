"""Browser fixtures: Debian's chromium driven by Playwright (sync API), one live daphne.

The browser and the server are module-scoped so a module pays for them once; every
test signs up fresh accounts, so tests do not see each other's conversations.
They fail when chromium or playwright is missing (``.ci/run`` installs both).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import LiveServer, http_json, need, server_env

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct-horse-battery"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 780}


def launch_browser(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


# Generous waits: the machine running the suite may be busy (two servers, a browser).
ACTION_TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    need(
        Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is not None,
        f"no browser: {CHROMIUM} not found (apt-get install chromium, or set CHROMIUM_PATH)",
    )
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:  # pragma: no cover - the dev extra pins it
        need(False, "playwright is not installed (pip install -e '.[dev]')")
        raise
    expect.set_options(timeout=ACTION_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def web_server(
    live_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One daphne for the module, with its uploads in a temporary MEDIA_ROOT."""
    tmp = tmp_path_factory.mktemp("e2e")
    env = server_env(
        live_database_url, os.environ.get("REDIS_URL") or None, MEDIA_ROOT=str(tmp / "media")
    )
    server = LiveServer(env=env, log_path=tmp / "server.log").start()
    yield server
    server.stop()
    log = (tmp / "server.log").read_text(errors="replace")
    if "Traceback" in log:
        print(f"--- e2e server log ---\n{log[-4000:]}")


@pytest.fixture
def own_server(live_database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A daphne of the test's own, for tests that stop and restart it.

    (Not pytest-django's ``live_server``: asking for that name makes pytest-django set
    up a test database, which cannot happen inside Playwright's event loop.)
    """
    env = server_env(
        live_database_url, os.environ.get("REDIS_URL") or None, MEDIA_ROOT=str(tmp_path / "media")
    )
    server = LiveServer(env=env, log_path=tmp_path / "server.log").start()
    yield server
    server.stop()


class Person:
    """An account on the live server, with a token for HTTP calls made by the test."""

    def __init__(self, base: str, name: str) -> None:
        account = f"{name.lower()}_{uuid.uuid4().hex[:8]}"
        status, body = http_json(
            "POST",
            f"{base}/api/auth/signup",
            {"account": account, "password": PASSWORD, "name": name},
        )
        assert status == 201, body
        self.base = base
        self.account = account
        self.name = name
        self.token = body["token"]

    def send(self, to: Person, text: str, **extra: Any) -> dict[str, Any]:
        body = {"client_id": str(uuid.uuid4()), "message": text, **extra}
        status, message = http_json(
            "POST", f"{self.base}/api/dm/{to.account}/messages", body, self.token
        )
        assert status == 201, message
        return message  # type: ignore[no-any-return]

    def history(self, other: Person) -> list[dict[str, Any]]:
        status, page = http_json(
            "GET", f"{self.base}/api/dm/{other.account}/messages?limit=200", token=self.token
        )
        assert status == 200, page
        return page["results"]  # type: ignore[no-any-return]


@pytest.fixture
def people(web_server: LiveServer) -> Callable[..., list[Person]]:
    def make(*names: str) -> list[Person]:
        return [Person(web_server.http, name) for name in names]

    return make


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Log a person in through the login form; returns a page at ``path``.

    Every page fails the test on an uncaught script error or a JavaScript dialog
    (``alert`` from an injected handler would be one).
    """
    contexts: list[Any] = []
    problems: list[str] = []

    def watch(page: Any, who: str) -> Any:
        page.set_default_timeout(ACTION_TIMEOUT_MS)
        page.on("pageerror", lambda exc: problems.append(f"{who}: {exc}"))

        def on_dialog(dialog: Any) -> None:
            problems.append(f"{who}: dialog {dialog.type} {dialog.message!r}")
            dialog.dismiss()

        page.on("dialog", on_dialog)
        return page

    def open_(person: Person, path: str = "/direct/inbox/", viewport: Any = None) -> Any:
        context = browser.new_context(base_url=person.base, viewport=viewport or DESKTOP)
        contexts.append(context)
        page = watch(context.new_page(), person.account)
        login(page, person.account, PASSWORD)
        if path != "/direct/inbox/":
            page.goto(path)
        return page

    def another(page: Any, path: str) -> Any:
        """A second tab of the same session."""
        tab = watch(page.context.new_page(), "second tab")
        tab.goto(path)
        return tab

    open_.another = another  # type: ignore[attr-defined]
    yield open_
    for context in contexts:
        context.close()
    assert not problems, problems


def login(page: Any, account: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Account").fill(account)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/direct/inbox/")


def png_bytes(
    width: int = 320, height: int = 240, color: tuple[int, int, int] = (255, 99, 71)
) -> bytes:
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), color)
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(255, 220, 90))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


__all__ = ["DESKTOP", "PHONE", "Person", "png_bytes"]
