"""PostgreSQL's fast path for a send: the whole send in one SQL statement.

:func:`services.message_send` stores a message through the ORM (:func:`services.
_message_store`); on PostgreSQL, unless ``DIRECT_MESSAGES["SEND_STATEMENT"]`` is False,
it calls :func:`message_store` here instead, which does the same thing in one
statement: no BEGIN or COMMIT, one round trip instead of nine (and, with the prepared
statements docs/install.md recommends, planned once per connection). It is the
one place where send rules are written a second time, in SQL: the room's lock, the
block check, the rate window (:func:`ratelimit.send_window_take`) and the member
update (:func:`services._members_advance`). The send tests run against both
(``tests/conftest.py``'s ``send_path``), and ``make bench`` reports what it saves
(docs/benchmarks.md). Hiding a request (hidden words) is not in it: matching is
Python's (the statement returns the recipient's own words for it, saving a request's
send a round trip), and the rare send that hides a request updates its member afterwards.

The room and both member rows are read under the room's lock, which every writer of a
room or its members takes first, and the sender's window row after it (only sends lock
it, each while holding its room's lock, so no two sends wait on each other in a
cycle). ``FOR UPDATE`` returns the rows at their newest even after waiting for another
send, and each later part of the statement updates the rows it locked. The window
takes the send only if it has a place (``ON CONFLICT ... DO UPDATE ... WHERE``
re-checks its condition on the row's newest version, and inserts the row of a user
who has none), and the message is inserted only if the window took it.
"""

from __future__ import annotations

import functools
import json

from django.db import connection

from direct_messages import ratelimit
from direct_messages.conf import dm_setting
from direct_messages.errors import Forbidden, RateLimited
from direct_messages.models import (
    Block,
    DirectMessage,
    Room,
    RoomMember,
    SendWindow,
    UserSettings,
)

_STATEMENT = """
WITH locked AS (
    SELECT r.id AS room_id, r.user_lo_id, r.user_hi_id, r.last_seq, r.created_at,
           m.id AS member_id, m.user_id, m.other_id, m.unread_count, m.last_read_seq,
           m.muted, m.is_request, m.hidden, m.cleared_seq, m.read_receipts,
           s.read_receipts AS user_read_receipts, s.hidden_words AS user_hidden_words,
           NOT EXISTS (SELECT 1 FROM {block} b
                       WHERE (b.blocker_id = %(sender)s AND b.blocked_id = %(other)s)
                          OR (b.blocker_id = %(other)s AND b.blocked_id = %(sender)s))
           AS not_blocked
    FROM {room} r JOIN {member} m ON m.room_id = r.id
    LEFT JOIN {settings} s ON s.user_id = m.user_id
    WHERE r.key = %(key)s
    FOR UPDATE OF r, m
),
sent AS (
    INSERT INTO {window} AS w (user_id, recent)
    SELECT l.user_id, jsonb_build_array(%(epoch)s::float8) FROM locked l
    WHERE l.user_id = %(sender)s AND l.not_blocked
    ON CONFLICT (user_id) DO UPDATE
    SET recent = CASE WHEN jsonb_array_length(w.recent) >= %(limit)s
                           OR (w.recent -> 0)::float8 <= %(since)s
                      THEN w.recent - 0 ELSE w.recent END
                 || to_jsonb(%(epoch)s::float8)
    WHERE jsonb_array_length(w.recent) < %(limit)s
       OR (w.recent -> (jsonb_array_length(w.recent) - %(limit)s::int))::float8 <= %(since)s
    RETURNING w.user_id
),
msg AS (
    INSERT INTO {message} (room_id, sender_id, seq, message, client_id, created_at,
                           reply_to_id, view_once, views)
    SELECT l.room_id, l.user_id, l.last_seq + 1, %(text)s, %(client_id)s, %(now)s,
           %(reply_to)s::bigint, %(view_once)s::smallint, 0
    FROM locked l, sent WHERE l.user_id = %(sender)s
    RETURNING id, room_id, seq
),
room_update AS (
    UPDATE {room} SET last_seq = msg.seq, last_message_id = msg.id,
                      last_activity_at = %(now)s
    FROM msg WHERE {room}.id = msg.room_id
),
members_update AS (
    UPDATE {member} SET
        last_read_seq = CASE WHEN user_id = %(sender)s THEN msg.seq ELSE last_read_seq END,
        unread_count = CASE WHEN user_id = %(sender)s THEN 0 ELSE unread_count + 1 END,
        is_request = CASE WHEN user_id = %(sender)s THEN false ELSE is_request END,
        hidden = CASE WHEN user_id = %(sender)s THEN false ELSE hidden END,
        last_activity_at = %(now)s, visible = true
    FROM msg WHERE {member}.room_id = msg.room_id
)
SELECT locked.*, msg.id, msg.seq FROM locked LEFT JOIN msg ON true
"""


