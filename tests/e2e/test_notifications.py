"""Web Push in a real browser (docs/notifications.md, "In the web client").

The page registers the service worker (``/direct/sw.js``); a push is delivered to it
through the DevTools protocol (``ServiceWorker.deliverPushMessage``: there is no push
service offline) with the payload ``push.notification_payload`` makes for a real
message, and the worker shows it. A click brings up the conversation.

A click is a real one: Chromium shows the notification to a desktop notification server
on a private D-Bus (tests/desktop_notifications.py), which clicks it as a person would.

Two things an offline headless Chromium cannot do without help, and what is tested:

- ``pushManager.subscribe``: in a Playwright context (off the record) Chromium refuses
  it at once (``AbortError: Registration failed - permission denied``: no Push API in
  incognito); in a persistent profile it never settles (the registration with Google's
  push service cannot complete). The "Enable notifications" flow is tested for real up
  to that call, and beyond it with ``subscribe`` answered by a stand-in subscription.
- A click from the DevTools protocol: nothing there clicks a notification, and a click's
  "window interaction" (what lets a worker focus a tab or open a window) cannot be
  granted from outside. Hence the D-Bus server, in a browser with a profile of its own:
  the click of a notification of a DevTools-made context (``browser.new_context()``, off
  the record) closes it and dispatches no ``notificationclick``. The click handler's
  choices between tabs are also run directly in the worker (``openConversation``),
  where Chromium refuses the focus or the window and says which one it refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from tests.desktop_notifications import NotificationServer
from tests.e2e.conftest import (
    ACTION_TIMEOUT_MS,
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    PASSWORD,
    Person,
    login,
)
from tests.push_service import BrowserSubscription, b64url_decode
from tests.support import ROOT, LiveServer, http_json

pytestmark = [pytest.mark.browser, pytest.mark.live]

# The payload of the newest message from SENDER to RECIPIENT, as the worker task builds it.
PAYLOAD_SCRIPT = """
import json
from direct_messages.models import DirectMessage, RoomMember
from direct_messages.push import notification_payload
message = DirectMessage.objects.filter(sender__account=SENDER).latest("pk")
member = RoomMember.objects.get(room=message.room, user__account=RECIPIENT)
print(json.dumps(notification_payload(message, member)))
"""


def notification_payload(server: LiveServer, sender: Person, recipient: Person) -> dict[str, Any]:
    script = PAYLOAD_SCRIPT.replace("SENDER", repr(sender.account)).replace(
        "RECIPIENT", repr(recipient.account)
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=server.env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture
def notifying_page(browser: Any, web_server: LiveServer) -> Iterator[Callable[..., Any]]:
    """A logged-in page in a context that may show notifications (as after the person
    said yes to the browser's prompt), failing the test on any script error."""
    contexts: list[Any] = []
    problems: list[str] = []

    def open_(person: Person, *, grant: bool = True, init_script: str = "") -> Any:
        context = browser.new_context(base_url=web_server.http, viewport=DESKTOP)
        contexts.append(context)
        if grant:
            context.grant_permissions(["notifications"], origin=web_server.http)
        if init_script:
            context.add_init_script(init_script)
        page = context.new_page()
        page.set_default_timeout(ACTION_TIMEOUT_MS)
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        login(page, person.account, PASSWORD)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not problems, problems


ACTIVATED = """async () => {
  const worker = (await navigator.serviceWorker.ready).active;
  if (worker.state !== "activated") {
    await new Promise((done) => worker.addEventListener("statechange", () => {
      if (worker.state === "activated") done();
    }));
  }
  return worker.state;
}"""


def active_worker(page: Any) -> Any:
    """The page's service worker, once activated (the page registers it on load).

    ``serviceWorker.ready`` resolves as the worker starts activating, before its
    ``activate`` handler (``clients.claim()``) has finished: wait for "activated"."""
    state = page.evaluate(ACTIVATED)
    assert state == "activated"
    [worker] = [w for w in page.context.service_workers if w.url.endswith("/direct/sw.js")]
    return worker


class PushDevTools:
    """Pushes to the page's service worker through the DevTools protocol.

    ``deliverPushMessage`` needs the registration's id, which only the ServiceWorker
    domain's events tell; they arrive after ``enable``, so wait for the one that shows
    the version of the registration activated and running. A push sent to a worker
    that is not yet activated is not delivered (Chromium refuses push events before
    activation), which is why a fixed sleep made deliveries flaky.
    """

    def __init__(self, page: Any, origin: str) -> None:
        self.origin = origin
        self.session = page.context.new_cdp_session(page)
        self.versions: dict[str, dict[str, Any]] = {}
        self.session.on("ServiceWorker.workerVersionUpdated", self._versions)
        self.session.send("ServiceWorker.enable")

    def _versions(self, event: dict[str, Any]) -> None:
        for version in event["versions"]:
            self.versions[version["versionId"]] = version

    def registration_id(self, script_url: str) -> str:
        deadline = time.monotonic() + ACTION_TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            for version in list(self.versions.values()):
                if version["scriptURL"] == script_url and version["status"] == "activated":
                    return str(version["registrationId"])
            time.sleep(0.05)  # events arrive on Playwright's thread between sends
            self.session.send("ServiceWorker.enable")
        raise AssertionError(f"no activated worker for {script_url}: {self.versions}")

    def push(self, script_url: str, payload: dict[str, Any]) -> None:
        self.session.send(
            "ServiceWorker.deliverPushMessage",
            {
                "origin": self.origin,
                "registrationId": self.registration_id(script_url),
                "data": json.dumps(payload),
            },
        )


NOTIFICATIONS = """async () => {
  const registration = await navigator.serviceWorker.ready;
  return (await registration.getNotifications()).map((n) => ({
    title: n.title, body: n.body, tag: n.tag, data: n.data, renotify: n.renotify,
  }));
}"""


def notifications(
    page: Any, count: int = 1, body: str | None = None, *, timeout_ms: int = ACTION_TIMEOUT_MS
) -> list[dict[str, Any]]:
    """The notifications shown, once there are ``count`` (the last with ``body``)."""
    deadline = time.monotonic() + timeout_ms / 1000
    shown: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        shown = page.evaluate(NOTIFICATIONS)
        if len(shown) == count and (body is None or shown[-1]["body"] == body):
            return shown
        page.wait_for_timeout(100)
    raise AssertionError(f"expected {count} notification(s), saw {shown}")


def push_shown(
    devtools: PushDevTools,
    worker: Any,
    page: Any,
    payload: dict[str, Any],
    count: int = 1,
    body: str | None = None,
) -> list[dict[str, Any]]:
    """Push ``payload`` to ``worker`` (``page``'s); the notifications once ``count`` show.

    ``deliverPushMessage`` answers before the worker has the push and says nothing of a
    push it dropped: once in CI (two suites on two cores) a push to an activated worker
    showed nothing at all. A push service delivers again what was not taken; so does
    this, once, after 5 s without the notification. Every payload here has a tag, so a
    second delivery replaces the first rather than adding one."""
    devtools.push(worker.url, payload)
    try:
        return notifications(page, count, body, timeout_ms=5_000)
    except AssertionError:
        devtools.push(worker.url, payload)
        return notifications(page, count, body)


def test_a_push_to_the_pages_worker_shows_the_servers_notification(
    people, notifying_page, web_server
):
    alice, bob = people("Alice", "Bob")
    alice.send(bob, "hi Bob")  # so that Bob's message is no request
    bob.send(alice, "  are you   coming tonight?  ")
    payload = notification_payload(web_server, bob, alice)
    assert payload["url"] == f"/direct/t/{bob.account}/"

    page = notifying_page(alice)
    worker = active_worker(page)
    assert worker.url == f"{web_server.http}/direct/sw.js"
    devtools = PushDevTools(page, web_server.http)
    [shown] = push_shown(devtools, worker, page, payload)
    assert shown["title"] == "Bob"  # the display name
    assert shown["body"] == "are you coming tonight?"
    assert shown["tag"] == payload["tag"] and shown["tag"].startswith("dm.")
    assert shown["renotify"] is True  # the replacement alerts again
    assert shown["data"] == {
        "url": f"{web_server.http}/direct/t/{bob.account}/",
        "message_id": payload["message_id"],
        "badge": payload["badge"],
    }
    assert payload["badge"] == 1

    # The next message of the conversation replaces it; another conversation's adds one.
    bob.send(alice, "hello?")
    [shown] = push_shown(
        devtools, worker, page, notification_payload(web_server, bob, alice), body="hello?"
    )
    assert shown["data"]["badge"] == 2
    (carol,) = people("Carol")
    carol.send(alice, "hi from Carol")
    carols = notification_payload(web_server, carol, alice)
    shown_all = push_shown(devtools, worker, page, carols, count=2)
    assert {(n["title"], n["body"]) for n in shown_all} == {
        ("Bob", "hello?"),
        ("Carol", "Sent you a message request"),
    }


def test_a_payload_pointing_elsewhere_opens_the_inbox_not_another_site(
    people, notifying_page, web_server
):
    (alice,) = people("Alice")
    page = notifying_page(alice)
    worker = active_worker(page)
    devtools = PushDevTools(page, web_server.http)
    payload = {"title": "x", "body": "y", "url": "https://evil.example/", "tag": "t"}
    [shown] = push_shown(devtools, worker, page, payload)
    assert shown["data"]["url"] == f"{web_server.http}/direct/inbox/"


def open_conversation(worker: Any, url: str) -> str:
    """Run the click handler's work in the worker: "" if it finished, else its error."""
    return worker.evaluate(  # type: ignore[no-any-return]
        "(url) => openConversation(url).then(() => '', (error) => `${error.name}: ${error.message}`)",
        url,
    )


def test_the_click_handler_picks_the_tab_to_use(people, notifying_page, web_server):
    alice, bob = people("Alice", "Bob")
    bob.send(alice, "look at this")
    page = notifying_page(alice)  # on the inbox
    worker = active_worker(page)
    url = f"{web_server.http}/direct/t/{bob.account}/"

    # A tab on the inbox becomes the conversation (and would be focused: refused here).
    assert open_conversation(worker, url) == "InvalidAccessError: Not allowed to focus a window."
    page.wait_for_url(url)
    expect(page.locator("#thread-title")).to_have_text("Bob")
    expect(page.locator("body")).to_have_attribute("data-thread-socket", "open")

    # A tab already on it is focused, not navigated, and no window opens.
    assert open_conversation(worker, url) == "InvalidAccessError: Not allowed to focus a window."
    assert len(page.context.pages) == 1

    # Another conversation's tab is left alone (it may hold a draft): a window opens.
    (carol,) = people("Carol")
    other = f"{web_server.http}/direct/t/{carol.account}/"
    assert open_conversation(worker, other) == "InvalidAccessError: Not allowed to open a window."
    assert page.url == url


@pytest.fixture
def desktop(
    browser: Any, web_server: LiveServer, tmp_path: Any
) -> Iterator[tuple[NotificationServer, Any]]:
    """A notification server, and a browser that shows its notifications there: a
    profile of its own (a persistent context), whose clicks reach the worker."""
    server = NotificationServer()
    context = browser.browser_type.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        env={"DBUS_SESSION_BUS_ADDRESS": server.address, "PATH": "/usr/bin:/bin"},
        base_url=web_server.http,
        viewport=DESKTOP,
    )
    context.grant_permissions(["notifications"], origin=web_server.http)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    yield server, context
    context.close()
    server.stop()


