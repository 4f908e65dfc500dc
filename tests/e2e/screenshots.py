"""Regenerate the web client's screenshots in docs/ (not a test).

    DEBUG=1 .venv/bin/python -m tests.e2e.screenshots [--out docs]

Starts a daphne on a throw-away database, fills it with a few conversations (some
messages moved back in time so the inbox shows ages and the conversation a day
separator), and photographs the inbox and a conversation at desktop and phone widths.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.e2e.conftest import CHROMIUM, DESKTOP, PASSWORD, launch_browser, login
from tests.support import ROOT, LiveServer, http_json, migrate, server_env

PHONE_TALL = {"width": 390, "height": 844}


def sunset_png() -> bytes:
    from PIL import Image, ImageDraw

    width, height = 960, 720
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    top, bottom = (255, 140, 90), (110, 60, 160)
    for y in range(height):
        t = y / height
        draw.line(
            [(0, y), (width, y)],
            fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )
    draw.ellipse((380, 300, 580, 500), fill=(255, 214, 120))
    draw.polygon(
        [(0, 720), (0, 470), (220, 330), (430, 520), (640, 360), (960, 560), (960, 720)],
        fill=(50, 30, 80),
    )
    draw.polygon(
        [(0, 720), (0, 600), (300, 500), (620, 640), (960, 580), (960, 720)], fill=(30, 18, 52)
    )
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


class Demo:
    def __init__(self, base: str) -> None:
        self.base = base
        self.tokens: dict[str, str] = {}
        self.backdate: dict[int, float] = {}  # message id -> minutes ago

    def person(self, account: str, name: str) -> str:
        status, body = http_json(
            "POST",
            f"{self.base}/api/auth/signup",
            {"account": account, "password": PASSWORD, "name": name},
        )
        assert status == 201, body
        self.tokens[account] = body["token"]
        return account

    def send(
        self, sender: str, to: str, text: str = "", ago: float | None = None, **extra: Any
    ) -> dict[str, Any]:
        body = {"client_id": str(uuid.uuid4()), "message": text, **extra}
        status, message = http_json(
            "POST", f"{self.base}/api/dm/{to}/messages", body, self.tokens[sender]
        )
        assert status == 201, message
        if ago is not None:
            self.backdate[message["id"]] = ago
        return message  # type: ignore[no-any-return]

    def upload(self, sender: str, name: str, data: bytes, content_type: str) -> int:
        import urllib.request

        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(f"{self.base}/api/attachments", data=body, method="POST")
        request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
        request.add_header("Authorization", f"Bearer {self.tokens[sender]}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(json.loads(response.read())["id"])

    def frames(self, sender: str, to: str, frames: list[dict[str, Any]]) -> None:
        from websockets.sync.client import connect

        ws_url = self.base.replace("http://", "ws://") + f"/ws/dm/{to}/"
        with connect(
            ws_url, additional_headers={"Authorization": f"Bearer {self.tokens[sender]}"}
        ) as ws:
            ws.recv(timeout=10)  # room.joined
            for frame in frames:
                ws.send(json.dumps(frame))
            time.sleep(0.5)


BACKDATE = """
import datetime as dt, json, os
from django.db.models import Max
from django.utils import timezone
from direct_messages.models import DirectMessage, Room, RoomMember
now = timezone.now()
for pk, minutes in json.loads(os.environ["BACKDATE"]).items():
    DirectMessage.objects.filter(pk=int(pk)).update(created_at=now - dt.timedelta(minutes=minutes))
for room in Room.objects.all():
    last = DirectMessage.objects.filter(room=room).aggregate(at=Max("created_at"))["at"]
    if last:
        Room.objects.filter(pk=room.pk).update(last_activity_at=last)
        RoomMember.objects.filter(room=room).update(last_activity_at=last)
