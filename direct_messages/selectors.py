"""Every read of the app. Each runs a fixed number of SQL queries, whatever the page
size or the number of conversations and messages behind it."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Exists, F, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.expressions import RawSQL
from django.utils import timezone

from direct_messages.adapters import handle_of
from direct_messages.conf import dm_setting
from direct_messages.errors import Invalid, NotFound
from direct_messages.models import (
    DataExport,
    DirectMessage,
    DirectMessageAttachFiles,
    ExportStatus,
    Reaction,
    Room,
    RoomMember,
    UserSettings,
)
from direct_messages.rooms import pair_room_key
from direct_messages.schemas import INT64_MAX

PAGE_MAX = 200


@dataclass
class Page:
    """What a read returns; the transports render it (``schemas.*_page_out``).

    ``rows``: messages (history, search) or ``(member, last message or None)`` pairs
    (the inbox), loaded with what rendering reads."""

    rows: list[Any]
    has_more: bool = False
    next_cursor: str | None = None
    room: str = ""


def clamp_limit(limit: int, default: int) -> int:
    return max(1, min(PAGE_MAX, limit if limit is not None else default))


def messages_with_related(qs: QuerySet[DirectMessage]) -> QuerySet[DirectMessage]:
    """What ``message_out`` reads, in three queries whatever the page size."""
    return qs.select_related("sender", "reply_to__sender").prefetch_related(
        "attachments",
        Prefetch("reactions", queryset=Reaction.objects.select_related("user")),
    )


def room_member_check(*, user: Any, room: str) -> None:
    """NotFound unless ``user`` is in the room of key ``room``."""
    if not RoomMember.objects.filter(room__key=room, user=user).exists():
        raise NotFound("no such conversation")


def room_for(user: Any, other: Any) -> Room | None:
    return Room.objects.filter(key=pair_room_key(user.pk, other.pk)).first()


def members_with_receipts(qs: QuerySet[RoomMember]) -> QuerySet[RoomMember]:
    """``qs`` with each member's own ``UserSettings.read_receipts`` (None: no settings
    row), so that :func:`read_receipts_on` costs no query of its own."""
    mine = UserSettings.objects.filter(user_id=OuterRef("user_id")).values("read_receipts")
    return qs.annotate(user_read_receipts=Subquery(mine[:1]))


def read_receipts_on(member: RoomMember) -> bool:
    """Whether the other side of ``member``'s conversation may learn where ``member``
    has read (``seen``, ``room.joined``'s ``read``): the conversation's own setting,
    else the user's, else on. One query, unless ``member`` came through
    :func:`members_with_receipts` (or the send statement, which selects the same)."""
    if member.read_receipts is not None:
        return member.read_receipts
    if hasattr(member, "user_read_receipts"):
        mine = member.user_read_receipts
    else:
        settings = UserSettings.objects.filter(user_id=member.user_id)
        mine = settings.values_list("read_receipts", flat=True).first()
    return True if mine is None else bool(mine)


def read_position(member: RoomMember | None, viewer: Any) -> int | None:
    """Where ``member`` has read, as ``viewer`` may see it: None when it is the other
    side's and their read receipts are off; 0 in a room not created yet."""
    if member is None:
        return 0
    if member.user_id != viewer.pk and not read_receipts_on(member):
        return None
    return member.last_read_seq


def room_state(user: Any, other: Any) -> dict[str, Any]:
    """``room.joined``'s fields: the room, both read cursors (the other's only if their
    read receipts are on) and the last seq."""
    key = pair_room_key(user.pk, other.pk)
    members = list(
        members_with_receipts(RoomMember.objects.filter(room__key=key).select_related("room"))
    )
    last_seq = members[0].room.last_seq if members else 0
    by_user = {member.user_id: member for member in members}
    read = {handle_of(u): read_position(by_user.get(u.pk), user) for u in (user, other)}
    cleared = next((m.cleared_seq for m in members if m.user_id == user.pk), 0)
    return {
        "room": key,
        "room_id": members[0].room_id if members else None,
        "last_seq": last_seq,
        "read": read,
        "cleared_seq": cleared,
    }


def message_list(
    *, user: Any, room: str, before: int | None = None, after: int | None = None, limit: int = 50
) -> Page:
    """A page of history of ``room`` (its key), ascending by ``seq``: the newest, before
    or after a seq. Empty for a room ``user`` is not in (a pair yet to write)."""
    key = room
    limit = clamp_limit(limit, 50)
    member = RoomMember.objects.filter(room__key=key, user=user).first()
    if member is None:
        return Page([], room=key)
    qs = messages_with_related(
        DirectMessage.objects.filter(room_id=member.room_id, seq__gt=member.cleared_seq)
    )
    if after is not None:
        rows = list(qs.filter(seq__gt=after).order_by("seq")[: limit + 1])
        has_more = len(rows) > limit
        rows = rows[:limit]
    else:
        if before is not None:
            qs = qs.filter(seq__lt=before)
        rows = list(qs.order_by("-seq")[: limit + 1])
        has_more = len(rows) > limit
        rows = rows[:limit][::-1]
    return Page(rows, has_more=has_more, room=key)


def messages_after(
    *, room_id: int, after: int, limit: int = PAGE_MAX, upto: int | None = None
) -> list[DirectMessage]:
    """Messages with ``after < seq (<= upto)``, for replay and gap filling."""
    qs = DirectMessage.objects.filter(room_id=room_id, seq__gt=after)
    if upto is not None:
        qs = qs.filter(seq__lte=upto)
    return list(messages_with_related(qs).order_by("seq")[:limit])


def room_last_seq(room_id: int) -> int:
    """The newest seq of a room: one row by primary key, for checking that a quiet socket
    misses nothing. Every DM socket asks after every quiet spell, so it skips the ORM."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT last_seq FROM {connection.ops.quote_name(Room._meta.db_table)} WHERE id = %s",
            [room_id],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def last_message_for(member: RoomMember) -> DirectMessage | None:
    """The last message ``member`` can see (none once everything is cleared)."""
    if member.room.last_seq <= member.cleared_seq or member.room.last_message_id is None:
        return None
    return messages_with_related(
        DirectMessage.objects.filter(pk=member.room.last_message_id)
    ).first()


def _encode_cursor(member: RoomMember) -> str:
    raw = f"{member.last_activity_at.isoformat()}|{member.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, pk = raw.partition("|")
        at, member_id = dt.datetime.fromisoformat(when), int(pk)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise Invalid("cursor: not a cursor from this API") from exc
    if not 0 < member_id <= INT64_MAX:  # past a bigint the database would raise, not answer
        raise Invalid("cursor: not a cursor from this API")
    return at, member_id


# What puts a member in each inbox folder: exactly the partial indexes' conditions.
FOLDERS: dict[str, dict[str, bool]] = {
    "primary": {"is_request": False},
    "requests": {"is_request": True, "hidden": False},
    "hidden": {"is_request": True, "hidden": True},
}


def inbox_list(
    *, user: Any, folder: str = "primary", cursor: str | None = None, limit: int = 20
) -> Page:
    """The user's conversations in ``folder`` (``primary``, ``requests`` or ``hidden``:
    the requests that held a hidden word), most recent activity first, keyset-paginated."""
    limit = clamp_limit(limit, 20)
    qs = RoomMember.objects.filter(user=user, visible=True, **FOLDERS[folder])
    if cursor:
        when, pk = _decode_cursor(cursor)
        # The first condition is the index range that skips the earlier pages (as an OR
        # alone, PostgreSQL read the user's whole index range and filtered it); the OR
        # only breaks ties at the boundary.
        qs = qs.filter(last_activity_at__lte=when).filter(
            Q(last_activity_at__lt=when) | Q(pk__lt=pk)
        )
    members = list(
        qs.select_related("room", "other").order_by("-last_activity_at", "-pk")[: limit + 1]
    )
    has_more = len(members) > limit
    members = members[:limit]
    last_ids = [m.room.last_message_id for m in members if m.room.last_message_id]
    last_messages = {
        m.pk: m for m in messages_with_related(DirectMessage.objects.filter(pk__in=last_ids))
    }
    rows = [
        (m, last_messages.get(m.room.last_message_id) if m.room.last_seq > m.cleared_seq else None)  # type: ignore[arg-type]
        for m in members
    ]
    return Page(rows, next_cursor=_encode_cursor(members[-1]) if has_more else None)


def _search_filter(qs: QuerySet[DirectMessage], text: str) -> QuerySet[DirectMessage]:
    """Full-text search on PostgreSQL, a case-insensitive substring match elsewhere.

    On PostgreSQL the text is matched against ``search_vector``, a stored generated
    ``tsvector`` column with a GIN index (migration 0004) that the model does not know
    about: the check is then cheap per row and the planner can pick the index for rare
    words. Computing ``to_tsvector`` per row instead cost ~5 µs a row, ~0.5 s to scan a
    100,000-message conversation.
    """
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchVectorField

        column = f'"{DirectMessage._meta.db_table}"."search_vector"'
        return qs.annotate(search=RawSQL(column, [], output_field=SearchVectorField())).filter(
            search=SearchQuery(text, config="simple", search_type="websearch")
        )
    return qs.filter(message__icontains=text)


def _cursor_value(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        value = int(cursor)
    except ValueError as exc:
        raise Invalid("cursor: not a cursor from this API") from exc
    if not 0 < value <= INT64_MAX:  # past a bigint the database would raise, not answer
        raise Invalid("cursor: not a cursor from this API")
    return value


def message_search(
    *, user: Any, text: str, room: str | None = None, cursor: str | None = None, limit: int = 50
) -> Page:
    """``user``'s messages matching ``text``, newest first; not cleared, not unsent.

    Ids first, rows second: the matching query selects only ids (ordered through the
    ``(room, seq)`` index in one ``room``, by id across all of them), so the joins
    and prefetches of ``message_out`` run for one page, not for every match. In one
    conversation the cursor is a ``seq``, across conversations an id.
    """
    limit = clamp_limit(limit, 50)
    text = text.strip()
    if not text:
        raise Invalid("q: must not be empty")
    after = _cursor_value(cursor)
    order: Any
    if room is not None:
        member = RoomMember.objects.filter(room__key=room, user=user)
        found = member.values_list("room_id", "cleared_seq").first()
        if found is None:
            return Page([])
        room_id, cleared_seq = found
        qs = DirectMessage.objects.filter(room_id=room_id, seq__gt=cleared_seq)
        key, order = "seq", "-seq"
    elif connection.vendor == "postgresql":
        # A semi-join on the membership, and never a walk of the primary key backwards
        # through everyone's messages hoping to meet 51 of mine (the planner's choice
        # when a word looks common): with many users that reads the whole table. With
        # ``id + 0`` both plans left are bounded by what is mine: my rooms' messages,
        # or the GIN index's hits for rare words.
        mine = RoomMember.objects.filter(
            room_id=OuterRef("room_id"), user=user, cleared_seq__lt=OuterRef("seq")
        )
        qs = DirectMessage.objects.filter(Exists(mine))
        key, order = "pk", (F("pk") + 0).desc()
    else:
        # SQLite drives this join from my memberships. One filter() call: the member
        # join and its cleared_seq refer to the same row.
        qs = DirectMessage.objects.filter(
            room__members__user=user, seq__gt=F("room__members__cleared_seq")
        )
        key, order = "pk", "-pk"
    qs = qs.filter(unsent_at__isnull=True)
    if after is not None:
        qs = qs.filter(**{f"{key}__lt": after})
    hits = list(_search_filter(qs, text).order_by(order).values_list("pk", key)[: limit + 1])
    has_more = len(hits) > limit
    hits = hits[:limit]
    rows = messages_with_related(
        DirectMessage.objects.filter(pk__in=[pk for pk, _ in hits]).select_related("room")
    )
    by_pk = {m.pk: m for m in rows}
    return Page([by_pk[pk] for pk, _ in hits], next_cursor=str(hits[-1][1]) if has_more else None)


def attachment_for_viewer(*, user: Any, attachment_id: int) -> DirectMessageAttachFiles:
    """The attachment if ``user`` may see it: its uploader, or either participant of the
    conversation its message is in. Anything else is ``not_found``, so ids leak nothing."""
    attachment = (
        DirectMessageAttachFiles.objects.select_related("message__room")
        .filter(pk=attachment_id)
        .first()
    )
    if attachment is None:
        raise NotFound("no such attachment")
    message = attachment.message
    if message is not None and (message.unsent_at is not None or message.opened):
        # Unsent, or a view-once file opened: its files are gone for both.
        raise NotFound("no such attachment")
    if attachment.uploader_id == user.pk:
        return attachment
    if message is not None and user.pk in (message.room.user_lo_id, message.room.user_hi_id):
        return attachment
    raise NotFound("no such attachment")


def export_for(*, user: Any, export_id: Any, ready: bool = False) -> DataExport:
    """``user``'s own export, not expired (and ``ready``, if asked); else NotFound, so an
    id of someone else's leaks nothing."""
    export = DataExport.objects.filter(pk=export_id, user=user).first()
    if export is None or (export.expires_at is not None and export.expires_at < timezone.now()):
        raise NotFound("no such export")
    if ready and export.status != ExportStatus.READY:
        raise NotFound("this export is not ready")
    return export


def user_settings(user: Any) -> dict[str, Any]:
    """``user``'s settings, every one (defaults where they set none)."""
    row = UserSettings.objects.filter(user_id=user.pk).first() or UserSettings()
    return {
        "previews": row.previews,
        "read_receipts": row.read_receipts,
        "hidden_words": row.hidden_words,
    }


def conversation_settings(*, user: Any, other: Any) -> dict[str, Any]:
    """``user``'s own settings of their conversation with ``other``: a value, or None
    where it follows the user's settings. NotFound if they have no conversation."""
    mine = RoomMember.objects.filter(room__key=pair_room_key(user.pk, other.pk), user=user)
    found = mine.values_list("read_receipts").first()  # a row: (None,) follows the user's
    if found is None:
        raise NotFound("no conversation with this account yet")
    return {"read_receipts": found[0]}


def hidden_words_for(user_id: int, own: list[str] | None = None) -> list[str]:
    """The words that hide a request to ``user_id``: the host's and the user's own
    (``own``, when the caller has read them already)."""
    if own is None:
        query = UserSettings.objects.filter(user_id=user_id).values_list("hidden_words", flat=True)
        own = query.first() or []
    return [*dm_setting("HIDDEN_WORDS"), *own]
