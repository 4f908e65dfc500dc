"""The web client in a real browser: two people chatting through a live daphne."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import DESKTOP, PASSWORD, PHONE, Person, login, png_bytes
from tests.support import http_json

pytestmark = [pytest.mark.browser, pytest.mark.live]

XSS = "<img src=x onerror=alert(1)>"


def thread_path(person: Person) -> str:
    return f"/direct/t/{person.account}/"


def connected(page: Any) -> None:
    expect(page.locator("body")).to_have_attribute("data-thread-socket", "open")


def composer(page: Any) -> Any:
    return page.get_by_role("textbox", name="Message", exact=True)


def send_text(page: Any, text: str) -> None:
    box = composer(page)
    box.fill(text)
    box.press("Enter")


def bubbles(page: Any, side: str = "") -> Any:
    return page.locator(f".msg-row{'.' + side if side else ''} .bubble")


def row_with(page: Any, text: str) -> Any:
    return page.locator(".msg-row", has=page.locator(".bubble", has_text=text))


def inbox_row(page: Any, person: Person) -> Any:
    return page.locator(f'.conv[data-account="{person.account}"]')


def test_text_and_photo_arrive_live_in_the_open_conversation_and_the_inbox(
    people: Any, open_page: Any
) -> None:
    alice, bob = people("Alice", "Bob")
    bob.send(alice, "Are we still on for tonight?")  # bob wrote first: not a request for him
    bob_thread = open_page(bob, thread_path(alice))
    bob_inbox = open_page.another(bob_thread, "/direct/inbox/")
    alice_page = open_page(alice, thread_path(bob))
    connected(bob_thread)
    connected(alice_page)

    send_text(alice_page, "Yes! See you at 8")
    expect(bubbles(bob_thread, "theirs").last).to_have_text("Yes! See you at 8")
    expect(inbox_row(bob_inbox, alice)).to_contain_text("Yes! See you at 8")
    expect(alice_page.locator(".msg-row.mine").last).not_to_have_class(re.compile("pending"))
    expect(composer(alice_page)).to_have_value("")

    alice_page.set_input_files(
        "#composer-file",
        files=[{"name": "sunset.png", "mimeType": "image/png", "buffer": png_bytes()}],
    )
    expect(alice_page.locator(".tile.tile-done")).to_have_count(1)
    composer(alice_page).press("Enter")

    photo = bob_thread.locator(".msg-row.theirs .att-image img").last
    expect(photo).to_have_attribute("src", re.compile(r"/api/attachments/\d+/thumbnail$"))
    bob_thread.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=photo.element_handle()
    )
    expect(inbox_row(bob_inbox, alice)).to_contain_text("Sent a photo")

    photo.click()  # opens the full-size picture
    full = bob_thread.locator("#lightbox img")
    expect(full).to_be_visible()
    expect(full).to_have_attribute("src", re.compile(r"/api/attachments/\d+/file$"))
    bob_thread.wait_for_function("img => img.naturalWidth === 320", arg=full.element_handle())
    bob_thread.keyboard.press("Escape")
    expect(full).to_be_hidden()


def test_inbox_shows_unread_counts_and_requests_live(people: Any, open_page: Any) -> None:
    alice, bob, carol = people("Alice", "Bob", "Carol")
    bob.send(alice, "hi")
    alice.send(bob, "hello")
    bob_inbox = open_page(bob)
    row = inbox_row(bob_inbox, alice)
    expect(row).to_contain_text("hello")

    alice.send(bob, "one")
    alice.send(bob, "two")
    expect(row).to_have_class(re.compile(r"\bunread\b"))
    expect(row.locator(".conv-badge")).to_contain_text("3 unread")
    expect(row).to_contain_text("two")

    # Opening the conversation reads it; the badge goes away.
    row.get_by_role("link").click()
    expect(bob_inbox).to_have_url(re.compile(thread_path(alice)))
    expect(inbox_row(bob_inbox, alice)).not_to_have_class(re.compile(r"\bunread\b"))

    carol.send(bob, "Hi Bob, it's Carol")  # a stranger: a request, not in Messages
    requests_tab = bob_inbox.get_by_role("tab", name=re.compile("Requests"))
    expect(requests_tab).to_have_text("Requests (1)")
    expect(inbox_row(bob_inbox, carol)).to_have_count(0)
    requests_tab.click()
    inbox_row(bob_inbox, carol).get_by_role("link").click()
    expect(bob_inbox.locator("#request-banner")).to_be_visible()
    bob_inbox.get_by_role("button", name="Accept").click()
    expect(bob_inbox.locator("#request-banner")).to_be_hidden()
    expect(bob_inbox.get_by_role("tab", name=re.compile("Requests"))).to_have_text("Requests")
    bob_inbox.get_by_role("tab", name="Messages").click()
    expect(inbox_row(bob_inbox, carol)).to_contain_text("Hi Bob, it's Carol")


def test_older_messages_load_when_scrolling_up(people: Any, open_page: Any) -> None:
    alice, bob = people("Alice", "Bob")
    alice.send(bob, "message 1")
    for n in range(2, 46):
        (bob if n % 2 else alice).send(alice if n % 2 else bob, f"message {n}")
    page = open_page(alice, thread_path(bob))
    expect(bubbles(page).last).to_have_text("message 45")
    expect(bubbles(page)).to_have_count(30)  # the newest page
    page.locator("#messages").evaluate("el => { el.scrollTop = 0; }")
    expect(bubbles(page)).to_have_count(45)
    expect(page.locator(".thread-profile")).to_be_visible()  # the start of the conversation
    assert bubbles(page).all_inner_texts() == [f"message {n}" for n in range(1, 46)]


def test_the_sender_sees_seen_and_the_typing_indicator(people: Any, open_page: Any) -> None:
    alice, bob = people("Alice", "Bob")
    bob.send(alice, "hey")
    alice_page = open_page(alice, thread_path(bob))
    connected(alice_page)
    send_text(alice_page, "did you get my email?")
    mine = row_with(alice_page, "did you get my email?")
    expect(mine).not_to_have_class(re.compile("pending"))
    expect(mine.locator(".msg-status")).not_to_have_text("Seen")

    bob_page = open_page(bob, thread_path(alice))  # opening the conversation reads it
    expect(mine.locator(".msg-status")).to_have_text("Seen")

    connected(bob_page)
    composer(bob_page).press_sequentially("yes, reading it", delay=20)
    typing = alice_page.locator("#typing")
    expect(typing).to_be_visible()
    composer(bob_page).fill("")  # nothing left to send: bob stopped typing
    expect(typing).to_be_hidden()

    composer(bob_page).press_sequentially("ok", delay=20)
    expect(typing).to_be_visible()
    composer(bob_page).press("Enter")  # the message replaces the indicator
    expect(bubbles(alice_page, "theirs").last).to_have_text("ok")
    expect(typing).to_be_hidden()


def test_react_reply_edit_and_unsend_reach_the_other_side(people: Any, open_page: Any) -> None:
    alice, bob = people("Alice", "Bob")
    bob.send(alice, "What's for dinner?")
    alice.send(bob, "thinking…")
    alice_page = open_page(alice, thread_path(bob))
    bob_page = open_page(bob, thread_path(alice))
    connected(alice_page)
    connected(bob_page)
    question_for_alice = row_with(alice_page, "What's for dinner?")
    question_for_bob = row_with(bob_page, "What's for dinner?")

    # Double-click hearts a message; the picker changes the reaction.
    question_for_alice.locator(".bubble").dblclick()
    expect(question_for_bob.locator(".msg-reactions")).to_have_text("❤️")
    question_for_alice.hover()
    question_for_alice.get_by_role("button", name="React", exact=True).click()
    alice_page.get_by_role("menuitemradio", name="React 😂").click()
    expect(question_for_bob.locator(".msg-reactions")).to_have_text("😂")

    # Reply with a quote.
    question_for_alice.hover()
    question_for_alice.get_by_role("button", name="Reply").click()
    expect(alice_page.locator("#composer-context")).to_contain_text("What's for dinner?")
    send_text(alice_page, "Pizza")
    reply_for_bob = row_with(bob_page, "Pizza")
    expect(reply_for_bob.locator(".msg-quote")).to_have_text("What's for dinner?")
    expect(reply_for_bob.locator(".msg-replyto-label")).to_contain_text("replied to you")

    # Edit from the message menu.
    reply_for_alice = row_with(alice_page, "Pizza")
    reply_for_alice.hover()
    reply_for_alice.get_by_role("button", name="More options").click()
    alice_page.get_by_role("menuitem", name="Edit").click()
    expect(composer(alice_page)).to_have_value("Pizza")
    send_text(alice_page, "Pizza with extra cheese")
    edited_for_bob = row_with(bob_page, "Pizza with extra cheese")
    expect(edited_for_bob.locator(".msg-edited")).to_have_text("Edited")
    expect(edited_for_bob.locator(".msg-quote")).to_have_text("What's for dinner?")

    # Unsend, after confirming in the dialog.
    edited_for_alice = row_with(alice_page, "Pizza with extra cheese")
    edited_for_alice.hover()
    edited_for_alice.get_by_role("button", name="More options").click()
    alice_page.get_by_role("menuitem", name="Unsend").click()
    alice_page.locator("#confirm-dialog").get_by_role("button", name="Unsend").click()
    expect(bob_page.locator(".bubble.unsent")).to_have_text("Alice unsent a message")
    expect(row_with(bob_page, "Pizza")).to_have_count(0)
    expect(alice_page.locator(".bubble.unsent")).to_have_text("You unsent a message")


def test_page_reconnects_after_a_server_restart_and_shows_missed_messages_once(
    browser: Any, own_server: Any
) -> None:
    live_server = own_server
    alice, bob = Person(live_server.http, "Alice"), Person(live_server.http, "Bob")
    bob.send(alice, "hi")
    last = alice.send(bob, "before the restart")
    context = browser.new_context(base_url=live_server.http, viewport=DESKTOP)
    try:
        page = context.new_page()
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        login(page, bob.account, PASSWORD)
        page.goto(thread_path(alice))
        connected(page)
        expect(bubbles(page).last).to_have_text("before the restart")

        live_server.stop()
        expect(page.get_by_role("status").filter(has_text="Reconnecting")).to_be_visible()
        send_text(page, "written while the server was down")
        expect(row_with(page, "written while the server was down")).to_have_class(
            re.compile("pending")
        )
        live_server.start()
        alice.send(bob, "missed one")
        alice.send(bob, "missed two")

        # Back within the backoff's longest pause (8 s) plus the server's start-up.
        for text in ("missed one", "missed two"):
            expect(bubbles(page, "theirs").filter(has_text=text)).to_have_count(1, timeout=30_000)
        expect(page.get_by_role("status").filter(has_text="Reconnecting")).to_be_hidden()
        queued = row_with(page, "written while the server was down")
        expect(queued).not_to_have_class(re.compile("pending"))
        time.sleep(1)  # any late duplicate (replay overlapping live delivery) would show now
        texts = bubbles(page).all_inner_texts()
        assert texts.count("missed one") == 1 and texts.count("missed two") == 1, texts
        assert texts.count("written while the server was down") == 1, texts
        stored = [m["message"] for m in alice.history(bob)]
        for text in ("missed one", "missed two", "written while the server was down"):
            assert stored.count(text) == 1, stored
        resumed = [url for url in sockets if "/ws/dm/" in url][1:]
        assert resumed and all(re.search(r"after=(\d+)", u) for u in resumed), sockets
        assert int(re.search(r"after=(\d+)", resumed[0]).group(1)) == last["seq"], sockets  # type: ignore[union-attr]
    finally:
        context.close()


# (the frame, its text, the page's end, the server's end): forwards what it chooses.
Relay = Callable[[dict[str, Any], str, Any, Any], None]


def relay_dm_socket(page: Any, from_page: Relay, from_server: Relay) -> None:
    """Stand between the page's /ws/dm/ sockets and the server: each frame from either
    side goes to ``from_page`` or ``from_server``, which forward what they choose to the
    other end (``page_end.send``, ``server_end.send``)."""

    def route(page_end: Any) -> None:
        server_end = page_end.connect_to_server()
        page_end.on_message(lambda text: from_page(json.loads(text), text, page_end, server_end))
        server_end.on_message(
            lambda text: from_server(json.loads(text), text, page_end, server_end)
        )

    page.route_web_socket(re.compile(r"/ws/dm/"), route)


def test_a_failed_send_retries_with_the_same_client_id_and_is_stored_once(
    people: Any, open_page: Any
) -> None:
    alice, bob = people("Alice", "Bob")
    bob.send(alice, "hi")
    page = open_page(alice, "/direct/inbox/")
    sends: list[str] = []
    lost_acks: set[str] = set()

    def from_page(frame: dict[str, Any], text: str, page_end: Any, server_end: Any) -> None:
        if frame.get("type") == "message.send":
            sends.append(frame["client_id"])
            if len(sends) == 1:
                # The server stores it, but the answer is lost on the way back.
                lost_acks.add(frame["client_id"])
                server_end.send(text)
                error = {"type": "error", "code": "rate_limited", "detail": "slow down"}
                page_end.send(json.dumps({**error, "ref": frame["client_id"]}))
                return
        server_end.send(text)

    def from_server(frame: dict[str, Any], text: str, page_end: Any, server_end: Any) -> None:
        client_id = frame.get("client_id") or frame.get("message", {}).get("client_id")
        first_try = len(sends) == 1 and client_id in lost_acks
        if not (first_try and frame["type"] in ("message.ack", "message.new")):
            page_end.send(text)

    relay_dm_socket(page, from_page, from_server)
    page.goto(thread_path(bob))
    connected(page)
    send_text(page, "only once, please")
    row = row_with(page, "only once, please")
    expect(row).to_have_class(re.compile("pending-failed"))
    row.get_by_role("button", name="Retry").click()
    expect(row).not_to_have_class(re.compile("pending"))
    assert len(sends) == 2 and sends[0] == sends[1], sends
    assert [m["message"] for m in bob.history(alice)].count("only once, please") == 1
    expect(bubbles(page).filter(has_text="only once, please")).to_have_count(1)


def test_a_send_before_the_replay_ends_goes_out_once(people: Any, open_page: Any) -> None:
    """The socket is open, the replay not yet done: a message sent now goes out on this
    connection, and the end of the replay (which sends what is waiting) does not send
    it again."""
    alice, bob = people("Alice", "Bob")
    bob.send(alice, "hi")
    page = open_page(alice, "/direct/inbox/")
    sends: list[str] = []
    held: list[str] = []

    def from_page(frame: dict[str, Any], text: str, page_end: Any, server_end: Any) -> None:
        server_end.send(text)
        if frame.get("type") == "message.send":
            sends.append(text)
            while held:  # the replay ends after the send went out
                page_end.send(held.pop(0))

    def from_server(frame: dict[str, Any], text: str, page_end: Any, server_end: Any) -> None:
        if frame.get("type") == "sync.done" and not sends:
            held.append(text)
        else:
            page_end.send(text)

    relay_dm_socket(page, from_page, from_server)
    page.goto(thread_path(bob))
    connected(page)
    send_text(page, "just once")
    row = row_with(page, "just once")
    expect(row).not_to_have_class(re.compile("pending"))
    page.wait_for_timeout(300)  # a second send would follow the replay's end at once
    assert len(sends) == 1, sends
    assert not held


def test_markup_in_a_message_is_shown_as_text(people: Any, open_page: Any) -> None:
    alice, bob = people("Alice", "Bob")
    bob.send(alice, "hi")
    bob_page = open_page(bob, thread_path(alice))
    bob_inbox = open_page.another(bob_page, "/direct/inbox/")
    alice_page = open_page(alice, thread_path(bob))
    connected(alice_page)
    connected(bob_page)

    send_text(alice_page, XSS)
    for page in (alice_page, bob_page):
        expect(bubbles(page).last).to_have_text(XSS)
        expect(page.locator(".message-list img[src='x']")).to_have_count(0)
    expect(inbox_row(bob_inbox, alice)).to_contain_text(XSS)
    expect(bob_inbox.locator(".inbox-list img[src='x']")).to_have_count(0)
    # The open_page fixture fails the test if any page saw a dialog or a script error.


def test_narrow_screen_shows_one_pane_at_a_time(people: Any, open_page: Any) -> None:
    alice, bob = people("Alice", "Bob")
    alice.send(bob, "hey")
    bob.send(alice, "hi from the phone")
    page = open_page(alice, viewport=PHONE)
    expect(page.locator("#inbox")).to_be_visible()
    expect(page.locator("#thread")).to_be_hidden()
    inbox_row(page, bob).get_by_role("link").click()
    expect(page.locator("#inbox")).to_be_hidden()
    expect(bubbles(page).last).to_have_text("hi from the phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.get_by_role("link", name="Back to conversations").click()
    expect(page.locator("#inbox")).to_be_visible()


def test_conversation_options_mute_and_block(people: Any, open_page: Any) -> None:
    alice, bob = people("Alice", "Bob")
    alice.send(bob, "hi")
    page = open_page(alice, thread_path(bob))
    connected(page)
    expect(inbox_row(page, bob)).to_be_visible()

    page.get_by_role("button", name="Conversation options").click()
    page.get_by_role("menuitem", name="Mute messages").click()
    expect(inbox_row(page, bob).get_by_role("img", name="Muted")).to_be_visible()

    page.get_by_role("button", name="Conversation options").click()
    page.get_by_role("menuitem", name="Block").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Block").click()
    expect(composer(page)).to_be_disabled()
    expect(composer(page)).to_have_attribute("placeholder", "You blocked this account.")
    status, body = http_json(
        "POST",
        f"{bob.base}/api/dm/{alice.account}/messages",
        {"client_id": str(uuid.uuid4()), "message": "let me in"},
        bob.token,
    )
    assert status == 403 and body["error"]["code"] == "forbidden", body


def send_view_once_photo(sender: Person, to: Person) -> dict[str, Any]:
    """A multipart send: one photo, ``view_once`` 1, as a phone app would send it."""
    import urllib.request

    boundary = uuid.uuid4().hex
    fields = {"client_id": str(uuid.uuid4()), "view_once": "1"}
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    body += (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="once.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{sender.base}/api/dm/{to.account}/messages",
        data=body,
        headers={
            "Authorization": f"Bearer {sender.token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_a_view_once_photo_is_opened_only_on_purpose_and_then_shows_opened(
    people: Any, open_page: Any
) -> None:
    alice, bob = people("Alice", "Bob")
    bob.send(alice, "send me the surprise")
    sent = send_view_once_photo(alice, bob)
    bob_thread = open_page(bob, thread_path(alice))
    alice_page = open_page(alice, thread_path(bob))
    connected(bob_thread)
    connected(alice_page)
    button = bob_thread.get_by_role("button", name="Open view-once photo")
    expect(button).to_be_visible()
    expect(alice_page.locator(".att-once").last).to_have_text("Photo · view once")
    # Showing the conversation opened nothing: no fetch of the file, no thumbnail.
    assert not bob.history(alice)[-1]["opened"]
    assert (
        bob_thread.locator(f'img[src*="/api/attachments/{sent["attachments"][0]["id"]}"]').count()
        == 0
    )

    button.click()
    full = bob_thread.locator("#lightbox img")
    expect(full).to_have_attribute("src", re.compile(r"^blob:"))
    bob_thread.wait_for_function("img => img.naturalWidth === 320", arg=full.element_handle())
    bob_thread.keyboard.press("Escape")
    assert bob.history(alice)[-1]["opened"]
    expect(alice_page.locator(".att-once").last).to_have_text("Opened")  # live, on her side
    bob_thread.reload()
    expect(bob_thread.locator(".att-once").last).to_have_text("Opened")
