"""Two conversations and every kind of caller, on a live server, for the authorization
matrix: who may touch which room, message and attachment, and what a refusal says."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from django.conf import settings

from tests.reliability.http_raw import Reply, request
from tests.support import LiveServer, server_env, signup

PASSWORD = "correct-horse-battery"
MISSING_ID = 2_000_000_000  # an id no test database reaches


@dataclass
class Principal:
    """A caller. ``role`` is what the matrix keys expectations by: ``A`` and ``B``
    (participants of one room), ``C`` (of the other room: an outsider to A-B), ``anon``
    (no credentials) and ``bad`` (credentials that must not authenticate)."""

    name: str
    role: str
    token: str | None = None
    account: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@dataclass
class Room:
    """One conversation's ids and the strings that must never reach an outsider."""

    key: str
    members: tuple[str, str]
    message_ids: list[int]
    attachment_id: int  # an image in one of its messages (with a thumbnail)
    free_attachment_id: int  # uploaded by a member, in no message yet
    secrets: list[str] = field(default_factory=list)


@dataclass
class World:
    server: LiveServer
    database_url: str
    # a, b, c, d; e (deactivated), g (blocked by a), h (no conversation with anyone)
    users: dict[str, dict[str, Any]]
    ab: Room
    cd: Room
    principals: list[Principal]

    @property
    def base(self) -> str:
        return self.server.http

    def account(self, name: str) -> str:
        return str(self.users[name]["account"])

    def own_room(self, p: Principal) -> Room:
        return self.cd if p.role == "C" else self.ab

    def foreign_room(self, p: Principal) -> Room:
        """The conversation ``p`` is not in (A-B for the outsider and the anonymous)."""
        return self.cd if p.role in ("A", "B") else self.ab

    def partner(self, p: Principal) -> str:
        """The other member of ``p``'s own room."""
        return {"A": self.account("b"), "B": self.account("a")}.get(p.role, self.account("d"))

    def stranger(self, p: Principal) -> str:
        """A member of the room ``p`` is not in, to whom ``p``'s first message was
        refused (see :func:`build_world`)."""
        return self.account("d") if p.role in ("A", "B") else self.account("a")

    def nobody(self, p: Principal) -> str:
        """Someone with no room at all."""
        return self.account("h")

    def foreign_secrets(self, p: Principal) -> list[str]:
        if p.role in ("A", "B"):
            return self.cd.secrets
        if p.role == "C":
            return self.ab.secrets
        return self.ab.secrets + self.cd.secrets


