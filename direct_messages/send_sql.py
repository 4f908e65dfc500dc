"""The statements of a send, in SQL: the hot path of the app (bench/RESULTS.md).

Built by the ORM, a send cost about 5 ms of CPU in query building and model code; here
it is one statement on PostgreSQL and six on SQLite. What they do is what
``services.message_send`` documents: lock the room, refuse a blocked pair, take a place
in the sender's rate window (or refuse), insert the message with the next ``seq``, move
the room's last message and both members' cursors, unread counts, folder and activity.

The rate window (:class:`SendWindow`, one row per user) is moved in the message's own
transaction, so only stored messages count, a refused or rolled-back send gives nothing
back because it took nothing, and the limit holds across processes with or without
Redis, at no round trip of its own.

The room and both member rows are read under the room's lock, which every writer of a
room or its members takes first, and the sender's window row after it (only sends lock
it, each while holding its room's lock, so no two sends can wait on each other in a
cycle). On PostgreSQL ``FOR UPDATE`` returns the rows at their newest even after
waiting for another send, and each later part of the statement updates the rows it
locked; on SQLite the IMMEDIATE transaction holds the database's write lock from its
BEGIN.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
from typing import Any

from django.db import connection

from direct_messages.conf import dm_setting
from direct_messages.errors import Forbidden, RateLimited
from direct_messages.models import Block, DirectMessage, Room, RoomMember, SendWindow

# (room id, room's last seq before the send, member id, user id, unread count, muted,
#  is_request) for both members, as they were before the send.
MemberRow = tuple[int, int, int, int, int, bool, bool]

_LOCK = """
SELECT r.id AS room_id, r.last_seq, m.id AS member_id, m.user_id, m.unread_count, m.muted,
       m.is_request,
       NOT EXISTS (SELECT 1 FROM {block} b
                   WHERE (b.blocker_id = %(sender)s AND b.blocked_id = %(other)s)
                      OR (b.blocker_id = %(other)s AND b.blocked_id = %(sender)s)) AS allowed
FROM {room} r JOIN {member} m ON m.room_id = r.id
WHERE r.key = %(key)s
"""
_INSERT = """
INSERT INTO {message} (room_id, sender_id, seq, message, client_id, created_at, reply_to_id)
"""
_MEMBERS_SET = """
    last_read_seq = CASE WHEN user_id = %(sender)s THEN {seq} ELSE last_read_seq END,
    unread_count = CASE WHEN user_id = %(sender)s THEN 0 ELSE unread_count + 1 END,
    is_request = CASE WHEN user_id = %(sender)s THEN %(false)s ELSE is_request END,
    last_activity_at = %(now)s, visible = %(true)s