# Counts the clicks the worker gets (a second listener, added by the test: Chromium warns
# that it was not added when the script first ran, and calls it all the same).
COUNT_CLICKS = """() => {
  self.clicksSeen = 0;
  self.addEventListener("notificationclick", () => { self.clicksSeen += 1; });
}"""


def click_opening_a_window(notify: Any, context: Any, shown: Any) -> Any:
    """The window a click on ``shown`` opens, or None if the click never reached the
    browser: a signal on the tests' private bus was once not taken up (CI, with no tab
    of the app open), and a person would click again. A click that reached the worker
    closes the notification (sw.js) and must open the window: that is not retried."""
    try:
        with context.expect_page(timeout=7_000) as opened:
            notify.click(shown)
        return opened.value
    except PlaywrightTimeoutError:
        assert shown.id not in notify.closed, "the worker took the click and opened no window"
        return None


def test_a_click_on_the_notification_opens_the_conversation(people, desktop, web_server):
    alice, bob = people("Alice", "Bob")
    alice.send(bob, "hi Bob")
    bob.send(alice, "dinner at 8?")
    notify, context = desktop
    page = context.pages[0] if context.pages else context.new_page()
    login(page, alice.account, PASSWORD)  # the inbox
    worker = active_worker(page)
    devtools = PushDevTools(page, web_server.http)
    devtools.push(worker.url, notification_payload(web_server, bob, alice))

    shown = notify.wait_shown()
    assert shown.summary == "Bob"
    assert shown.body.endswith("dinner at 8?")  # after the site's name, Chromium's way
    assert "default" in shown.actions  # clickable
    notify.click(shown)
    # The tab on the inbox becomes the conversation; the notification goes away.
    conversation = f"{web_server.http}/direct/t/{bob.account}/"
    page.wait_for_url(conversation)
    expect(page.locator("#thread-title")).to_have_text("Bob")
    assert len(context.pages) == 1
    assert shown.id in notify.closed

    # With no tab of the app left, a click opens the conversation in a new window.
    page.goto("about:blank")
    bob.send(alice, "still there?")
    devtools.push(worker.url, notification_payload(web_server, bob, alice))
    shown = notify.wait_shown(2)
    assert shown.body.endswith("still there?")
    window = click_opening_a_window(notify, context, shown) or click_opening_a_window(
        notify, context, shown
    )
    assert window is not None, "two clicks that reached no browser"
    window.wait_for_url(conversation)
    expect(window.locator("#thread-title")).to_have_text("Bob")

    # With a tab on the conversation, a click brings that one up: no window, no reload.
    window.evaluate("window.notReloaded = true")
    bob.send(alice, "?")
    devtools.push(worker.url, notification_payload(web_server, bob, alice))
    worker = active_worker(window)  # the same worker (it may have been restarted)
    worker.evaluate(COUNT_CLICKS)
    notify.click(notify.wait_shown(3))
    deadline = time.monotonic() + ACTION_TIMEOUT_MS / 1000
    while worker.evaluate("self.clicksSeen") < 1 and time.monotonic() < deadline:
        window.wait_for_timeout(100)
    assert worker.evaluate("self.clicksSeen") == 1  # the click reached the worker
    window.wait_for_timeout(500)  # a window it opened would show by now
    assert len(context.pages) == 2  # about:blank and the conversation
    assert window.url == conversation and window.evaluate("window.notReloaded") is True