def png_bytes(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (48, 32), color).save(out, format="PNG")
    return out.getvalue()


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for name, filename, data in files:
        head = (
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="{name}"; filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


def call(
    base: str, p: Principal | None, method: str, path: str, body: Any = None, **kw: Any
) -> Reply:
    headers = dict(p.headers()) if p else {}
    headers.update(kw.pop("headers", {}))
    data = None
    if isinstance(body, bytes):
        data = body
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    return request(base, method, path, headers=headers, body=data)


def ok(reply: Reply, status: int) -> Any:
    assert reply.status == status, (reply.status, reply.body[:500])
    return json.loads(reply.body) if reply.body else None


def upload(base: str, p: Principal, filename: str, color: tuple[int, int, int]) -> int:
    body, content_type = multipart({}, [("file", filename, png_bytes(color))])
    reply = call(base, p, "POST", "/api/attachments", body, headers={"Content-Type": content_type})
    return int(ok(reply, 201)["id"])


def send(base: str, p: Principal, to: str, text: str, **extra: Any) -> dict[str, Any]:
    body = {"client_id": str(uuid.uuid4()), "message": text, **extra}
    return dict(ok(call(base, p, "POST", f"/api/dm/{to}/messages", body), 201))


def forged_tokens(user_id: int, other_id: int, valid: str) -> dict[str, str]:
    """Tokens that must not authenticate: expired, re-signed claims, other keys. Each
    differs from ``valid`` (a real token of ``user_id``) in that one property only."""
    now = dt.datetime.now(dt.UTC)
    claims = jwt.decode(valid, options={"verify_signature": False})
    claims.update(iat=now, exp=now + dt.timedelta(hours=1))
    expired = dict(claims, iat=now - dt.timedelta(days=8), exp=now - dt.timedelta(seconds=5))
    header, _, signature = valid.split(".")
    swapped = jwt.encode(
        dict(claims, sub=str(other_id)), "not the key, but long enough for HS256", algorithm="HS256"
    )
    tampered = ".".join([header, swapped.split(".")[1], signature])  # B's claims, A's signature
    return {
        "expired": jwt.encode(expired, settings.SECRET_KEY, algorithm="HS256"),
        "tampered": tampered,
        "wrong_key": jwt.encode(claims, "x" * 64, algorithm="HS256"),
        "alg_none": jwt.encode(claims, None, algorithm="none"),  # type: ignore[arg-type]
        "wrong_audience": jwt.encode(dict(claims, aud="other"), settings.SECRET_KEY, "HS256"),
        "no_expiry": jwt.encode(
            {k: v for k, v in claims.items() if k != "exp"}, settings.SECRET_KEY, "HS256"
        ),
        "old_token_version": jwt.encode(
            dict(claims, ver=claims["ver"] - 1), settings.SECRET_KEY, "HS256"
        ),
        "truncated_signature": valid[:-4],
    }


def revoked_tokens(base: str) -> dict[str, str]:
    """Real tokens, revoked since: logged out, and signed before a password change."""
    logged_out = signup(base, password=PASSWORD)
    ok(call(base, Principal("x", "x", logged_out["token"]), "POST", "/api/auth/logout", {}), 204)
    changed = signup(base, password=PASSWORD)
    body = {"old_password": PASSWORD, "new_password": PASSWORD + " and more"}
    fresh = ok(call(base, Principal("x", "x", changed["token"]), "POST", "/api/auth/token",
                    {"account": changed["account"], "password": PASSWORD}), 200)["token"]  # fmt: skip
    ok(call(base, Principal("x", "x", fresh), "POST", "/api/auth/password", body), 200)
    return {"logged_out": logged_out["token"], "password_changed": changed["token"]}


def live_sql(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run ``sql`` (``%s`` placeholders) on the live server's database."""
    if database_url.startswith("sqlite:///"):
        import sqlite3

        path = database_url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
            rows = conn.execute(sql.replace("%s", "?"), params).fetchall()
            conn.commit()
            return rows
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as pg:
        cursor = pg.execute(sql, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


@contextlib.contextmanager
def module_server(database_url: str, log_dir: Path) -> Iterator[LiveServer]:
    """One daphne for a whole test module (like ``asgi_server``, which is per test):
    the embedded defaults, or Redis when ``REDIS_URL`` is set."""
    log = log_dir / "server.log"
    server = LiveServer(
        env=server_env(database_url, os.environ.get("REDIS_URL") or None), log_path=log
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        text = log.read_text(errors="replace")
        if "Traceback" in text:
            print(f"--- {log} ---\n{text[-4000:]}")


def build_world(server: LiveServer, database_url: str) -> World:
    from django.contrib.auth import get_user_model

    base = server.http
    users = {name: signup(base, password=PASSWORD) for name in "abcdegh"}
    person = {
        name: Principal(name, name.upper(), u["token"], u["account"]) for name, u in users.items()
    }
    a, b, c, d = person["a"], person["b"], person["c"], person["d"]
    tag = uuid.uuid4().hex[:8]

    def room(x: Principal, y: Principal, label: str, color: tuple[int, int, int]) -> Room:
        texts = [f"secret-{label}-{tag}-{i}" for i in range(3)]
        first = send(base, x, str(y.account), texts[0])
        second = send(base, y, str(x.account), texts[1])
        name = f"{label}-{tag}.png"
        attachment = upload(base, x, name, color)
        third = send(base, x, str(y.account), texts[2], attachment_ids=[attachment])
        free_name = f"{label}-free-{tag}.png"
        free = upload(base, x, free_name, color)
        return Room(
            key=first["room"],
            members=(str(x.account), str(y.account)),
            message_ids=[first["id"], second["id"], third["id"]],
            attachment_id=attachment,
            free_attachment_id=free,
            secrets=[*texts, f'"{first["room"]}"', name, free_name, f"{label}-{tag}.webp"],
        )

    ab = room(a, b, "ab", (200, 30, 30))
    cd = room(c, d, "cd", (30, 30, 200))
    # e writes to a, then is deactivated; its token was issued before that.
    send(base, person["e"], str(a.account), f"secret-ea-{tag}")
    table = get_user_model()._meta.db_table
    live_sql(
        database_url, f"UPDATE {table} SET is_active = %s WHERE id = %s", (False, users["e"]["id"])
    )
    ok(call(base, a, "POST", f"/api/users/{users['g']['account']}/block"), 204)
    # A first message refused in its transaction (attachments that are not the
    # sender's) leaves no room behind: the room commits with its first message. Each
    # caller has tried one with its stranger.
    for who, stranger in ((a, d), (b, d), (c, a)):
        body = {"client_id": str(uuid.uuid4()), "message": "x", "attachment_ids": [MISSING_ID]}
        ok(call(base, who, "POST", f"/api/dm/{stranger.account}/messages", body), 400)

    principals = [a, b, c, Principal("anonymous", "anon")]
    principals.append(Principal("deactivated", "bad", users["e"]["token"]))
    for name, token in forged_tokens(users["a"]["id"], users["b"]["id"], str(a.token)).items():
        principals.append(Principal(name, "bad", token))
    for name, token in revoked_tokens(base).items():
        principals.append(Principal(name, "bad", token))
    return World(server, database_url, users, ab, cd, principals)


def http_snapshot(world: World) -> dict[str, Any]:
    """What each member sees of both conversations, through the API."""
    seen: dict[str, Any] = {}
    people = {p.name: p for p in world.principals if p.role in ("A", "B", "C") and p.token}
    d = Principal("d", "D", world.users["d"]["token"], world.account("d"))
    pairs = [(people["a"], "b"), (people["b"], "a"), (people["c"], "d"), (d, "c")]
    for who, partner in pairs:
        history = call(world.base, who, "GET", f"/api/dm/{world.account(partner)}/messages")
        inbox = call(world.base, who, "GET", "/api/inbox")
        requests_ = call(world.base, who, "GET", "/api/inbox?folder=requests")
        hidden = call(world.base, who, "GET", "/api/inbox?folder=hidden")
        seen[who.name] = [json.loads(r.body) for r in (history, inbox, requests_, hidden)]
    return seen


def db_snapshot(world: World) -> dict[str, Any]:
    """The rows of both conversations, straight from the server's database."""
    from direct_messages.models import (
        Block,
        DirectMessage,
        DirectMessageAttachFiles,
        Reaction,
        RoomMember,
    )
    from direct_messages.models import Room as RoomModel

    def table(model: Any) -> str:
        return str(model._meta.db_table)

    keys = (world.ab.key, world.cd.key)
    room_ids = [
        r[0]
        for r in live_sql(
            world.database_url, f"SELECT id FROM {table(RoomModel)} WHERE key IN (%s, %s)", keys
        )
    ]
    marks = ", ".join(["%s"] * len(room_ids))
    ids = tuple(room_ids)
    attachments = (
        world.ab.attachment_id,
        world.ab.free_attachment_id,
        world.cd.attachment_id,
        world.cd.free_attachment_id,
    )
    people = tuple(world.users[n]["id"] for n in "abcd")
    return {
        "rooms": live_sql(
            world.database_url,
            f"SELECT id, last_seq, last_message_id FROM {table(RoomModel)} "
            f"WHERE id IN ({marks}) ORDER BY id",
            ids,
        ),
        "messages": live_sql(
            world.database_url,
            f"SELECT id, seq, sender_id, message, edited_at, unsent_at "
            f"FROM {table(DirectMessage)} WHERE room_id IN ({marks}) ORDER BY id",
            ids,
        ),
        "members": live_sql(
            world.database_url,
            f"SELECT room_id, user_id, last_read_seq, unread_count, muted, is_request, "
            f"cleared_seq, visible, hidden FROM {table(RoomMember)} WHERE room_id IN ({marks}) "
            f"ORDER BY room_id, user_id",
            ids,
        ),
        "reactions": live_sql(
            world.database_url,
            f"SELECT message_id, user_id, emoji FROM {table(Reaction)} WHERE message_id IN "
            f"(SELECT id FROM {table(DirectMessage)} WHERE room_id IN ({marks})) "
            f"ORDER BY message_id, user_id",
            ids,
        ),
        "attachments": live_sql(
            world.database_url,
            f"SELECT id, message_id, uploader_id FROM {table(DirectMessageAttachFiles)} "
            f"WHERE id IN (%s, %s, %s, %s) ORDER BY id",
            attachments,
        ),
        "blocks": live_sql(
            world.database_url,
            f"SELECT blocker_id, blocked_id FROM {table(Block)} "
            f"WHERE blocker_id IN (%s, %s, %s, %s) ORDER BY blocker_id, blocked_id",
            people,
        ),
    }
