"""The authorization matrix: every caller against every HTTP operation, page and
WebSocket frame, aimed at a conversation, message or attachment that is not theirs.

Callers (``authz_world.Principal``): A and B share a conversation; C has one with D (so
C is the outsider to A-B, and A and B are outsiders to C-D); anonymous; and tokens that
must not authenticate: a deactivated user's (issued before deactivation), expired,
tampered (B's claims under A's signature), signed with another key, ``alg: none``, for
another audience, without expiry, with a cut signature.

Each cell checks the status (or close code, or error frame) against the tables below,
and counts a leak when a refusal carries anything but the error envelope, when any
answer carries a string of a conversation the caller is not in, or when "exists but not
yours" answers differently from "does not exist" (byte for byte, once the id or
handle the caller sent is masked). Both conversations are compared row by row, in the
server's database and through the API, before and after.

    .venv/bin/pytest tests/reliability/test_authz_matrix.py -s
    # -> "authz_http: cells=..., leaks=0, ..." and var/reliability/authz_*.json
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from direct_messages.errors import CODE_BY_STATUS
from tests.reliability.authz_world import (
    MISSING_ID,
    PASSWORD,
    Principal,
    World,
    build_world,
    call,
    db_snapshot,
    http_snapshot,
    live_sql,
    module_server,
    multipart,
    ok,
    png_bytes,
)
from tests.reliability.http_raw import Reply, record_figures
from tests.support import signup

pytestmark = pytest.mark.live

MISSING_ACCOUNT = "nobody_" + uuid.uuid4().hex[:10]
MISSING_ROOM = "dm.999999998.999999999"

# --- The HTTP table --------------------------------------------------------------------

Req = tuple[str, str, Any, dict[str, str]]  # method, path, body (JSON or bytes), headers
Build = Callable[[World, Principal], Req]


def expect(
    participant: int, outsider: int | None = None, anon: int = 401, bad: int = 401
) -> dict[str, int]:
    outsider = participant if outsider is None else outsider
    return {"A": participant, "B": participant, "C": outsider, "anon": anon, "bad": bad}


@dataclass
class Case:
    name: str
    build: Build
    expect: dict[str, int]
    # The "does not exist" twin of a "not yours" request: same caller, same answer.
    twin: Build | None = None
    # What may differ between the two answers: the handle the caller typed.
    masked: Callable[[World, Principal], list[str]] = field(default=lambda w, p: [])
    # Routes without authentication ignore credentials: one caller of each role will do
    # (the token route costs a password hash per call).
    public: bool = False
    check: Callable[[World, Principal, Any], str | None] | None = None


def get(path: str, **headers: str) -> Callable[..., Req]:
    return lambda *_: ("GET", path, None, headers)


# A P-256 point (the generator), as a browser's subscription key would be.
PROBE_P256DH = (
    "BGsX0fLhLEJH-Lzm5WOkQPJ3A32BLeszoPShOUXYmMKWT-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"
)


def send_body(**extra: Any) -> dict[str, Any]:
    return {"client_id": str(uuid.uuid4()), "message": "probe", **extra}


def no_results(w: World, p: Principal, body: Any) -> str | None:
    return None if body.get("results") == [] else f"expected no results, got {body}"


def inbox_without_foreign_rooms(w: World, p: Principal, body: Any) -> str | None:
    foreign = w.foreign_room(p).key
    rooms = [c["room"] for c in body["results"]]
    return f"{foreign} listed in {rooms}" if foreign in rooms else None


def is_me(w: World, p: Principal, body: Any) -> str | None:
    return None if body["account"] == p.account else f"/me answered {body['account']}"


def own_text_found(w: World, p: Principal, body: Any) -> str | None:
    texts = [m["message"] for m in body["results"]]
    return None if w.own_room(p).secrets[0] in texts else f"own message not found: {texts}"


def multipart_reply_to(reply_to: Callable[[World, Principal], int]) -> Build:
    def build(w: World, p: Principal) -> Req:
        fields = {
            "client_id": str(uuid.uuid4()),
            "message": "probe",
            "reply_to": str(reply_to(w, p)),
        }
        body, content_type = multipart(fields, [])
        return ("POST", f"/api/dm/{w.partner(p)}/messages", body, {"Content-Type": content_type})

    return build


def upload_request(w: World, p: Principal) -> Req:
    body, content_type = multipart({}, [("file", "probe.png", png_bytes((9, 9, 9)))])
    return ("POST", "/api/attachments", body, {"Content-Type": content_type})


def accounts_typed(w: World, p: Principal) -> list[str]:
    return [w.account("e"), MISSING_ACCOUNT, w.stranger(p), w.nobody(p)]


def stranger_op(verb: str) -> list[Case]:
    """accept/mute/unmute/clear of a conversation the caller does not have, also after
    a refused first message to them (a room commits only with its first message)."""
    return [
        Case(
            f"{verb} with someone I never wrote to",
            lambda w, p: ("POST", f"/api/dm/{w.nobody(p)}/{verb}", None, {}),
            expect(404),
        ),
        Case(
            f"{verb} after my first message to them was refused",
            lambda w, p: ("POST", f"/api/dm/{w.stranger(p)}/{verb}", None, {}),
            expect(404),
        ),
    ]


def conversation_settings_cases(method: str, body: Any) -> list[Case]:
    """A conversation's own settings: mine (a PATCH that sets what is already there, so
    nothing changes), and those of conversations I do not have (404; a deactivated
    account answers as one that does not exist, byte for byte)."""

    def at(account: Callable[[World, Principal], str], payload: Any = body) -> Build:
        return lambda w, p: (method, f"/api/dm/{account(w, p)}/settings", payload, {})

    cases = [
        Case(
            "with someone I never wrote to",
            at(lambda w, p: w.nobody(p)),
            expect(404),
        ),
        Case(
            "after my first message to them was refused",
            at(lambda w, p: w.stranger(p)),
            expect(404),
        ),
        Case(
            "with a deactivated account",
            at(lambda w, p: w.account("e")),
            expect(404),
            twin=at(lambda w, p: MISSING_ACCOUNT),
            masked=accounts_typed,
        ),
        Case("of my own conversation (control)", at(lambda w, p: w.partner(p)), expect(200)),
    ]
    if method == "PATCH":
        cases.append(
            Case(
                "of another conversation, with a body that is not valid",
                at(lambda w, p: w.stranger(p), {"read_receipts": "off"}),
                expect(400),
                twin=at(lambda w, p: w.partner(p), {"read_receipts": "off"}),
                masked=accounts_typed,
            )
        )
    return cases


def attachment_cases(kind: str) -> list[Case]:
    path = "/api/attachments/{}/" + kind
    return [
        Case(
            "the other conversation's attachment",
            lambda w, p: ("GET", path.format(w.foreign_room(p).attachment_id), None, {}),
            expect(404),
            twin=lambda w, p: ("GET", path.format(MISSING_ID), None, {}),
        ),
        Case(
            "another user's upload in no message yet",
            lambda w, p: ("GET", path.format(w.foreign_room(p).free_attachment_id), None, {}),
            expect(404),
            twin=lambda w, p: ("GET", path.format(MISSING_ID), None, {}),
        ),
        Case(
            "my conversation's attachment (control)",
            lambda w, p: ("GET", path.format(w.own_room(p).attachment_id), None, {}),
            expect(200),
        ),
    ]


_exports: dict[str, str] = {}


def foreign_export(w: World, p: Principal) -> str:
    """An export of a member of the room ``p`` is not in (h's, for C), made once."""
    owner = "h" if p.role == "C" else "d"
    if owner not in _exports:
        who = Principal(owner, "x", w.users[owner]["token"], w.account(owner))
        _exports[owner] = ok(call(w.base, who, "POST", "/api/me/export"), 202)["id"]
    return _exports[owner]


MISSING_EXPORT = str(uuid.uuid4())


def export_cases(suffix: str) -> list[Case]:
    return [
        Case(
            "someone else's export",
            lambda w, p: ("GET", f"/api/me/export/{foreign_export(w, p)}{suffix}", None, {}),
            expect(404),
            twin=lambda w, p: ("GET", f"/api/me/export/{MISSING_EXPORT}{suffix}", None, {}),
            masked=lambda w, p: [foreign_export(w, p), MISSING_EXPORT],
        )
    ]


def report_body(message_id: int) -> dict[str, Any]:
    return {"reason": "spam", "message_ids": [message_id]}


# Keyed by (method, path template) exactly as /api/openapi.json lists them: an
# operation without a row fails the test. Rows run in this order (block, then unblock).
API_MATRIX: dict[tuple[str, str], list[Case]] = {
    ("POST", "/api/auth/signup"): [
        Case(
            "a bad handle (credentials are ignored)",
            lambda w, p: ("POST", "/api/auth/signup", {"account": ".x", "password": "p"}, {}),
            expect(400, anon=400, bad=400),
            public=True,
        )
    ],
    ("POST", "/api/auth/token"): [
        Case(
            "the deactivated account, right password",
            lambda w, p: (
                "POST",
                "/api/auth/token",
                {"account": w.account("e"), "password": PASSWORD},
                {},
            ),
            expect(401),
            public=True,
        ),
    ],
    # A real logout or password change would end the world's principals: the cells use
    # bodies that credentials must get past first (401 before any 400 or 403).
    ("POST", "/api/auth/logout"): [
        Case(
            "a malformed logout",
            lambda w, p: ("POST", "/api/auth/logout", {"all": "everyone"}, {}),
            expect(400),
        )
    ],
    ("POST", "/api/auth/password"): [
        Case(
            "a password change with a wrong old password",
            lambda w, p: (
                "POST",
                "/api/auth/password",
                {"old_password": "not it", "new_password": "a long new passphrase"},
                {},
            ),
            expect(403),
        )
    ],
    ("GET", "/api/users/me"): [Case("me", get("/api/users/me"), expect(200), check=is_me)],
    ("GET", "/api/users/"): [
        Case(
            "search for the deactivated account",
            lambda w, p: ("GET", f"/api/users/?q={w.account('e')}", None, {}),
            expect(200),
            check=no_results,
        )
    ],
    ("GET", "/api/inbox"): [
        Case("primary", get("/api/inbox"), expect(200), check=inbox_without_foreign_rooms),
        Case(
            "requests",
            get("/api/inbox?folder=requests"),
            expect(200),
            check=inbox_without_foreign_rooms,
        ),
        Case(
            "hidden requests",
            get("/api/inbox?folder=hidden"),
            expect(200),
            check=inbox_without_foreign_rooms,
        ),
    ],
    ("GET", "/api/dm/{account}/messages"): [
        Case(
            "a stranger's history",
            lambda w, p: ("GET", f"/api/dm/{w.stranger(p)}/messages", None, {}),
            expect(200),
            check=no_results,
        ),
        Case(
            "replay of a stranger's history",
            lambda w, p: ("GET", f"/api/dm/{w.stranger(p)}/messages?after=0", None, {}),
            expect(200),
            check=no_results,
        ),
        Case(
            "search a stranger's history for the other conversation's text",
            lambda w, p: (
                "GET",
                f"/api/dm/{w.stranger(p)}/messages?q={w.foreign_room(p).secrets[0]}",
                None,
                {},
            ),
            expect(200),
            check=no_results,
        ),
        Case(
            "a deactivated account",
            lambda w, p: ("GET", f"/api/dm/{w.account('e')}/messages", None, {}),
            expect(404),
            twin=lambda w, p: ("GET", f"/api/dm/{MISSING_ACCOUNT}/messages", None, {}),
            masked=accounts_typed,
        ),
    ],
    ("GET", "/api/rooms/{room}/messages"): [
        Case(
            "the other conversation's history, by its room name",
            lambda w, p: ("GET", f"/api/rooms/{w.foreign_room(p).key}/messages", None, {}),
            expect(404),
            twin=lambda w, p: ("GET", f"/api/rooms/{MISSING_ROOM}/messages", None, {}),
        ),
        Case(
            "search the other conversation by its room name for its text",
            lambda w, p: (
                "GET",
                f"/api/rooms/{w.foreign_room(p).key}/messages?q={w.foreign_room(p).secrets[0]}",
                None,
                {},
            ),
            expect(404),
            twin=lambda w, p: (
                "GET",
                f"/api/rooms/{MISSING_ROOM}/messages?q={w.foreign_room(p).secrets[0]}",
                None,
                {},
            ),
        ),
    ],
    ("POST", "/api/dm/{account}/read"): [
        Case(
            "read a stranger's conversation",
            lambda w, p: ("POST", f"/api/dm/{w.stranger(p)}/read", {"seq": 10**6}, {}),
            expect(204),
        )
    ],
    ("POST", "/api/dm/{account}/report"): [
        Case(
            "in my conversation, report the other conversation's message",
            lambda w, p: (
                "POST",
                f"/api/dm/{w.partner(p)}/report",
                report_body(w.foreign_room(p).message_ids[0]),
                {},
            ),
            expect(400),
            twin=lambda w, p: (
                "POST",
                f"/api/dm/{w.partner(p)}/report",
                report_body(MISSING_ID),
                {},
            ),
        ),
        Case(
            "report a conversation I do not have",
            lambda w, p: ("POST", f"/api/dm/{w.stranger(p)}/report", {"reason": "spam"}, {}),
            expect(404),
        ),
    ],
    ("POST", "/api/me/export"): [
        Case("my own export", lambda w, p: ("POST", "/api/me/export", None, {}), expect(202))
    ],
    ("GET", "/api/me/export/{export_id}"): export_cases(""),
    # A real erasure would end the world's principals: a wrong password, which
    # credentials must get past first.
    ("POST", "/api/me/erase"): [
        Case(
            "erase me with a wrong password",
            lambda w, p: ("POST", "/api/me/erase", {"password": "not it"}, {}),
            expect(403),
        )
    ],
    ("GET", "/api/me/export/{export_id}/download"): export_cases("/download"),
    ("POST", "/api/dm/{account}/accept"): stranger_op("accept"),
    ("POST", "/api/dm/{account}/mute"): stranger_op("mute"),
    ("POST", "/api/dm/{account}/unmute"): stranger_op("unmute"),
    ("POST", "/api/dm/{account}/clear"): stranger_op("clear"),
    ("GET", "/api/dm/{account}/settings"): conversation_settings_cases("GET", None),
    ("PATCH", "/api/dm/{account}/settings"): conversation_settings_cases(
        "PATCH", {"read_receipts": None}
    ),
    ("POST", "/api/dm/{account}/delete"): [
        *stranger_op("delete"),
        # Only a request can be deleted: the matrix's conversations are accepted.
        Case(
            "delete my accepted conversation",
            lambda w, p: ("POST", f"/api/dm/{w.partner(p)}/delete", None, {}),
            expect(403),
        ),
        Case(
            "delete a deactivated account's request",
            lambda w, p: ("POST", f"/api/dm/{w.account('e')}/delete", None, {}),
            expect(404),
            twin=lambda w, p: ("POST", f"/api/dm/{MISSING_ACCOUNT}/delete", None, {}),
            masked=accounts_typed,
        ),
    ],
    ("POST", "/api/dm/{account}/messages"): [
        Case(
            "in my conversation, reply_to the other conversation's message",
            lambda w, p: (
                "POST",
                f"/api/dm/{w.partner(p)}/messages",
                send_body(reply_to=w.foreign_room(p).message_ids[0]),
                {},
            ),
            expect(400),
            twin=lambda w, p: (
                "POST",
                f"/api/dm/{w.partner(p)}/messages",
                send_body(reply_to=MISSING_ID),
                {},
            ),
        ),
        Case(
            "in my conversation, claiming the other conversation's attachment",
            lambda w, p: (
                "POST",
                f"/api/dm/{w.partner(p)}/messages",
                send_body(attachment_ids=[w.foreign_room(p).attachment_id]),
                {},
            ),
            expect(400),
            twin=lambda w, p: (
                "POST",
                f"/api/dm/{w.partner(p)}/messages",
                send_body(attachment_ids=[MISSING_ID]),
                {},
            ),
        ),
        Case(
            "in my conversation, claiming another user's unsent upload",
            lambda w, p: (
                "POST",
                f"/api/dm/{w.partner(p)}/messages",
                send_body(attachment_ids=[w.foreign_room(p).free_attachment_id]),
                {},
            ),
            expect(400),
            twin=lambda w, p: (
                "POST",
                f"/api/dm/{w.partner(p)}/messages",
                send_body(attachment_ids=[MISSING_ID]),
                {},
            ),
        ),
        Case(
            "multipart, reply_to the other conversation's message",
            multipart_reply_to(lambda w, p: w.foreign_room(p).message_ids[0]),
            expect(400),
            twin=multipart_reply_to(lambda w, p: MISSING_ID),
        ),
        # A refused first message leaves no room behind; the presence row below checks
        # that it opens nothing.
        Case(
            "first message to a stranger, reply_to the other conversation's message",
            lambda w, p: (
                "POST",
                f"/api/dm/{w.stranger(p)}/messages",
                send_body(reply_to=w.foreign_room(p).message_ids[0]),
                {},
            ),
            expect(400),
            twin=lambda w, p: (
                "POST",
                f"/api/dm/{w.stranger(p)}/messages",
                send_body(reply_to=MISSING_ID),
                {},
            ),
        ),
    ],
    ("POST", "/api/users/{account}/block"): [
        Case(
            "block a stranger",
            lambda w, p: ("POST", f"/api/users/{w.stranger(p)}/block", None, {}),
            expect(204),
        ),
        Case(
            "block a deactivated account",
            lambda w, p: ("POST", f"/api/users/{w.account('e')}/block", None, {}),
            expect(404),
            twin=lambda w, p: ("POST", f"/api/users/{MISSING_ACCOUNT}/block", None, {}),
            masked=accounts_typed,
        ),
    ],
    ("POST", "/api/users/{account}/unblock"): [
        Case(
            "unblock a stranger",
            lambda w, p: ("POST", f"/api/users/{w.stranger(p)}/unblock", None, {}),
            expect(204),
        )
    ],
    ("GET", "/api/users/{account}/presence"): [
        Case(
            "presence of someone I never wrote to",
            lambda w, p: ("GET", f"/api/users/{w.nobody(p)}/presence", None, {}),
            expect(404),
            twin=lambda w, p: ("GET", f"/api/users/{MISSING_ACCOUNT}/presence", None, {}),
            masked=accounts_typed,
        ),
        Case(
            "presence of someone my refused first message went to",
            lambda w, p: ("GET", f"/api/users/{w.stranger(p)}/presence", None, {}),
            expect(404),
            twin=lambda w, p: ("GET", f"/api/users/{MISSING_ACCOUNT}/presence", None, {}),
            masked=accounts_typed,
        ),
        Case(
            "my partner's presence (control)",
            lambda w, p: ("GET", f"/api/users/{w.partner(p)}/presence", None, {}),
            expect(200),
        ),
    ],
    ("GET", "/api/search"): [
        Case(
            "the other conversation's text",
            lambda w, p: ("GET", f"/api/search?q={w.foreign_room(p).secrets[0]}", None, {}),
            expect(200),
            check=no_results,
        ),
        Case(
            "my conversation's text (control)",
            lambda w, p: ("GET", f"/api/search?q={w.own_room(p).secrets[0]}", None, {}),
            expect(200),
            check=own_text_found,
        ),
    ],
    ("POST", "/api/attachments"): [Case("upload", upload_request, expect(201))],
    ("GET", "/api/attachments/{attachment_id}/file"): attachment_cases("file"),
    ("GET", "/api/attachments/{attachment_id}/thumbnail"): attachment_cases("thumbnail"),
    ("GET", "/api/push/vapid-public-key"): [
        Case("the server's VAPID key", get("/api/push/vapid-public-key"), expect(200))
    ],
    ("POST", "/api/push/subscriptions"): [
        Case(
            "a subscription aimed at a private address",
            lambda w, p: (
                "POST",
                "/api/push/subscriptions",
                {
                    "endpoint": "https://10.0.0.1/push",
                    "keys": {"p256dh": PROBE_P256DH, "auth": "AAAAAAAAAAAAAAAAAAAAAA"},
                },
                {},
            ),
            expect(400),
        )
    ],
    ("DELETE", "/api/push/subscriptions"): [
        Case(
            "unsubscribe an endpoint that is not mine",
            lambda w, p: (
                "DELETE",
                "/api/push/subscriptions",
                {"endpoint": "https://push.example.com/someone-else"},
                {},
            ),
            expect(204),
        )
    ],
    # The matrix's server pushes to no mobile platform: a well-formed token is 404 there
    # (tests/integration/test_push_devices.py covers a configured one).
    ("POST", "/api/push/devices"): [
        Case(
            "a token that is no APNs token",
            lambda w, p: ("POST", "/api/push/devices", {"platform": "apns", "token": "zz"}, {}),
            expect(400),
        ),
        Case(
            "a platform this server does not push to",
            lambda w, p: ("POST", "/api/push/devices", {"platform": "fcm", "token": "x" * 40}, {}),
            expect(404),
        ),
    ],
    ("DELETE", "/api/push/devices"): [
        Case(
            "forget a device that is not mine",
            lambda w, p: (
                "DELETE",
                "/api/push/devices",
                {"platform": "apns", "token": "ab" * 32},
                {},
            ),
            expect(204),
        )
    ],
    ("GET", "/api/settings"): [Case("my settings", get("/api/settings"), expect(200))],
    ("PATCH", "/api/settings"): [
        Case(
            "a change of nothing",
            lambda w, p: ("PATCH", "/api/settings", {}, {}),
            expect(200),
        ),
        Case(
            "hidden words over the limit",
            lambda w, p: ("PATCH", "/api/settings", {"hidden_words": ["x" * 101]}, {}),
            expect(400),
        ),
    ],
}

HTML = {"Accept": "text/html"}

# The pages (direct_messages.urls, by name) and the admin: sessions only, so a Bearer
# token opens the pages (login_check) but never the admin.
PAGE_MATRIX: dict[str, list[Case]] = {
    "home": [Case("/", get("/", **HTML), expect(302, anon=302, bad=302))],
    "inbox": [
        Case("inbox page", get("/direct/inbox/", **HTML), expect(200, anon=302)),
        Case("inbox, asked for JSON", get("/direct/inbox/"), expect(200)),
    ],
    "thread": [
        Case(
            "thread with a stranger",
            lambda w, p: ("GET", f"/direct/t/{w.stranger(p)}/", None, HTML),
            expect(200, anon=302),
        ),
        Case(
            "thread with a deactivated account",
            lambda w, p: ("GET", f"/direct/t/{w.account('e')}/", None, HTML),
            expect(404, anon=302),
        ),
    ],
    # A session's logout, behind Django's CSRF check: a token, a cross-site form or a
    # request without the CSRF cookie logs nobody out.
    "logout": [
        Case(
            "log out without the CSRF token",
            lambda w, p: ("POST", "/logout/", None, HTML),
            expect(403, anon=403, bad=403),
        )
    ],
    "admin:index": [Case("admin", get("/admin/", **HTML), expect(302, anon=302, bad=302))],
    # The Web Push service worker: the same script for everyone, credentials or none.
    "service_worker": [
        Case(
            "the service worker script",
            get("/direct/sw.js"),
            expect(200, anon=200, bad=200),
            public=True,
        )
    ],
}


# --- Running the HTTP table ------------------------------------------------------------


@dataclass
class Tally:
    cells: int = 0
    leaks: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


def run(world: World, p: Principal, req: Req) -> Reply:
    method, path, body, headers = req
    return call(world.base, p, method, path, body, headers=headers)


def envelope_problem(reply: Reply) -> str | None:
    """A refusal from the API is exactly ``{"error": {"code", "detail"}}``."""
    try:
        body = json.loads(reply.body)
    except ValueError:
        return f"not JSON: {reply.body[:120]!r}"
    if not (isinstance(body, dict) and set(body) == {"error"}):
        return f"not an error envelope: {body}"
    error = body["error"]
    if set(error) != {"code", "detail"} or error["code"] != CODE_BY_STATUS.get(reply.status):
        return f"envelope does not match status {reply.status}: {body}"
    return None


def mask(body: bytes, values: list[str]) -> bytes:
    for value in sorted(values, key=len, reverse=True):
        body = body.replace(value.encode(), b"<typed>")
    return body


def check_cell(world: World, p: Principal, where: str, case: Case, tally: Tally) -> None:
    reply = run(world, p, case.build(world, p))
    tally.cells += 1
    label = f"{where} [{case.name}] as {p.name}"
    wanted = case.expect[p.role]
    if reply.status != wanted:
        tally.wrong.append(f"{label}: {reply.status}, expected {wanted}: {reply.body[:200]!r}")
    text = reply.body.decode("utf-8", "replace") + json.dumps(reply.headers)
    for secret in world.foreign_secrets(p):
        if secret in text:
            tally.leaks.append(f"{label}: answer contains {secret}")
    api_like = where.startswith(("GET /api", "POST /api")) or reply.status == 401
    if reply.status >= 400 and api_like and (problem := envelope_problem(reply)):
        tally.leaks.append(f"{label}: {problem}")
    if reply.status == 302:
        location = reply.headers.get("location", "")
        if p.role == "anon" and where in ("inbox", "thread") and "/accounts/login/" not in location:
            tally.wrong.append(f"{label}: redirected to {location!r}, not the login form")
    if (
        200 <= reply.status < 300
        and case.check
        and (problem := case.check(world, p, json.loads(reply.body)))
    ):
        tally.leaks.append(f"{label}: {problem}")
    if case.twin is not None and reply.status == wanted and wanted in (400, 404):
        other = run(world, p, case.twin(world, p))
        masked = case.masked(world, p)
        if (other.status, mask(other.body, masked)) != (reply.status, mask(reply.body, masked)):
            tally.leaks.append(
                f"{label}: 'not yours' {reply.status} {reply.body!r} differs from "
                f"'does not exist' {other.status} {other.body!r}"
            )


def served_operations(world: World) -> set[tuple[str, str]]:
    spec = json.loads(call(world.base, None, "GET", "/api/openapi.json").body)
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


def page_names() -> set[str]:
    from django.urls import URLPattern

    from direct_messages import urls

    pages = {p.name for p in urls.urlpatterns if isinstance(p, URLPattern) and p.name}
    return pages | {"admin:index"}


@pytest.fixture(scope="module")
def world(live_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One server and one world for both matrices: each checks that it changed nothing."""
    with module_server(live_database_url, tmp_path_factory.mktemp("authz")) as server:
        yield build_world(server, live_database_url)


def test_http_authorization_matrix(world: World) -> None:
    missing = served_operations(world) - set(API_MATRIX)
    stale = set(API_MATRIX) - served_operations(world)
    assert not missing, f"operations without a row in API_MATRIX: {sorted(missing)}"
    assert not stale, f"rows for operations the API no longer serves: {sorted(stale)}"
    assert set(PAGE_MATRIX) == page_names(), "a page without a row in PAGE_MATRIX"

    http_before, db_before = http_snapshot(world), db_snapshot(world)
    tally = Tally()
    for (method, template), cases in API_MATRIX.items():
        for case in cases:
            roles_done: set[str] = set()
            for p in world.principals:
                if case.public and p.role in roles_done:
                    continue
                roles_done.add(p.role)
                check_cell(world, p, f"{method} {template}", case, tally)
    for name, cases in PAGE_MATRIX.items():
        for case in cases:
            for p in world.principals:
                check_cell(world, p, name, case, tally)
    changed = [
        f"{part} changed"
        for part, (before, after) in {
            "history and inboxes": (http_before, http_snapshot(world)),
            "database rows": (db_before, db_snapshot(world)),
        }.items()
        if before != after
    ]
    record_figures(
        "authz_http",
        {
            "principals": len(world.principals),
            "operations": len(API_MATRIX),
            "pages": len(PAGE_MATRIX),
            "cells": tally.cells,
            "leaks": len(tally.leaks),
            "unexpected_status": len(tally.wrong),
            "state_changes": len(changed),
        },
    )
    assert not tally.wrong + tally.leaks + changed, "\n".join(tally.wrong + tally.leaks + changed)


# --- WebSocket -------------------------------------------------------------------------

REF = re.compile(rb'"ref":("[^"]*"|-?\d+|null)')


@dataclass
class Socket:
    """An open socket of one principal, with the frames it got that nobody asked for."""

    name: str
    conn: Any
    partner: str | None  # whose presence and typing it may see
    stray: list[dict[str, Any]] = field(default_factory=list)

    async def exchange(self, frame: dict[str, Any] | str) -> list[bytes]:
        """Send ``frame``, then a ping; the raw frames that came back before the pong."""
        await self.conn.send(frame if isinstance(frame, str) else json.dumps(frame))
        if frame != {"type": "ping"}:
            await self.conn.send(json.dumps({"type": "ping"}))
        got: list[bytes] = []
        while True:
            raw = await asyncio.wait_for(self.conn.recv(decode=False), 10)
            decoded = json.loads(raw)
            if decoded["type"] == "pong":
                return got
            if decoded["type"] in ("presence", "typing", "seen"):
                self.stray.append(decoded)
            else:
                got.append(raw)

    async def drain(self, seconds: float = 0.5) -> None:
        try:
            while True:
                self.stray.append(json.loads(await asyncio.wait_for(self.conn.recv(), seconds)))
        except TimeoutError:
            return


async def open_socket(world: World, p: Principal, path: str) -> tuple[str, Any]:
    """``("open", (conn, first frame or None))``, ``("closed", code)`` or ``("refused",
    status)``. Anonymous callers send the server's own Origin (a browser without a
    session); token holders send none (a non-browser client)."""
    url = f"{world.server.ws}{path}"
    options: dict[str, Any] = {"open_timeout": 10}
    if p.token:
        options["additional_headers"] = {"Authorization": f"Bearer {p.token}"}
    else:
        options["origin"] = world.server.http
    try:
        conn = await connect(url, **options)
    except InvalidStatus as exc:
        return "refused", exc.response.status_code
    first, extra = None, []  # /ws/inbox/ sends nothing on connect: ping, read to the pong
    try:
        await conn.send(json.dumps({"type": "ping"}))
        while (frame := json.loads(await asyncio.wait_for(conn.recv(), 10)))["type"] != "pong":
            if first is None and frame["type"] == "room.joined":
                first = frame
            else:
                extra.append(frame)
    except ConnectionClosed as exc:
        return "closed", exc.rcvd.code if exc.rcvd else None
    return "open", (conn, first, extra)


def connect_expectations(world: World, p: Principal) -> dict[str, Any]:
    """Path -> "joined" (room.joined of the expected room), "open", or a close code."""
    unauth = p.role in ("anon", "bad")
    me = p.account or world.account("a")

    def code(value: Any) -> Any:
        return 4401 if unauth else value

    return {
        "/ws/inbox/": code("open"),
        f"/ws/dm/{world.partner(p)}/": code("joined"),
        f"/ws/dm/{world.stranger(p)}/": code("joined"),
        f"/ws/dm/{me.upper()}/": code(4403),
        f"/ws/dm/{MISSING_ACCOUNT}/": code(4404),
        f"/ws/dm/{world.account('e')}/": code(4404),
        f"/ws/dm/{world.account('g')}/": code(4403 if p.role == "A" else "joined"),
    }


def joined_problem(world: World, p: Principal, path: str, first: Any) -> str | None:
    if not first or first.get("type") != "room.joined":
        return f"first frame {first}"
    partner = path.split("/")[3].lower()
    if set(first["read"]) != {p.account, partner} or first["with"]["account"] != partner:
        return f"room.joined for someone else: {first}"
    if first["room"] in (world.foreign_room(p).key,):
        return f"joined the other conversation {first['room']}"
    return None


def attack_frames(target: Any) -> list[tuple[str, dict[str, Any], str | None, dict[str, Any]]]:
    """(name, frame, expected error code or None, the 'does not exist' twin)."""
    m0, m1 = target.message_ids[0], target.message_ids[1]

    def sent(**extra: Any) -> dict[str, Any]:
        return {"type": "message.send", "client_id": str(uuid.uuid4()), "message": "x", **extra}

    return [
        ("message.edit", {"type": "message.edit", "id": m0, "message": "pwned"}, "not_found",
         {"type": "message.edit", "id": MISSING_ID, "message": "pwned"}),
        ("message.unsend", {"type": "message.unsend", "id": m0}, "not_found",
         {"type": "message.unsend", "id": MISSING_ID}),
        ("reaction.set", {"type": "reaction.set", "id": m1, "emoji": "😈"}, "not_found",
         {"type": "reaction.set", "id": MISSING_ID, "emoji": "😈"}),
        ("reaction.clear", {"type": "reaction.clear", "id": m1}, "not_found",
         {"type": "reaction.clear", "id": MISSING_ID}),
        ("message.send reply_to", sent(reply_to=m0), "invalid", sent(reply_to=MISSING_ID)),
        ("message.send attachment", sent(attachment_ids=[target.attachment_id]), "invalid",
         sent(attachment_ids=[MISSING_ID])),
        ("message.send upload", sent(attachment_ids=[target.free_attachment_id]), "invalid",
         sent(attachment_ids=[MISSING_ID])),
        ("read", {"type": "read", "seq": 10**6}, None, {}),
        ("typing", {"type": "typing", "active": True}, None, {}),
        ("sync", {"type": "sync", "after": 0}, None, {}),
        ("ping", {"type": "ping"}, None, {}),
    ]  # fmt: skip


async def ws_matrix(world: World, tally: Tally) -> list[Socket]:
    people = {p.name: p for p in world.principals if p.role in ("A", "B", "C")}
    a, b, c = people["a"], people["b"], people["c"]
    # The outsider's socket on the conversation its refused first message would have
    # opened, opened before A comes online: nothing of A may reach it.
    status, opened = await open_socket(world, c, f"/ws/dm/{world.account('a')}/")
    assert status == "open", (status, opened)
    c_on_a = Socket("c on /ws/dm/a/", opened[0], None, opened[2])
    sockets = [c_on_a]

    for p in world.principals:
        for path, wanted in connect_expectations(world, p).items():
            status, result = await open_socket(world, p, path)
            tally.cells += 1
            label = f"connect {path} as {p.name}"
            if status == "open":
                conn, first, _ = result
                problem = joined_problem(world, p, path, first) if wanted == "joined" else None
                if wanted not in ("open", "joined") or problem:
                    tally.wrong.append(f"{label}: open, expected {wanted}; {problem or first}")
                for secret in world.foreign_secrets(p):
                    if first and secret in json.dumps(first):
                        tally.leaks.append(f"{label}: {secret} in {first}")
                await conn.close()
            elif result != wanted:
                tally.wrong.append(f"{label}: {status} {result}, expected {wanted}")

    async def dm(p: Principal, other: str) -> Socket:
        status, opened = await open_socket(world, p, f"/ws/dm/{other}/")
        assert status == "open", (p.name, other, status, opened)
        return Socket(f"{p.name} on /ws/dm/{other}/", opened[0], other, opened[2])

    async def inbox(p: Principal) -> Socket:
        status, opened = await open_socket(world, p, "/ws/inbox/")
        assert status == "open", (p.name, status, opened)
        return Socket(f"{p.name} on /ws/inbox/", opened[0], None, opened[2])

    a_ab, b_ab = await dm(a, world.account("b")), await dm(b, world.account("a"))
    c_cd = await dm(c, world.account("d"))
    a_inbox, b_inbox, c_inbox = await inbox(a), await inbox(b), await inbox(c)
    sockets += [a_ab, b_ab, c_cd, a_inbox, b_inbox, c_inbox]

    attackers = [(a_ab, a, world.cd), (c_cd, c, world.ab), (c_on_a, c, world.ab)]
    for sock, p, target in attackers:
        for name, frame, code, twin in attack_frames(target):
            got = await sock.exchange(frame)
            tally.cells += 1
            label = f"{name} on {sock.name}"
            for secret in world.foreign_secrets(p):
                if any(secret.encode() in raw for raw in got):
                    tally.leaks.append(f"{label}: {secret} in {got}")
            kinds = [json.loads(raw)["type"] for raw in got]
            if code is None:
                allowed = {"message.new", "sync.done"} if name == "sync" else set()
                if set(kinds) - allowed:
                    tally.wrong.append(f"{label}: unexpected {got}")
                continue
            errors = [json.loads(raw) for raw in got]
            if len(got) != 1 or errors[0]["type"] != "error" or errors[0]["code"] != code:
                tally.wrong.append(f"{label}: {got}, expected one {code} error")
                continue
            ref = frame.get("client_id", frame.get("id"))
            if errors[0]["ref"] != ref:
                tally.wrong.append(f"{label}: ref {errors[0]['ref']!r}, expected {ref!r}")
            missing = await sock.exchange(twin)
            if [REF.sub(b'"ref":REF', r) for r in missing] != [REF.sub(b'"ref":REF', got[0])]:
                tally.leaks.append(f"{label}: 'not yours' {got} vs 'does not exist' {missing}")

    for sock in (a_inbox, c_inbox):
        for name, frame, _, _ in attack_frames(world.ab if sock is c_inbox else world.cd):
            got = await sock.exchange(frame)
            tally.cells += 1
            errors = [json.loads(raw) for raw in got]
            expected = [] if name == "ping" else ["invalid"]
            if [e.get("code") for e in errors] != expected:
                tally.wrong.append(f"{name} on {sock.name}: {got}, expected {expected}")
    return sockets


def stray_problems(world: World, sockets: list[Socket]) -> list[str]:
    """Presence, typing and seen frames may come only from the socket's own partner."""
    problems = []
    for sock in sockets:
        for frame in sock.stray:
            about = frame.get("account") or frame.get("conversation", {}).get("with", {}).get(
                "account"
            )
            if frame["type"] == "presence" and sock.partner is None and "inbox" in sock.name:
                continue  # an inbox hears its own conversations' partners; checked below
            if about != sock.partner:
                problems.append(f"{sock.name} got {frame}")
    inbox_partners = {
        "a on /ws/inbox/": {world.account("b"), world.account("g")},
        "b on /ws/inbox/": {world.account("a")},
        "c on /ws/inbox/": {world.account("d")},
    }
    for sock in sockets:
        for frame in sock.stray:
            about = frame.get("account")
            if sock.name in inbox_partners and about and about not in inbox_partners[sock.name]:
                problems.append(f"{sock.name} got {frame}")
    return problems


async def test_websocket_authorization_matrix(world: World) -> None:
    http_before, db_before = http_snapshot(world), db_snapshot(world)
    tally = Tally()
    sockets = await ws_matrix(world, tally)
    # A comes and goes once more: whoever may not see A's presence must not.
    status, opened = await open_socket(world, world.principals[0], f"/ws/dm/{world.account('b')}/")
    assert status == "open"
    await opened[0].close()
    for sock in sockets:
        await sock.drain(0.3)
    strays = stray_problems(world, sockets)
    tally.cells += len(sockets)
    tally.leaks += strays
    changed = [
        f"{part} changed"
        for part, (before, after) in {
            "history and inboxes": (http_before, http_snapshot(world)),
            "database rows": (db_before, db_snapshot(world)),
        }.items()
        if before != after
    ]
    # The control: the same harness sees an allowed change happen.
    a_ab = sockets[1]
    got = await a_ab.exchange(
        {"type": "message.edit", "id": world.ab.message_ids[2], "message": "edited"}
    )
    # The event comes back through the channel layer (Redis pub/sub), the pong straight
    # from the socket: either may come first.
    await a_ab.drain(1.0)
    control = [json.loads(raw)["type"] for raw in got]
    control += [f["type"] for f in a_ab.stray if f["type"] == "message.updated"]
    for sock in sockets:
        await sock.conn.close()
    record_figures(
        "authz_ws",
        {
            "principals": len(world.principals),
            "cells": tally.cells,
            "leaks": len(tally.leaks),
            "unexpected": len(tally.wrong),
            "state_changes": len(changed),
        },
    )
    assert control == ["message.updated"], got
    assert not tally.wrong + tally.leaks + changed, "\n".join(tally.wrong + tally.leaks + changed)


# --- Sockets opened before the credentials changed -----------------------------------


async def closed_code(conn: Any, seconds: float) -> int | None:
    """The close code ``conn`` gets within ``seconds`` (frames before it are skipped)."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                await conn.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    except TimeoutError:
        return None


async def test_sockets_opened_before_a_revocation_close(world: World) -> None:
    """The revoked and deactivated principals, on sockets opened while they were valid:
    a revocation closes both of the user's sockets (4401) within two seconds; an account
    deactivated behind the app's back (a bulk UPDATE: no event) sends nothing."""
    base, partner = world.server.http, world.account("a")
    problems = []

    def logout(token: str, user: dict[str, Any]) -> None:
        ok(call(base, Principal("x", "x", token), "POST", "/api/auth/logout", {}), 204)

    def logout_everywhere(token: str, user: dict[str, Any]) -> None:
        other = ok(call(base, None, "POST", "/api/auth/token",
                        {"account": user["account"], "password": PASSWORD}), 200)["token"]  # fmt: skip
        ok(call(base, Principal("x", "x", other), "POST", "/api/auth/logout", {"all": True}), 204)

    def password_change(token: str, user: dict[str, Any]) -> None:
        body = {"old_password": PASSWORD, "new_password": PASSWORD + " changed"}
        ok(call(base, Principal("x", "x", token), "POST", "/api/auth/password", body), 200)

    for name, change in {
        "logged out": logout,
        "logged out everywhere": logout_everywhere,
        "password changed": password_change,
    }.items():
        user = signup(base, password=PASSWORD)
        p = Principal(name, "bad", user["token"], user["account"])
        dm = (await open_socket(world, p, f"/ws/dm/{partner}/"))[1][0]
        inbox = (await open_socket(world, p, "/ws/inbox/"))[1][0]
        await asyncio.to_thread(change, user["token"], user)
        for label, conn in (("/ws/dm/", dm), ("/ws/inbox/", inbox)):
            if (code := await closed_code(conn, 2.0)) != 4401:
                problems.append(f"{name}: {label} socket got {code}, expected 4401 within 2 s")

    user = signup(base, password=PASSWORD)
    p = Principal("deactivated behind the app's back", "bad", user["token"], user["account"])
    dm = (await open_socket(world, p, f"/ws/dm/{partner}/"))[1][0]
    table = "users_user"  # the demo host's user model
    await asyncio.to_thread(
        live_sql,
        world.database_url,
        f"UPDATE {table} SET is_active = %s WHERE id = %s",
        (False, user["id"]),
    )
    await dm.send(
        json.dumps({"type": "message.send", "client_id": str(uuid.uuid4()), "message": "x"})
    )
    error = json.loads(await asyncio.wait_for(dm.recv(), 10))
    if (error.get("type"), error.get("code")) != ("error", "unauthenticated"):
        problems.append(f"deactivated: a send got {error}")
    if (code := await closed_code(dm, 2.0)) != 4401:
        problems.append(f"deactivated: the socket got {code} after its refused send")
    rows = await asyncio.to_thread(
        live_sql,
        world.database_url,
        "SELECT count(*) FROM direct_messages_directmessage WHERE sender_id = %s",
        (user["id"],),
    )
    if rows[0][0]:
        problems.append("deactivated: a message was stored")
    assert not problems, "\n".join(problems)