SUBSCRIBE_STAND_IN = """
window.subscribeCalls = [];
PushManager.prototype.subscribe = async function (options) {
  window.subscribeCalls.push({
    userVisibleOnly: options.userVisibleOnly,
    key: Array.from(new Uint8Array(options.applicationServerKey)),
  });
  const json = SUBSCRIPTION;
  let active = true;
  PushManager.prototype.getSubscription = async () => (active ? subscription : null);
  const subscription = {
    endpoint: json.endpoint,
    options: { applicationServerKey: options.applicationServerKey },
    toJSON: () => json,
    unsubscribe: async () => { active = false; return true; },
  };
  return subscription;
};
"""


def dialog_state(page: Any, state: str) -> Any:
    dialog = page.locator("#notifications-dialog")
    expect(dialog).to_have_attribute("data-state", state)
    return dialog


def test_enable_notifications_goes_as_far_as_an_offline_browser_can(people, notifying_page):
    (alice,) = people("Alice")
    page = notifying_page(alice)
    page.get_by_role("button", name="Notifications").click()
    dialog = dialog_state(page, "off")
    expect(dialog.get_by_role("switch", name="Show message previews")).to_be_checked()
    dialog.get_by_role("button", name="Enable notifications").click()
    # Permission granted, worker ready, VAPID key fetched: pushManager.subscribe is
    # called, and this Chromium refuses it (no Push API off the record, no push service).
    dialog = dialog_state(page, "off")
    expect(dialog.locator("#notifications-status")).to_have_text(
        "Couldn't turn notifications on: Registration failed - permission denied"
    )