"""


def fill(demo: Demo) -> None:
    alice = demo.person("alice", "Alice Liddell")
    bob = demo.person("bob", "Bob Marley")
    carol = demo.person("carol.chen", "Carol Chen")
    dan = demo.person("dan_okafor", "Dan Okafor")
    emma = demo.person("emma", "Emma Laurent")
    farah = demo.person("farah.h", "Farah Haddad")

    demo.send(emma, alice, "Can you send me the invoice again?", ago=60 * 24 * 4 + 30)
    demo.send(alice, emma, "Sure, one sec", ago=60 * 24 * 4 + 20)
    late = demo.send(emma, alice, "Never mind, found it!", ago=60 * 24 * 4)
    demo.frames(emma, alice, [{"type": "message.unsend", "id": late["id"]}])

    demo.send(alice, dan, "Sent you the slides for Monday", ago=60 * 26)
    demo.send(dan, alice, "Thanks! Looks great", ago=60 * 25)
    demo.send(alice, dan, "Let me know if anything's missing", ago=60 * 24)

    demo.send(alice, carol, "Are we still on for Thursday?", ago=60 * 5)
    demo.send(carol, alice, "Yes! Did you see the new exhibit at SFMOMA?", ago=130)
    demo.send(carol, alice, "We should go after lunch", ago=128)

    demo.send(farah, alice, "Hi Alice! We met at the design meetup 👋", ago=300)

    demo.send(bob, alice, "Are you around this weekend?", ago=60 * 20)
    demo.send(alice, bob, "Yes! What's up?", ago=60 * 20 - 2)
    demo.send(bob, alice, "Thinking of a hike at Mount Tam on Saturday 🥾", ago=60 * 20 - 3)
    in_ = demo.send(alice, bob, "I'm in. Early start?", ago=60 * 20 - 4)
    demo.send(bob, alice, "7:30 at the trailhead?", ago=60 * 20 - 5)
    demo.send(alice, bob, "👍", ago=60 * 20 - 6)
    photo = demo.upload(bob, "mount-tam.png", sunset_png(), "image/png")
    view = demo.send(bob, alice, "", attachment_ids=[photo], ago=14)
    demo.send(bob, alice, "The view from last time. Worth the early alarm", ago=13)
    demo.send(alice, bob, "Wow 😍", ago=12)
    demo.send(bob, alice, "Let's do 7, parking fills up fast", reply_to=in_["id"], ago=3)
    coffee = demo.send(alice, bob, "Deal. I'll bring coffee ☕", ago=2)
    demo.frames(alice, bob, [{"type": "reaction.set", "id": view["id"], "emoji": "❤️"}])
    demo.frames(bob, alice, [{"type": "reaction.set", "id": coffee["id"], "emoji": "😂"}])
    demo.frames(carol, alice, [{"type": "read", "seq": 1}])


def shoot(base: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_browser(playwright)

        def page_for(account: str, viewport: dict[str, int], path: str) -> Any:
            context = browser.new_context(
                base_url=base, viewport=viewport, device_scale_factor=1, color_scheme="light"
            )
            page = context.new_page()
            login(page, account, PASSWORD)
            page.goto(path)
            return page

        bob = page_for("bob", DESKTOP, "/direct/t/alice/")  # online: "Active now", reads
        time.sleep(1)
        for name, viewport in (("desktop", DESKTOP), ("mobile", PHONE_TALL)):
            alice = page_for("alice", viewport, "/direct/inbox/")
            alice.wait_for_selector(".conv")
            time.sleep(0.5)
            alice.screenshot(path=str(out / f"inbox-{name}.png"))
            alice.goto("/direct/t/bob/")
            alice.wait_for_selector(".msg-row .att-image img")
            alice.wait_for_function(
                "() => [...document.querySelectorAll('.att-image img')].every(i => i.complete && i.naturalWidth > 0)"
            )
            bob.get_by_role("textbox", name="Message", exact=True).press_sequentially("See you")
            alice.wait_for_selector("#typing:not([hidden])")
            time.sleep(0.6)
            alice.screenshot(path=str(out / f"conversation-{name}.png"))
            bob.get_by_role("textbox", name="Message", exact=True).fill("")
            alice.context.close()
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} not found: apt-get install chromium")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/db.sqlite3"
        env = server_env(database_url, MEDIA_ROOT=f"{tmp}/media")
        migrate(env)
        server = LiveServer(env=env).start()
        try:
            demo = Demo(server.http)
            fill(demo)
            subprocess.run(
                [sys.executable, "manage.py", "shell", "-c", BACKDATE],
                cwd=ROOT,
                env={**env, "BACKDATE": json.dumps(demo.backdate)},
                check=True,
            )
            shoot(server.http, out)
        finally:
            server.stop()
    print(f"screenshots written to {out}")


if __name__ == "__main__":
    main()
