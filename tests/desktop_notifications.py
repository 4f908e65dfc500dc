"""A desktop's notification server, for a browser to show its notifications to and for a
test to click them: the freedesktop.org Notifications service on a private D-Bus session
bus (``dbus-daemon``), spoken with jeepney.

Chromium on Linux shows a web notification by calling ``Notify`` on the session bus, and
takes an ``ActionInvoked(id, "default")`` signal as the person's click: the service
worker then gets a real ``notificationclick``, with the right to focus a tab or open a
window, which nothing else outside the browser can give it.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any

from jeepney import DBusAddress, HeaderFields, MessageType, new_method_return, new_signal
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

from tests.support import need

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"


@dataclass
class Shown:
    """One ``Notify`` call: what the browser put on the screen."""

    id: int
    app_name: str
    summary: str
    body: str
    actions: list[str]


class NotificationServer:
    """``org.freedesktop.Notifications`` on a bus of its own; ``address`` is what the
    browser's ``DBUS_SESSION_BUS_ADDRESS`` must be."""

    def __init__(self) -> None:
        need(shutil.which("dbus-daemon") is not None, "dbus-daemon (apt-get install dbus-daemon)")
        self.bus = subprocess.Popen(
            ["dbus-daemon", "--session", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.bus.stdout is not None
        self.address = self.bus.stdout.readline().strip()
        self.connection = open_dbus_connection(bus=self.address)
        self.connection.send_and_get_reply(message_bus.RequestName(NAME))
        self.shown: list[Shown] = []
        self.closed: list[int] = []
        self._lock = threading.Lock()
        self._next_id = 1
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                message = self.connection.receive()
            except Exception:  # the connection closed: the server stops
                return
            if message.header.message_type == MessageType.method_call:
                self._answer(message)

    def _answer(self, call: Any) -> None:
        member = call.header.fields.get(HeaderFields.member)
        if member == "GetCapabilities":
            reply = new_method_return(call, "as", (["actions", "body"],))
        elif member == "GetServerInformation":
            reply = new_method_return(call, "ssss", ("tests", "instamg", "1", "1.2"))
        elif member == "Notify":
            app_name, replaces, _icon, summary, body, actions, _hints, _timeout = call.body
            with self._lock:
                nid = replaces or self._next_id
                self._next_id += 1
                self.shown.append(Shown(nid, app_name, summary, body, list(actions)))
            reply = new_method_return(call, "u", (nid,))
        else:  # CloseNotification, and anything else: nothing to say
            if member == "CloseNotification":
                with self._lock:
                    self.closed.append(call.body[0])
            reply = new_method_return(call)
        self.connection.send(reply)

    def wait_shown(self, count: int = 1, timeout: float = 15) -> Shown:
        """The ``count``-th notification shown, once it is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.shown) >= count:
                    return self.shown[count - 1]
            time.sleep(0.05)
        raise AssertionError(f"the browser showed {len(self.shown)} notification(s)")

    def click(self, shown: Shown) -> None:
        """What a desktop does when the person clicks the notification's body."""
        target = DBusAddress(PATH, interface=NAME)
        self.connection.send(new_signal(target, "ActionInvoked", "us", (shown.id, "default")))

    def stop(self) -> None:
        self.connection.close()
        self.bus.terminate()
        self.bus.wait(timeout=10)
