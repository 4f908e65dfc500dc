"""Every write of the app. Both transports call these; events go out on commit.

Concurrency rules, in one place:

* A room's row is locked (``select_for_update``) by every write that changes its
  messages or its members' cursors, so ``seq`` is allocated 1, 2, 3, ... with no gap
  and no repeat. On SQLite the IMMEDIATE transaction mode gives the same
  serialisation (``select_for_update`` is a no-op there).
* Uniqueness is enforced by the database, never by check-then-insert alone: the
  room's ``key`` and ``(sender, client_id)`` are unique constraints, and losing a race
  for either is caught and answered with the winner's row.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from direct_messages import ratelimit, selectors, send_sql
from direct_messages.adapters import get_adapter, handle_of
from direct_messages.conf import dm_setting
from direct_messages.errors import Forbidden, Invalid, NotFound, RateLimited, Unauthenticated
from direct_messages.models import (
    Block,
    DirectMessage,
    DirectMessageAttachFiles,
    Room,
    RoomMember,
    SendWindow,
    UserActivity,
)
from direct_messages.realtime import Event, broadcast_on_commit
from direct_messages.rooms import inbox_group, pair_room_key
from direct_messages.schemas import check_message_text, conversation_out, isotime, message_out
from direct_messages.signals import message_sent

# --- Resolving the other side -----------------------------------------------------------


def user_by_account(account: str) -> Any:
    """The active user whose handle (the host adapter's) is ``account``, or NotFound."""
    account = account.strip()
    # No handle holds a NUL (and PostgreSQL refuses one in a query).
    user = get_adapter().get_user_by_handle(account) if "\x00" not in account else None
    if user is None:
        raise NotFound(f"no account {account[:40]!r}")
    return user


def is_blocked(user_a_id: int, user_b_id: int) -> bool:
    """True when either of the two has blocked the other."""
    return Block.objects.filter(
        Q(blocker_id=user_a_id, blocked_id=user_b_id)
        | Q(blocker_id=user_b_id, blocked_id=user_a_id)
    ).exists()


def peer_resolve(user: Any, account: str, *, allow_blocked: bool = False) -> Any:
    """The other user of ``user``'s conversation with ``account``, or a typed refusal."""
    return peer_check(user, user_by_account(account), allow_blocked=allow_blocked)


def peer_check(user: Any, other: Any, *, allow_blocked: bool = False) -> Any:
    """``other``, unless ``user`` may not talk to them (themselves, or blocked)."""
    if other.pk == user.pk:
        raise Forbidden("you cannot message yourself")
    if not allow_blocked and is_blocked(user.pk, other.pk):
        raise Forbidden("this conversation is blocked")
    return other


def sender_check_active(user: Any) -> None:
    """A socket's user was read at its handshake: an account deactivated since then
    sends nothing, even before the revocation reaches the socket and closes it."""
    fresh = get_user_model()._default_manager.filter(pk=user.pk).first()
    if fresh is None or not get_adapter().is_active(fresh):
        raise Unauthenticated("this account is no longer active")


def room_get_or_create(user: Any, other: Any) -> Room:
    """The pair's room, created race-safely on first use.

    Concurrent first messages (both sides, several tabs) all try the insert; the
    unique ``key`` lets exactly one win and the others read the winner.
    """
    key = pair_room_key(user.pk, other.pk)
    room = Room.objects.filter(key=key).first()
    if room is not None:
        return room
    low, high = sorted((user, other), key=lambda u: u.pk)
    try:
        with transaction.atomic():
            room = Room.objects.create(key=key, user_lo=low, user_hi=high)
            RoomMember.objects.bulk_create(
                [
                    # Invisible until the first message commits: a refused first send
                    # must not leave an empty conversation in either inbox.
                    RoomMember(room=room, user=user, other=other, visible=False),
                    # A first message from someone you never wrote to is a request.
                    RoomMember(room=room, user=other, other=user, is_request=True, visible=False),
                ]
            )
            # Both send rate windows, so that a first send does not find one missing.
            SendWindow.objects.bulk_create(
                [SendWindow(user=user), SendWindow(user=other)], ignore_conflicts=True
            )
            return room
    except IntegrityError:
        return Room.objects.get(key=key)


# --- Sending ---------------------------------------------------------------------------


@dataclass
class SendResult:
    message: DirectMessage
    created: bool
    payload: dict[str, Any]  # the Message object, as sent on the wire

    def ack(self) -> dict[str, Any]:
        fields = ("client_id", "id", "seq", "created_at")
        return {"type": "message.ack", **{name: self.payload[name] for name in fields}}


def _existing_send(sender: Any, other: Any, client_id: Any) -> SendResult | None:
    message = (
        selectors.messages_with_related(DirectMessage.objects.filter(sender=sender))
        .filter(client_id=client_id)
        .select_related("room")
        .first()
    )
    if message is None:
        return None
    if message.room.key != pair_room_key(sender.pk, other.pk):
        raise Invalid("client_id: already used for another conversation")
    return SendResult(message, False, message_out(message, message.room.key))


def message_send(
    *,
    sender: Any,
    account: str = "",
    recipient: Any = None,
    client_id: Any,
    text: str = "",
    attachment_ids: list[int] | None = None,
    reply_to: int | None = None,
) -> SendResult:
    """Store one message and broadcast it after commit; idempotent on ``client_id``.

    The recipient is ``recipient`` (a user the caller already resolved, as a consumer
    has) or the user of ``account``. A retry of a stored ``(sender, client_id)``
    returns the original message, stores nothing and broadcasts nothing; the unique
    constraint finds retries, so a first send pays no extra query for them.
    """
    sender_check_active(sender)
    # Blocks are checked inside the send transaction, in the statement that locks the room.
    if recipient is not None:
        other = peer_check(sender, recipient, allow_blocked=True)
    else:
        other = peer_resolve(sender, account, allow_blocked=True)
    ids = list(dict.fromkeys(attachment_ids or []))
    check_message_text(text)
    if len(ids) > dm_setting("ATTACHMENTS_PER_MESSAGE"):
        raise Invalid(
            f"attachment_ids: at most {dm_setting('ATTACHMENTS_PER_MESSAGE')} per message"
        )
    if not text.strip() and not ids:
        raise Invalid("message: an empty message needs attachments")
    key = pair_room_key(sender.pk, other.pk)
    args = (key, sender, other, client_id, text, ids, reply_to)
    try:
        for _ in range(2):  # a first send makes the room; a room from before 0005, the window
            try:
                return _message_insert(*args)
            except Room.DoesNotExist:
                peer_check(sender, other)  # no room for a blocked pair
                room_get_or_create(sender, other)
            except SendWindow.DoesNotExist:
                SendWindow.objects.bulk_create(
                    [SendWindow(user_id=sender.pk)], ignore_conflicts=True
                )
        return _message_insert(*args)
    except (RateLimited, IntegrityError):
        # A retry (the rate limit never counts one), or a concurrent retry that won the
        # unique (sender, client_id).
        existing = _existing_send(sender, other, client_id)
        if existing is None:
            raise
        return existing


def _message_insert(
    key: str,
    sender: Any,
    other: Any,
    client_id: Any,
    text: str,
    attachment_ids: list[int],
    reply_to_id: int | None,
) -> SendResult:
    """Lock the room, take the next seq, insert, claim, update (:mod:`.send_sql`)."""
    reply_to = None
    if reply_to_id is not None:
        reply_to = (
            DirectMessage.objects.select_related("sender")
            .filter(pk=reply_to_id, room__key=key)
            .first()
        )
        if reply_to is None:
            raise Invalid("reply_to: not a message of this conversation")
    now = timezone.now()
    # On PostgreSQL a send without attachments is one statement: atomic by itself.
    needs_atomic = attachment_ids or send_sql.needs_transaction() or connection.in_atomic_block
    with transaction.atomic() if needs_atomic else contextlib.nullcontext():
        with connection.cursor() as cursor:
            rows, message_id = send_sql.message_store(
                cursor,
                key=key,
                sender_id=sender.pk,
                other_id=other.pk,
                client_id=client_id,
                text=text,
                now=now,
                reply_to_id=reply_to_id,
            )
        room = _room_loaded(rows[0][0], key, rows[0][1] + 1, message_id, now, sender, other)
        columns = {  # every column, in the model's order
            "id": message_id,
            "room_id": room.pk,
            "sender_id": sender.pk,
            "seq": room.last_seq,
            "message": text,
            "client_id": client_id,
            "created_at": now,
            "reply_to_id": reply_to_id,
            "edited_at": None,
            "unsent_at": None,
        }
        message = DirectMessage.from_db(connection.alias, list(columns), list(columns.values()))
        message.room, message.sender, message.reply_to = room, sender, reply_to
        attachments = _attachments_claim(message, sender, attachment_ids)
    members = {
        user_id: RoomMember(
            id=pk,
            room=room,
            user_id=user_id,
            unread_count=unread,
            muted=muted,
            is_request=is_request,
            last_activity_at=now,
        )
        for _, _, pk, user_id, unread, muted, is_request in rows
    }
    mine, theirs = members[sender.pk], members[other.pk]
    had_unread = mine.unread_count > 0
    mine.unread_count, mine.is_request, mine.other = 0, False, other
    theirs.unread_count, theirs.other = theirs.unread_count + 1, sender
    message._prefetched_objects_cache = {  # type: ignore[attr-defined]
        "attachments": attachments,
        "reactions": [],
    }
    payload = message_out(message, room.key)
    events: list[Event] = [(room.key, {"type": "message.new", "message": payload})]
    if had_unread:
        events.append((room.key, _seen_event(sender, message.seq, now)))
    events.append(_inbox_event(mine, message, payload))
    if not theirs.muted:
        events.append(_inbox_event(theirs, message, payload))
    broadcast_on_commit(events)
    transaction.on_commit(lambda: message_sent.send(sender=DirectMessage, message=message))
    return SendResult(message, True, payload)


def _room_loaded(
    room_id: int, key: str, seq: int, message_id: int, now: Any, sender: Any, other: Any
) -> Room:
    """The room as the send statement left it, as a loaded instance (``message_sent``
    receivers get it with the message); its ``created_at`` is read if asked for."""
    low, high = sorted((sender.pk, other.pk))
    known = ["id", "key", "user_lo_id", "user_hi_id", "last_seq", "last_message_id"]
    return Room.from_db(
        connection.alias,
        [*known, "last_activity_at"],
        [room_id, key, low, high, seq, message_id, now],
    )


def _attachments_claim(
    message: DirectMessage, sender: Any, attachment_ids: list[int]
) -> list[DirectMessageAttachFiles]:
    """Claim the sender's unclaimed uploads for ``message``: all of them or none."""
    if not attachment_ids:
        return []
    rows = list(
        DirectMessageAttachFiles.objects.select_for_update()
        .filter(pk__in=attachment_ids, uploader=sender, message__isnull=True)
        .order_by("pk")
    )
    if len(rows) != len(attachment_ids):
        raise Invalid("attachment_ids: unknown, not yours, or already sent")
    DirectMessageAttachFiles.objects.filter(pk__in=[r.pk for r in rows]).update(message=message)
    by_id = {r.pk: r for r in rows}
    return [by_id[i] for i in attachment_ids]


def _inbox_event(
    member: RoomMember, last_message: DirectMessage | None, payload: dict[str, Any] | None = None
) -> Event:
    conversation = conversation_out(member, last_message, payload)
    return (inbox_group(member.user_id), {"type": "inbox.update", "conversation": conversation})


def _seen_event(user: Any, seq: int, at: dt.datetime) -> dict[str, Any]:
    return {"type": "seen", "account": handle_of(user), "seq": seq, "at": isotime(at)}


# --- Reading ---------------------------------------------------------------------------


def room_mark_read(*, user: Any, account: str, seq: int) -> int:
    """Move ``user``'s read cursor to ``seq`` (never back); returns the cursor.

    The other side's sockets get ``seen``; ``user``'s inbox gets the new unread count.
    """
    other = peer_resolve(user, account, allow_blocked=True)
    room = Room.objects.filter(key=pair_room_key(user.pk, other.pk)).first()
    if room is None:
        return 0
    with transaction.atomic():
        room = Room.objects.select_for_update().get(pk=room.pk)
        member = RoomMember.objects.select_related("other").get(room=room, user=user)
        seq = min(seq, room.last_seq)
        if seq <= member.last_read_seq:
            return member.last_read_seq
        member.last_read_seq = seq
        member.unread_count = (
            DirectMessage.objects.filter(room=room, seq__gt=seq, unsent_at__isnull=True)
            .exclude(sender=user)
            .count()
        )
        member.save(update_fields=["last_read_seq", "unread_count"])
        member.room = room
        now = timezone.now()
        last = selectors.last_message_for(member)
        broadcast_on_commit([(room.key, _seen_event(user, seq, now)), _inbox_event(member, last)])
        return seq


# --- Changing messages: edit, unsend, reactions ------------------------------------------


def _message_for_update(user: Any, room_key: str, message_id: int) -> DirectMessage:
    """Lock ``message_id`` and its room, if the message is in ``room_key`` (the socket's
    own conversation) and ``user`` is a participant; else NotFound. A blocked pair may
    read its history but change nothing in it, as it may send nothing.

    Must run inside a transaction. The room is locked first, as in every write.
    """
    found = (
        DirectMessage.objects.filter(pk=message_id, room__key=room_key, room__members__user=user)
        .values_list("room_id", flat=True)
        .first()
    )
    if found is None:
        raise NotFound("no such message", ref=message_id)
    room = Room.objects.select_for_update().get(pk=found)
    if is_blocked(room.user_lo_id, room.user_hi_id):
        raise Forbidden("this conversation is blocked", ref=message_id)
    return DirectMessage.objects.select_related("room").get(pk=message_id)


def _message_updated(message: DirectMessage) -> list[Event]:
    fresh = selectors.messages_with_related(DirectMessage.objects.filter(pk=message.pk)).get()
    payload = message_out(fresh, message.room.key)
    return [(message.room.key, {"type": "message.updated", "message": payload})]


def _inbox_events_for_room(room: Room) -> list[Event]:
    members = RoomMember.objects.filter(room=room).select_related("other")
    events = []
    for member in members:
        member.room = room
        events.append(_inbox_event(member, selectors.last_message_for(member)))
    return events


@transaction.atomic
def message_edit(*, user: Any, room_key: str, message_id: int, text: str) -> dict[str, Any]:
    """Change the text of ``user``'s own message within the edit window."""
    check_message_text(text)
    if not text.strip():
        raise Invalid("message: cannot be empty; unsend the message instead", ref=message_id)
    message = _message_for_update(user, room_key, message_id)
    if message.sender_id != user.pk:
        raise Forbidden("you can only edit your own messages", ref=message_id)
    if message.unsent_at is not None:
        raise Forbidden("an unsent message cannot be edited", ref=message_id)
    if not message.message:
        raise Forbidden("only text messages can be edited", ref=message_id)
    window = dm_setting("EDIT_WINDOW_SECONDS")
    if timezone.now() - message.created_at > dt.timedelta(seconds=window):
        raise Forbidden(f"messages can be edited for {window // 60} minutes", ref=message_id)
    message.message, message.edited_at = text, timezone.now()
    message.save(update_fields=["message", "edited_at"])
    events = _message_updated(message)
    if message.room.last_message_id == message.pk:
        events += _inbox_events_for_room(message.room)
    broadcast_on_commit(events)
    return events[0][1]["message"]


@transaction.atomic
def message_unsend(*, user: Any, room_key: str, message_id: int) -> dict[str, Any]:
    """Remove ``user``'s own message for both sides, keeping a tombstone.

    Text, reactions and attachment rows go at once; the files are deleted from storage
    after commit (a rolled-back unsend must not lose them).
    """
    from direct_messages.attachments import attachment_files_delete

    message = _message_for_update(user, room_key, message_id)
    if message.sender_id != user.pk:
        raise Forbidden("you can only unsend your own messages", ref=message_id)
    room = Room.objects.get(pk=message.room_id)
    if message.unsent_at is None:
        attachments = list(message.attachments.all())
        message.attachments.all().delete()
        message.reactions.all().delete()
        message.message, message.unsent_at = "", timezone.now()
        message.save(update_fields=["message", "unsent_at"])
        transaction.on_commit(lambda: attachment_files_delete(attachments))
        # The other side's unread count no longer includes it...
        for member in RoomMember.objects.filter(room=room).exclude(user=user):
            if message.seq > member.last_read_seq and member.unread_count > 0:
                member.unread_count -= 1
                member.save(update_fields=["unread_count"])
        # ...and the inbox shows the latest message still there.
        if room.last_message_id == message.pk:
            previous = (
                DirectMessage.objects.filter(room=room, unsent_at__isnull=True)
                .order_by("-seq")
                .first()
            )
            if previous is not None:
                room.last_message = previous
                room.save(update_fields=["last_message"])
    message.room = room
    events = _message_updated(message) + _inbox_events_for_room(room)
    broadcast_on_commit(events)
    return events[0][1]["message"]


def _check_emoji(emoji_text: str, message_id: int) -> None:
    import emoji

    if not emoji.is_emoji(emoji_text):
        raise Invalid("emoji: must be exactly one emoji", ref=message_id)


@transaction.atomic
def reaction_set(*, user: Any, room_key: str, message_id: int, emoji_text: str) -> dict[str, Any]:
    """Set ``user``'s one reaction on a message of their conversation."""
    from direct_messages.models import Reaction

    _check_emoji(emoji_text, message_id)
    message = _message_for_update(user, room_key, message_id)
    if message.unsent_at is not None:
        raise Invalid("cannot react to an unsent message", ref=message_id)
    Reaction.objects.update_or_create(
        message=message, user=user, defaults={"emoji": emoji_text, "created_at": timezone.now()}
    )
    events = _message_updated(message)
    broadcast_on_commit(events)
    return events[0][1]["message"]


@transaction.atomic
def reaction_clear(*, user: Any, room_key: str, message_id: int) -> dict[str, Any]:
    from direct_messages.models import Reaction

    message = _message_for_update(user, room_key, message_id)
    Reaction.objects.filter(message=message, user=user).delete()
    events = _message_updated(message)
    broadcast_on_commit(events)
    return events[0][1]["message"]


# --- Conversation settings: accept, mute, clear ---------------------------------------


def _member_for_update(user: Any, account: str) -> RoomMember:
    """Lock ``user``'s side of the conversation with ``account``; NotFound if none."""
    other = peer_resolve(user, account, allow_blocked=True)
    room = selectors.room_for(user, other)
    if room is None:
        raise NotFound("no conversation with this account yet")
    room = Room.objects.select_for_update().get(pk=room.pk)
    member = RoomMember.objects.select_related("other").get(room=room, user=user)
    member.room = room
    return member


@transaction.atomic
def conversation_accept(*, user: Any, account: str) -> None:
    """A message request becomes a normal conversation."""
    member = _member_for_update(user, account)
    if member.is_request:
        member.is_request = False
        member.save(update_fields=["is_request"])
        broadcast_on_commit([_inbox_event(member, selectors.last_message_for(member))])


@transaction.atomic
def conversation_mute(*, user: Any, account: str, muted: bool) -> None:
    member = _member_for_update(user, account)
    if member.muted != muted:
        member.muted = muted
        member.save(update_fields=["muted"])
        broadcast_on_commit([_inbox_event(member, selectors.last_message_for(member))])


@transaction.atomic
def conversation_clear(*, user: Any, account: str) -> None:
    """Delete the conversation for ``user`` only: everything up to now disappears from
    their history, inbox and search; the other side keeps it."""
    member = _member_for_update(user, account)
    member.cleared_seq = member.last_read_seq = member.room.last_seq
    member.unread_count, member.visible = 0, False
    member.save(update_fields=["cleared_seq", "last_read_seq", "unread_count", "visible"])


# --- Blocking --------------------------------------------------------------------------


def user_block(*, user: Any, account: str) -> None:
    """Block ``account``: their sends are refused and open sockets of the pair close."""
    other = user_by_account(account)
    if other.pk == user.pk:
        raise Forbidden("you cannot block yourself")
    with transaction.atomic():
        _, created = Block.objects.get_or_create(blocker=user, blocked=other)
        if created:
            broadcast_on_commit([(pair_room_key(user.pk, other.pk), {"type": "room.blocked"})])


def user_unblock(*, user: Any, account: str) -> None:
    other = user_by_account(account)
    Block.objects.filter(blocker=user, blocked=other).delete()


# --- Presence ------------------------------------------------------------------------------

PRESENCE_FANOUT_MAX = 200  # most recent conversations told about a presence change


def _presence_frame(user: Any, online: bool, last_active_at: dt.datetime) -> dict[str, Any]:
    return {
        "type": "presence",
        "account": handle_of(user),
        "online": online,
        "last_active_at": isotime(last_active_at),
    }


def presence_changed(*, user: Any, online: bool) -> None:
    """Record ``user``'s activity and tell their conversation partners who are connected.

    Partners who blocked ``user`` or whom ``user`` blocked are not told.
    """
    now = timezone.now()
    # One statement (an upsert), not a read then a write: no transaction to upgrade, which
    # SQLite refuses at once ("database is locked") when another connection writes.
    UserActivity.objects.bulk_create(
        [UserActivity(user_id=user.pk, last_active_at=now)],
        update_conflicts=True,
        unique_fields=["user"],
        update_fields=["last_active_at"],
    )
    blocks = Block.objects.filter(Q(blocker=user) | Q(blocked=user))
    hidden = {uid for pair in blocks.values_list("blocker_id", "blocked_id") for uid in pair}
    hidden.discard(user.pk)
    partners = (
        # Not the empty rooms refused first messages leave: no conversation there.
        RoomMember.objects.filter(user=user, room__last_seq__gt=0)
        .exclude(other_id__in=hidden)
        .order_by("-last_activity_at")
        .values_list("room__key", "other_id")[:PRESENCE_FANOUT_MAX]
    )
    frame = _presence_frame(user, online, now)
    events: list[Event] = []
    for room_key, other_id in partners:
        events += [(room_key, frame), (inbox_group(other_id), frame)]
    broadcast_on_commit(events)


def presence_get(*, viewer: Any, account: str) -> dict[str, Any]:
    """``{"online", "last_active_at"}`` of someone ``viewer`` shares a conversation with."""
    from direct_messages import presence

    other = peer_resolve(viewer, account, allow_blocked=True)
    room = selectors.room_for(viewer, other)
    if room is None or room.last_seq == 0:  # a refused first message leaves an empty room
        raise NotFound(f"no account {account[:40]!r}")
    if is_blocked(viewer.pk, other.pk):
        return {"online": False, "last_active_at": None}
    activity = UserActivity.objects.filter(user_id=other.pk).first()
    return {
        "online": presence.store().online(other.pk),
        "last_active_at": isotime(activity.last_active_at if activity else None),
    }


# --- Typing ----------------------------------------------------------------------------


def typing_event(*, room_key: str, user: Any, active: bool) -> Event | None:
    """The ``typing`` event to relay to the room, or None while it is throttled.

    The throttle is per user and room across all their sockets and, with Redis, across
    processes. Typing is never stored.
    """
    if active:
        seconds = dm_setting("TYPING_THROTTLE_SECONDS")
        if not ratelimit.typing_claim(room_key, user.pk, seconds):
            return None
    else:
        ratelimit.typing_release(room_key, user.pk)
    return (room_key, {"type": "typing", "account": handle_of(user), "active": active})