def test_enable_subscribes_with_the_servers_key_and_disable_forgets_it(
    people, notifying_page, web_server
):
    (alice,) = people("Alice")
    subscription = BrowserSubscription(endpoint="http://127.0.0.1:9/push/e2e-" + alice.account)
    stand_in = SUBSCRIBE_STAND_IN.replace("SUBSCRIPTION", json.dumps(subscription.to_json()))
    page = notifying_page(alice, init_script=stand_in)
    _, key = http_json("GET", f"{web_server.http}/api/push/vapid-public-key", token=alice.token)

    page.get_by_role("button", name="Notifications").click()
    dialog = dialog_state(page, "off")
    with page.expect_request(
        lambda r: r.url.endswith("/api/push/subscriptions") and r.method == "POST"
    ) as posted:
        dialog.get_by_role("button", name="Enable notifications").click()
    assert posted.value.post_data_json == subscription.to_json()
    assert posted.value.response().status == 201
    dialog = dialog_state(page, "on")
    [call] = page.evaluate("window.subscribeCalls")
    assert call == {"userVisibleOnly": True, "key": list(b64url_decode(key["key"]))}

    # Opened again, the dialog sends the subscription again (200: the same row).
    page.keyboard.press("Escape")
    with page.expect_response(lambda r: r.url.endswith("/api/push/subscriptions")) as again:
        page.get_by_role("button", name="Notifications").click()
    assert again.value.status == 200
    dialog = dialog_state(page, "on")

    with page.expect_request(
        lambda r: r.url.endswith("/api/push/subscriptions") and r.method == "DELETE"
    ) as deleted:
        dialog.get_by_role("button", name="Turn off notifications").click()
    assert deleted.value.post_data_json == {"endpoint": subscription.endpoint}
    assert deleted.value.response().status == 204
    dialog_state(page, "off")