@functools.cache
def _statement() -> str:
    quote = connection.ops.quote_name
    return _STATEMENT.format(
        block=quote(Block._meta.db_table),
        room=quote(Room._meta.db_table),
        member=quote(RoomMember._meta.db_table),
        message=quote(DirectMessage._meta.db_table),
        window=quote(SendWindow._meta.db_table),
        settings=quote(UserSettings._meta.db_table),
    )


def message_store(key: str, message: DirectMessage, other_id: int) -> tuple[Room, list[RoomMember]]:
    """Store ``message`` (unsaved: sender, text, client id, time and reply set) in the
    room ``key``; return the room and its members as they were before it.

    ``message`` gets its id, seq and room. Raises, having written nothing:
    ``Room.DoesNotExist`` (no room yet), ``Forbidden`` (the pair is blocked),
    ``RateLimited`` (the sender's window is full) or ``IntegrityError`` (``(sender,
    client_id)`` is taken).
    """
    sender_id: int = message.sender_id  # type: ignore[assignment]  # a send has one
    epoch = message.created_at.timestamp()
    window = dm_setting("SEND_RATE_WINDOW_SECONDS")
    params = {
        "key": key,
        "sender": sender_id,
        "other": other_id,
        "text": message.message,
        "client_id": message.client_id,
        "now": message.created_at,
        "reply_to": message.reply_to_id,
        "view_once": message.view_once,
        "limit": dm_setting("SEND_RATE_LIMIT"),
        "since": epoch - window,
        "epoch": epoch,
    }
    with connection.cursor() as cursor:
        cursor.execute(_statement(), params)
        names = [column.name for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    if not rows:
        raise Room.DoesNotExist(key)
    first = rows[0]
    if not first["not_blocked"]:
        raise Forbidden("this conversation is blocked")
    if first["id"] is None:  # the window took nothing: it is full (later sends only add)
        recent = SendWindow.objects.get(user_id=sender_id).recent
        raise ratelimit.send_window_refusal(recent, epoch) or RateLimited("too many messages")
    room = Room(
        id=first["room_id"],
        key=key,
        **{name: first[name] for name in ("user_lo_id", "user_hi_id", "last_seq", "created_at")},
    )
    member_fields = ["user_id", "other_id", "unread_count", "last_read_seq", "muted"]
    member_fields += ["is_request", "hidden", "cleared_seq", "read_receipts"]
    members = []
    for row in rows:
        member = RoomMember(
            id=row["member_id"], room=room, **{name: row[name] for name in member_fields}
        )
        # As selectors.members_with_receipts would annotate it, for read_receipts_on.
        member.user_read_receipts = row["user_read_receipts"]  # type: ignore[attr-defined]
        # What selectors.hidden_words_for reads, for services._request_hides (no row: none).
        words = row["user_hidden_words"]  # jsonb, which Django's connections read as text
        words = json.loads(words) if isinstance(words, str) else words
        member.user_hidden_words = words or []  # type: ignore[attr-defined]
        members.append(member)
    message.id, message.seq, message.room = first["id"], first["seq"], room
    # Stored, as save() would mark it (Model._state is public: Django's "Model instance
    # reference", "Model attributes"); a message_sent receiver may save or validate it.
    message._state.adding, message._state.db = False, connection.alias
    return room, members