"""

# PostgreSQL: everything in one statement, so no BEGIN or COMMIT either. The sender's
# window takes the send only if it has a place (an UPDATE re-checks its condition on
# the row's newest version after waiting for another send of the same user), and the
# message is inserted only if the window took it. The message id is NULL when nothing
# was written: the pair is blocked, or the window is full or missing (then
# ``_window_refusal`` tells which).
_POSTGRESQL = f"""
WITH locked AS ({_LOCK} FOR UPDATE),
sent AS (
    UPDATE {{window}} w
    SET recent = CASE WHEN jsonb_array_length(w.recent) >= %(limit)s
                           OR (w.recent -> 0)::float8 <= %(since)s
                      THEN w.recent - 0 ELSE w.recent END
                 || to_jsonb(%(epoch)s::float8)
    FROM locked l
    WHERE w.user_id = %(sender)s AND l.user_id = %(sender)s AND l.allowed
      AND (jsonb_array_length(w.recent) < %(limit)s
           OR (w.recent -> (jsonb_array_length(w.recent) - %(limit)s::int))::float8
              <= %(since)s)
    RETURNING w.user_id
),
msg AS (
    {_INSERT}
    SELECT r.room_id, r.user_id, r.last_seq + 1, %(text)s, %(client_id)s, %(now)s,
           %(reply_to)s::bigint
    FROM locked r, sent WHERE r.user_id = %(sender)s
    RETURNING id, room_id, seq
),
room_update AS (
    UPDATE {{room}} SET last_seq = msg.seq, last_message_id = msg.id, last_activity_at = %(now)s
    FROM msg WHERE {{room}}.id = msg.room_id
),
members_update AS (
    UPDATE {{member}} SET {_MEMBERS_SET.format(seq="msg.seq")}
    FROM msg WHERE {{member}}.room_id = msg.room_id
)
SELECT locked.*, msg.id FROM locked LEFT JOIN msg ON true
"""

# Elsewhere (SQLite): six statements, in the caller's transaction (IMMEDIATE: it holds
# the database's write lock from its BEGIN).
_OTHER = [
    _LOCK,
    "SELECT recent FROM {window} WHERE user_id = %(sender)s",
    f"{_INSERT} VALUES (%(room)s, %(sender)s, %(seq)s, %(text)s, %(client_id)s, %(now)s,"
    " %(reply_to)s) RETURNING id",
    "UPDATE {room} SET last_seq = %(seq)s, last_message_id = %(message)s,"
    " last_activity_at = %(now)s WHERE id = %(room)s",
    f"UPDATE {{member}} SET {_MEMBERS_SET.format(seq='%(seq)s')} WHERE room_id = %(room)s",
    "UPDATE {window} SET recent = %(recent)s WHERE user_id = %(sender)s",
]


def needs_transaction() -> bool:
    """Whether the statements need the caller's transaction (they are one statement,
    atomic by itself, only on PostgreSQL)."""
    return connection.vendor != "postgresql"


@functools.cache
def _sql(template: str, vendor: str) -> str:
    quote = connection.ops.quote_name
    return template.format(
        block=quote(Block._meta.db_table),
        room=quote(Room._meta.db_table),
        member=quote(RoomMember._meta.db_table),
        message=quote(DirectMessage._meta.db_table),
        window=quote(SendWindow._meta.db_table),
    )


@functools.cache
def _prepared_cursor_class() -> Any:
    import psycopg
    from psycopg.types.numeric import Int8

    class PreparedCursor(psycopg.Cursor[Any]):
        """Prepares every statement, with every integer bound as bigint: psycopg binds
        a Python int as the smallest type that holds it, and each combination of
        parameter types would be a prepared statement (and a plan) of its own."""

        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            if isinstance(params, dict):
                params = {k: Int8(v) if type(v) is int else v for k, v in params.items()}
            return super().execute(query, params, prepare=True, **kwargs)

    return PreparedCursor


def _prepared_cursor() -> Any:
    """A cursor on Django's connection that binds parameters on the server and prepares
    its statement once per connection (``prepare_threshold`` must not be None): planning
    the send statement cost more than running it. Django's own cursors bind on the
    client and are never prepared. Used only while queries are not logged (DEBUG, tests
    counting queries), since a prepared statement logs without its values."""
    connection.ensure_connection()
    return connection.make_cursor(_prepared_cursor_class()(connection.connection))


def _prep(field: str, value: Any) -> Any:
    """``value`` as the database stores it (UUIDs and datetimes differ by database)."""
    model_field: Any = DirectMessage._meta.get_field(field)
    return model_field.get_db_prep_value(value, connection)


def message_store(
    cursor: Any,
    *,
    key: str,
    sender_id: int,
    other_id: int,
    client_id: Any,
    text: str,
    now: dt.datetime,
    reply_to_id: int | None,
) -> tuple[list[MemberRow], int]:
    """Store one message; return both members as they were before it, and its id.

    Raises, having written nothing: ``Room.DoesNotExist`` (no room yet), ``Forbidden``
    (the pair is blocked), ``SendWindow.DoesNotExist`` (the sender has no window row
    yet), ``RateLimited`` (the window is full) or ``IntegrityError`` (``(sender,
    client_id)`` is taken).
    """
    limit, window = dm_setting("SEND_RATE_LIMIT"), dm_setting("SEND_RATE_WINDOW_SECONDS")
    epoch = now.timestamp()
    params = {
        "key": key,
        "sender": sender_id,
        "other": other_id,
        "text": text,
        "client_id": _prep("client_id", client_id),
        "now": _prep("created_at", now),
        "reply_to": reply_to_id,
        "true": True,
        "false": False,
        "limit": limit,
        "window": window,
        "since": epoch - window,
        "epoch": epoch,
    }
    vendor = connection.vendor
    if vendor == "postgresql" and connection.queries_logged:
        cursor.execute(_sql(_POSTGRESQL, vendor), params)  # logged with its values
        rows = cursor.fetchall()
    elif vendor == "postgresql":
        with _prepared_cursor() as prepared:
            prepared.execute(_sql(_POSTGRESQL, vendor), params)
            rows = prepared.fetchall()
    else:
        cursor.execute(_sql(_OTHER[0], vendor), params)
        rows = cursor.fetchall()
    if not rows:
        raise Room.DoesNotExist(key)
    if not rows[0][7]:
        raise Forbidden("this conversation is blocked")
    members: list[MemberRow] = [
        (room, seq, pk, user, unread, bool(muted), bool(request))
        for room, seq, pk, user, unread, muted, request, *_ in rows
    ]
    if vendor == "postgresql":
        if rows[0][8] is None:
            raise _window_refusal(cursor, params)
        return members, rows[0][8]
    insert, room_update, members_update, window_update = (_sql(sql, vendor) for sql in _OTHER[2:])
    recent = _window_read(cursor, params)
    full_since = _window_full_since(recent, params)
    if full_since is not None:
        raise _rate_limited(full_since, params)
    if recent and (len(recent) >= limit or recent[0] <= params["since"]):
        del recent[0]  # as the PostgreSQL statement does
    params.update(room=rows[0][0], seq=rows[0][1] + 1, recent=json.dumps([*recent, epoch]))
    cursor.execute(insert, params)
    params["message"] = cursor.fetchone()[0]
    cursor.execute(room_update, params)
    cursor.execute(members_update, params)
    cursor.execute(window_update, params)
    return members, params["message"]


def _window_read(cursor: Any, params: dict[str, Any]) -> list[float]:
    """The sender's window, or ``SendWindow.DoesNotExist``."""
    cursor.execute(_sql(_OTHER[1], connection.vendor), params)
    found = cursor.fetchone()
    if found is None:
        raise SendWindow.DoesNotExist(params["sender"])
    return list(json.loads(found[0]) if isinstance(found[0], str) else found[0])


def _window_full_since(recent: list[float], params: dict[str, Any]) -> float | None:
    """None if the window has a place at the send's time; else the time of the send
    whose place the next one waits for (the limit-th newest, still in the window).

    The window may also hold sends older than that (it drops at most one per send, to
    stay cheap to move); they do not change the answer."""
    limit = params["limit"]
    if len(recent) < limit or recent[-limit] <= params["since"]:
        return None
    return recent[-limit]


def _window_refusal(cursor: Any, params: dict[str, Any]) -> Exception:
    """Why the send statement stored nothing although the pair may talk: the sender's
    window is missing, or full (read at the send's time: later sends only add to it)."""
    return _rate_limited(_window_full_since(_window_read(cursor, params), params), params)


def _rate_limited(full_since: float | None, params: dict[str, Any]) -> RateLimited:
    """The refusal of a send whose window is full until the send at ``full_since``
    leaves it (None: unknown, try again in a second)."""
    limit, window = params["limit"], params["window"]
    wait = 1 if full_since is None else math.ceil(full_since + window - params["epoch"])
    return RateLimited(f"at most {limit} messages per {window} seconds", retry_after=max(1, wait))
