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

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from direct_messages import ratelimit, selectors
from direct_messages.conf import dm_setting
from direct_messages.errors import Forbidden, Invalid, NotFound
from direct_messages.models import Block, DirectMessage, DirectMessageAttachFiles, Room, RoomMember
from direct_messages.realtime import Event, broadcast_on_commit
from direct_messages.rooms import inbox_group, pair_room_key
from direct_messages.schemas import check_message_text, conversation_out, isotime, message_out
from direct_messages.signals import message_sent
from users.accounts import normalize_account

# --- Resolving the other side -----------------------------------------------------------


def user_by_account(account: str) -> Any:
    try:
        return get_user_model().objects.get(account=normalize_account(account), is_active=True)
    except get_user_model().DoesNotExist as exc:
        raise NotFound(f"no account {normalize_account(account)!r}") from exc


def is_blocked(user_a_id: int, user_b_id: int) -> bool:
    """True when either of the two has blocked the other."""
    return Block.objects.filter(
        Q(blocker_id=user_a_id, blocked_id=user_b_id)
        | Q(blocker_id=user_b_id, blocked_id=user_a_id)
    ).exists()


def peer_resolve(user: Any, account: str, *, allow_blocked: bool = False) -> Any:
    """The other user of ``user``'s conversation with ``account``, or a typed refusal."""
    other = user_by_account(account)
    if other.pk == user.pk:
        raise Forbidden("you cannot message yourself")
    if not allow_blocked and is_blocked(user.pk, other.pk):
        raise Forbidden("this conversation is blocked")
    return other


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
                    RoomMember(room=room, user=user, other=other),
                    # A first message from someone you never wrote to is a request.
                    RoomMember(room=room, user=other, other=user, is_request=True),
                ]
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
        return {
            "type": "message.ack",
            "client_id": str(self.message.client_id),
            "id": self.message.pk,
            "seq": self.message.seq,
            "created_at": isotime(self.message.created_at),
        }


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
    account: str,
    client_id: Any,
    text: str = "",
    attachment_ids: list[int] | None = None,
    reply_to: int | None = None,
) -> SendResult:
    """Store one message and broadcast it after commit; idempotent on ``client_id``.

    A retry of a stored ``(sender, client_id)`` returns the original message, stores
    nothing and broadcasts nothing.
    """
    other = peer_resolve(sender, account)
    existing = _existing_send(sender, other, client_id)
    if existing is not None:
        return existing
    ids = list(dict.fromkeys(attachment_ids or []))
    check_message_text(text)
    if len(ids) > dm_setting("ATTACHMENTS_PER_MESSAGE"):
        raise Invalid(
            f"attachment_ids: at most {dm_setting('ATTACHMENTS_PER_MESSAGE')} per message"
        )
    if not text.strip() and not ids:
        raise Invalid("message: an empty message needs attachments")
    ratelimit.send_rate_check(sender.pk)
    room = room_get_or_create(sender, other)
    try:
        result = _message_insert(room, sender, other, client_id, text, ids, reply_to)
    except IntegrityError:
        # A concurrent retry with the same client_id committed first.
        existing = _existing_send(sender, other, client_id)
        if existing is None:
            raise
        return existing
    ratelimit.send_rate_record(sender.pk)
    return result


@transaction.atomic
def _message_insert(
    room: Room,
    sender: Any,
    other: Any,
    client_id: Any,
    text: str,
    attachment_ids: list[int],
    reply_to_id: int | None,
) -> SendResult:
    room = Room.objects.select_for_update().get(pk=room.pk)
    reply_to = None
    if reply_to_id is not None:
        reply_to = (
            DirectMessage.objects.select_related("sender").filter(pk=reply_to_id, room=room).first()
        )
        if reply_to is None:
            raise Invalid("reply_to: not a message of this conversation")
    now = timezone.now()
    message = DirectMessage.objects.create(
        room=room,
        sender=sender,
        seq=room.last_seq + 1,
        message=text,
        client_id=client_id,
        created_at=now,
        reply_to=reply_to,
    )
    attachments = _attachments_claim(message, sender, attachment_ids)
    room.last_seq, room.last_message, room.last_activity_at = message.seq, message, now
    room.save(update_fields=["last_seq", "last_message", "last_activity_at"])
    members = {m.user_id: m for m in RoomMember.objects.filter(room=room)}
    mine, theirs = members[sender.pk], members[other.pk]
    had_unread = mine.unread_count > 0
    mine.last_read_seq, mine.unread_count, mine.is_request = message.seq, 0, False
    theirs.unread_count += 1
    for member in (mine, theirs):
        member.last_activity_at, member.visible = now, True
        member.room = room
        member.save(
            update_fields=[
                "last_read_seq",
                "unread_count",
                "is_request",
                "last_activity_at",
                "visible",
            ]
        )
    message.sender = sender
    message._prefetched_objects_cache = {  # type: ignore[attr-defined]
        "attachments": attachments,
        "reactions": [],
    }
    payload = message_out(message, room.key)
    events: list[Event] = [(room.key, {"type": "message.new", "message": payload})]
    if had_unread:
        events.append((room.key, _seen_event(sender, message.seq, now)))
    mine.other, theirs.other = other, sender
    events.append(_inbox_event(mine, message))
    if not theirs.muted:
        events.append(_inbox_event(theirs, message))
    broadcast_on_commit(events)
    transaction.on_commit(lambda: message_sent.send(sender=DirectMessage, message=message))
    return SendResult(message, True, payload)


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


def _inbox_event(member: RoomMember, last_message: DirectMessage | None) -> Event:
    return (
        inbox_group(member.user_id),
        {"type": "inbox.update", "conversation": conversation_out(member, last_message)},
    )


def _seen_event(user: Any, seq: int, at: dt.datetime) -> dict[str, Any]:
    return {"type": "seen", "account": user.account, "seq": seq, "at": isotime(at)}


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