def test_logging_out_stops_this_browsers_notifications(people, notifying_page, web_server):
    """A shared computer: once Alice logs out, her notifications must not keep coming to
    whoever uses the browser next. The browser unsubscribes and the server forgets it."""
    (alice,) = people("Alice")
    subscription = BrowserSubscription(endpoint="http://127.0.0.1:9/push/out-" + alice.account)
    stand_in = SUBSCRIBE_STAND_IN.replace("SUBSCRIPTION", json.dumps(subscription.to_json()))
    page = notifying_page(alice, init_script=stand_in)
    page.get_by_role("button", name="Notifications").click()
    dialog = dialog_state(page, "off")
    with page.expect_response(lambda r: r.url.endswith("/api/push/subscriptions")) as posted:
        dialog.get_by_role("button", name="Enable notifications").click()
    assert posted.value.status == 201
    page.keyboard.press("Escape")

    with page.expect_request(
        lambda r: r.url.endswith("/api/push/subscriptions") and r.method == "DELETE"
    ) as deleted:
        page.locator("form.rail-bottom button").click()
    assert deleted.value.post_data_json == {"endpoint": subscription.endpoint}
    assert deleted.value.response().status == 204
    page.wait_for_url(lambda url: "/direct/" not in url)  # and the logout went on
    # The server holds no subscription of hers: the same endpoint again is a new one
    # (201, where a kept one answers 200). Her token outlives the page's session.
    status, _ = http_json(
        "POST", f"{web_server.http}/api/push/subscriptions", subscription.to_json(), alice.token
    )
    assert status == 201


def test_previews_switch_changes_the_setting(people, notifying_page, web_server):
    (alice,) = people("Alice")
    page = notifying_page(alice)
    page.get_by_role("button", name="Notifications").click()
    switch = dialog_state(page, "off").get_by_role("switch", name="Show message previews")
    expect(switch).to_be_checked()
    with page.expect_response(
        lambda r: r.url.endswith("/api/settings") and r.request.method == "PATCH"
    ):
        switch.click()
    expect(switch).not_to_be_checked()
    status, settings = http_json("GET", f"{web_server.http}/api/settings", token=alice.token)
    assert (status, settings["previews"]) == (200, False)
    page.reload()
    page.get_by_role("button", name="Notifications").click()
    expect(dialog_state(page, "off").get_by_role("switch")).not_to_be_checked()


def test_the_dialog_says_when_notifications_cannot_work(people, notifying_page):
    (alice,) = people("Alice")
    # The person said no to the browser's prompt (Playwright answers it so).
    page = notifying_page(alice, grant=False)
    page.get_by_role("button", name="Notifications").click()
    dialog = dialog_state(page, "off")
    dialog.get_by_role("button", name="Enable notifications").click()
    dialog = dialog_state(page, "denied")
    expect(dialog.get_by_role("button", name="Enable notifications")).to_be_hidden()

    # A server without a VAPID key.
    page = notifying_page(alice)
    page.route(
        "**/api/push/vapid-public-key",
        lambda route: route.fulfill(
            status=404, json={"error": {"code": "not_found", "detail": "not configured"}}
        ),
    )
    page.get_by_role("button", name="Notifications").click()
    dialog = dialog_state(page, "unconfigured")
    expect(dialog.locator(".notifications-previews")).to_be_hidden()

    # A browser without the Push API.
    page = notifying_page(alice, init_script="delete window.PushManager;")
    page.get_by_role("button", name="Notifications").click()
    dialog_state(page, "unsupported")
