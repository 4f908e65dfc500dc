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
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from direct_messages import attachments, ratelimit, selectors, send_pg
from direct_messages.adapters import get_adapter, handle_of
from direct_messages.conf import dm_setting
from direct_messages.errors import Forbidden, Invalid, NotFound, RateLimited, Unauthenticated
from direct_messages.hidden_words import hidden_words_clean, text_matches
from direct_messages.models import (
    AttachmentKind,
    Block,
    DirectMessage,
    DirectMessageAttachFiles,
    Reaction,
    Room,
    RoomMember,
    UserActivity,
    UserSettings,
)
from direct_messages.realtime import Event, broadcast_on_commit, run_service
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


def blocks_between(user_a_id: int, user_b_id: int) -> QuerySet[Block]:
    """The blocks of either of the two by the other."""
    return Block.objects.filter(
        Q(blocker_id=user_a_id, blocked_id=user_b_id)
        | Q(blocker_id=user_b_id, blocked_id=user_a_id)
    )


def is_blocked(user_a_id: int, user_b_id: int) -> bool:
    """True when either of the two has blocked the other."""
    return blocks_between(user_a_id, user_b_id).exists()


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
    users = get_user_model()._default_manager
    try:
        fresh = users.get(pk=user.pk)
    except users.model.DoesNotExist:
        fresh = None
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


def message_send(
    *,
    sender: Any,
    account: str = "",
    recipient: Any = None,
    client_id: Any,
    text: str = "",
    attachment_ids: list[int] | None = None,
    files: Sequence[UploadedFile] = (),
    reply_to: int | None = None,
    view_once: int | None = None,
) -> SendResult:
    """Store one message and broadcast it after commit; idempotent on ``client_id``.

    The recipient is ``recipient`` (a user the caller already resolved, as a consumer
    has) or the user of ``account``. The message carries ``attachment_ids`` (the
    sender's earlier uploads) or ``files``, uploaded here and sent with it: all of it,
    or nothing. A retry of a stored ``(sender, client_id)`` returns the original
    message, stores nothing and broadcasts nothing; the unique constraint finds
    retries, so a first send pays no extra query for them.
    """
    sender_check_active(sender)
    other = recipient if recipient is not None else user_by_account(account)
    # Blocks are checked in the send's transaction, under the room's lock; files are
    # refused before they are uploaded, too.
    peer_check(sender, other, allow_blocked=not files)
    ids = list(dict.fromkeys(attachment_ids or []))
    check_message_text(text)
    limit = dm_setting("ATTACHMENTS_PER_MESSAGE")
    if len(ids) + len(files) > limit:
        raise Invalid(f"{'files' if files else 'attachment_ids'}: at most {limit} per message")
    if not text.strip() and not ids and not files:
        raise Invalid("message: an empty message needs attachments")
    if view_once is not None and (view_once not in (1, 2) or len(ids) + len(files) != 1):
        raise Invalid("view_once: 1 or 2, with one photo or video")
    message = DirectMessage(
        sender=sender,
        message=text,
        client_id=client_id,
        created_at=timezone.now(),
        reply_to_id=reply_to,
        view_once=view_once,
    )
    try:
        if files:
            return _message_send_with_files(message, other, files)
        return _message_send(message, other, ids)
    except (RateLimited, IntegrityError):
        # A retry (the rate limit never counts one), or a concurrent retry that won the
        # unique (sender, client_id).
        existing = _existing_send(sender, other, client_id)
        if existing is None:
            raise
        return existing


def _message_send_with_files(
    message: DirectMessage, other: Any, files: Sequence[UploadedFile]
) -> SendResult:
    """The files are checked, cleaned and written first, outside any transaction
    (Pillow and an S3 upload can take seconds, and a transaction open that long would
    hold SQLite's write lock); then their rows and the message are inserted in one
    transaction. Any failure deletes the files written; so does a retry of a stored
    ``client_id``, which gets the original message.

    The files count against the sender's upload rate (not the unclaimed quota: they
    are claimed at once), before any work and again, exactly, once their rows are in.
    """
    sender: Any = message.sender  # a send's, never None
    attachments.upload_allowance_check(sender, files=len(files))
    stored: list[attachments.StoredUpload] = []
    try:
        for uploaded_file in files:
            stored.append(attachments.upload_store(uploaded_file))
        with transaction.atomic():
            # Before the room's lock: a plain send never takes this one, so no two
            # transactions can wait on each other.
            attachments.uploader_lock(sender.pk)
            rows = [upload.row_create(sender) for upload in stored]
            attachments.upload_allowance_check(sender, files=0)
            result = _message_send(message, other, [row.pk for row in rows])
    except BaseException:
        for upload in stored:
            upload.discard()
        raise
    attachments.purge_schedule.poke()
    return result


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


def _message_send(message: DirectMessage, other: Any, attachment_ids: list[int]) -> SendResult:
    """Store ``message`` in the pair's room, claim its attachments, broadcast on commit."""
    sender: Any = message.sender  # a send's, never None
    key = pair_room_key(sender.pk, other.pk)
    if message.reply_to_id is not None:
        message.reply_to = (
            DirectMessage.objects.select_related("sender")
            .filter(pk=message.reply_to_id, room__key=key)
            .first()
        )
        if message.reply_to is None:
            raise Invalid("reply_to: not a message of this conversation")
    statement = connection.vendor == "postgresql" and dm_setting("SEND_STATEMENT")
    # On PostgreSQL a send without attachments is one statement: atomic by itself.
    atomic = attachment_ids or not statement or connection.in_atomic_block
    with transaction.atomic() if atomic else contextlib.nullcontext():
        store = send_pg.message_store if statement else _message_store
        try:
            room, members = store(key, message, other.pk)
        except Room.DoesNotExist:  # the pair's first message: the room commits with it
            with transaction.atomic():
                peer_check(sender, other)  # no room for a blocked pair
                room_get_or_create(sender, other)
                room, members = store(key, message, other.pk)
        _room_advance(room, message)
        hide = _request_hides(members, message)
        had_unread = _members_advance(members, message, hide=hide)
        if not statement:  # which wrote them already
            room.save(update_fields=["last_seq", "last_message", "last_activity_at"])
            for member in members:
                member.save(update_fields=MEMBER_SEND_FIELDS)
        elif hide:
            # After the statement (outside a transaction, if the send has none): a
            # reader in between sees the request unhidden, but no event or push of the
            # message has gone out yet, and they go out knowing it is hidden.
            RoomMember.objects.filter(user_id=other.pk, room_id=room.pk, is_request=True).update(
                hidden=True
            )
        claimed = _attachments_claim(message, attachment_ids)
        if message.view_once is not None and claimed[0].kind == AttachmentKind.AUDIO:
            raise Invalid("view_once: 1 or 2, with one photo or video")
    mine, theirs = sorted(members, key=lambda m: m.user_id != sender.pk)
    mine.room, mine.other, theirs.room, theirs.other = room, other, room, sender
    payload = message_out(message, room.key, attachments=claimed, reactions=[])
    events: list[Event] = [(room.key, {"type": "message.new", "message": payload})]
    if had_unread and selectors.read_receipts_on(mine):  # a reply reads what it answers
        events.append((room.key, _seen_event(sender, message.seq, message.created_at)))
    events.append(_inbox_event(mine, message, payload))
    if not theirs.muted and not theirs.hidden:
        events.append(_inbox_event(theirs, message, payload))
    broadcast_on_commit(events)
    transaction.on_commit(lambda: message_sent.send(sender=DirectMessage, message=message))
    return SendResult(message, True, payload)


def _message_store(
    key: str, message: DirectMessage, other_id: int
) -> tuple[Room, list[RoomMember]]:
    """Lock the room, refuse a blocked pair, take a place in the sender's rate window
    and insert the message with the next ``seq``, in the caller's transaction; return
    the room and its members as they were. Raises ``Room.DoesNotExist`` if the pair has
    no room yet. (:mod:`.send_pg` does this, and the updates after it, in one
    statement.)"""
    # Not members_with_receipts: its subquery costs a send more to build (0.3 ms) than
    # the query it saves, which a send needs only when the sender had unread.
    members = list(
        RoomMember.objects.select_related("room")
        .select_for_update(of=("room",))
        .filter(room__key=key)
    )
    if not members:
        raise Room.DoesNotExist(key)
    sender_id: Any = message.sender_id  # a send's, never None
    if is_blocked(sender_id, other_id):
        raise Forbidden("this conversation is blocked")
    room = members[0].room
    ratelimit.send_window_take(sender_id, message.created_at)
    message.room, message.seq = room, room.last_seq + 1
    message.save(force_insert=True)
    return room, members


def _room_advance(room: Room, message: DirectMessage) -> None:
    room.last_seq, room.last_message = message.seq, message
    room.last_activity_at = message.created_at


MEMBER_SEND_FIELDS = [
    "last_read_seq",
    "unread_count",
    "is_request",
    "hidden",
    "last_activity_at",
    "visible",
]


def _request_hides(members: list[RoomMember], message: DirectMessage) -> bool:
    """Whether ``message`` sends its recipient's side to the hidden folder: it is a
    request, not hidden yet, and the text holds one of the recipient's hidden words
    (their own or the host's). A hidden request stays hidden, whatever comes next,
    until it is accepted or deleted. Reads the words only for a request."""
    theirs = next(m for m in members if m.user_id != message.sender_id)
    if not theirs.is_request or theirs.hidden or not message.message:
        return False
    own = getattr(theirs, "user_hidden_words", None)  # send_pg's statement read them
    return text_matches(message.message, selectors.hidden_words_for(theirs.user_id, own))


def _members_advance(members: list[RoomMember], message: DirectMessage, *, hide: bool) -> bool:
    """A message moves both members: the sender has read everything and answered a
    request; the other has one more unread (in the hidden folder, if ``hide``).
    Returns whether the sender had unread."""
    had_unread = False
    for member in members:
        if member.user_id == message.sender_id:
            had_unread = member.unread_count > 0
            member.last_read_seq, member.unread_count = message.seq, 0
            member.is_request = member.hidden = False
        else:
            member.unread_count += 1
            member.hidden = member.hidden or hide
        member.last_activity_at, member.visible = message.created_at, True
    return had_unread


def _attachments_claim(
    message: DirectMessage, attachment_ids: list[int]
) -> list[DirectMessageAttachFiles]:
    """Claim the sender's unclaimed uploads for ``message``: all of them or none."""
    if not attachment_ids:
        return []
    rows = list(
        DirectMessageAttachFiles.objects.select_for_update()
        .filter(pk__in=attachment_ids, uploader_id=message.sender_id, message__isnull=True)
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

    The other side's sockets get ``seen``, unless ``user``'s read receipts are off for
    this conversation; ``user``'s inbox gets the new unread count either way.
    """
    other = peer_resolve(user, account, allow_blocked=True)
    room = Room.objects.filter(key=pair_room_key(user.pk, other.pk)).first()
    if room is None:
        return 0
    with transaction.atomic():
        room = Room.objects.select_for_update().get(pk=room.pk)
        members = selectors.members_with_receipts(RoomMember.objects.select_related("other"))
        member = members.get(room=room, user=user)
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
        events = [_inbox_event(member, last)]
        if selectors.read_receipts_on(member):
            events.insert(0, (room.key, _seen_event(user, seq, now)))
        broadcast_on_commit(events)
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
    # (A conversation with an erased user has no account to reach it by.)
    if is_blocked(room.user_lo_id, room.user_hi_id):  # type: ignore[arg-type]
        raise Forbidden("this conversation is blocked", ref=message_id)
    return DirectMessage.objects.select_related("room").get(pk=message_id)


def _message_updated(message: DirectMessage, *, inboxes: bool = False) -> dict[str, Any]:
    """Broadcast ``message`` as it is now (and both inboxes, if ``inboxes``) on commit;
    return it as a Message object."""
    fresh = selectors.messages_with_related(DirectMessage.objects.filter(pk=message.pk)).get()
    payload = message_out(fresh, message.room.key)
    events = [(message.room.key, {"type": "message.updated", "message": payload})]
    if inboxes:
        events += _inbox_events_for_room(message.room)
    broadcast_on_commit(events)
    return payload


def _inbox_events_for_room(room: Room) -> list[Event]:
    # Not to a hidden request: what its sender does there is announced to nobody.
    members = RoomMember.objects.filter(room=room, hidden=False).select_related("other")
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
    return _message_updated(message, inboxes=message.room.last_message_id == message.pk)


@transaction.atomic
def message_unsend(*, user: Any, room_key: str, message_id: int) -> dict[str, Any]:
    """Remove ``user``'s own message for both sides, keeping a tombstone.

    Text, reactions and attachment rows go at once; the files are deleted from storage
    after commit (a rolled-back unsend must not lose them).
    """
    message = _message_for_update(user, room_key, message_id)
    if message.sender_id != user.pk:
        raise Forbidden("you can only unsend your own messages", ref=message_id)
    return _message_remove(message)


@transaction.atomic
def message_remove(message_id: int) -> bool:
    """A moderator's removal of a message for both sides, as its sender's unsend would
    do (whoever sent it, blocked pair or not). False if it is gone or already removed."""
    room_id = DirectMessage.objects.filter(pk=message_id).values_list("room_id", flat=True).first()
    if room_id is None:
        return False
    Room.objects.select_for_update().get(pk=room_id)
    message = DirectMessage.objects.select_related("room").get(pk=message_id)
    if message.unsent_at is not None:
        return False
    _message_remove(message)
    return True


def _message_remove(message: DirectMessage) -> dict[str, Any]:
    user_id: Any = message.sender_id
    room = Room.objects.get(pk=message.room_id)
    if message.unsent_at is None:
        files = list(message.attachments.all())
        message.attachments.all().delete()
        message.reactions.all().delete()
        message.message, message.unsent_at = "", timezone.now()
        message.save(update_fields=["message", "unsent_at"])
        transaction.on_commit(lambda: attachments.attachment_files_delete(files))
        # The other side's unread count no longer includes it...
        for member in RoomMember.objects.filter(room=room).exclude(user_id=user_id):
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
    return _message_updated(message, inboxes=True)


def view_once_open(*, user: Any, attachment: DirectMessageAttachFiles) -> IO[bytes]:
    """The recipient's opening of a view-once photo or video: counted, at most
    ``view_once`` times (a conditional update, so two at once cannot both take the
    last). The last opening takes the file and its thumbnail out of storage on commit
    and tells both sides it is opened; the caller streams the returned copy, as it
    must stream every opening (a signed URL could be fetched again)."""
    message = attachment.message
    assert message is not None and message.view_once is not None
    if message.sender_id == user.pk:
        raise NotFound("a view-once file is for its recipient only")
    with transaction.atomic():
        counted = DirectMessage.objects.filter(
            pk=message.pk, unsent_at__isnull=True, views__lt=F("view_once")
        ).update(views=F("views") + 1)
        if not counted:
            raise NotFound("this view-once file has been opened")
        message.refresh_from_db(fields=["views"])
        # Fetched under the message's lock: an unsend waits for it (a file on S3).
        handle = attachments.storage_open(attachment.file.name, attachment.file.storage)
        if message.opened:
            with handle:
                copy = tempfile.SpooledTemporaryFile(max_size=1024 * 1024)  # noqa: SIM115 (streamed, then closed by the response)
                shutil.copyfileobj(handle, copy)
            copy.seek(0)
            handle = copy  # type: ignore[assignment]
            names = [attachment.file.name, attachment.thumbnail.name]
            transaction.on_commit(lambda: attachments.storage_names_delete(names))
            _message_updated(message)
    return handle


def _check_emoji(emoji_text: str, message_id: int) -> None:
    import emoji

    if not emoji.is_emoji(emoji_text):
        raise Invalid("emoji: must be exactly one emoji", ref=message_id)


@transaction.atomic
def reaction_set(*, user: Any, room_key: str, message_id: int, emoji_text: str) -> dict[str, Any]:
    """Set ``user``'s one reaction on a message of their conversation."""
    _check_emoji(emoji_text, message_id)
    message = _message_for_update(user, room_key, message_id)
    if message.unsent_at is not None:
        raise Invalid("cannot react to an unsent message", ref=message_id)
    Reaction.objects.update_or_create(
        message=message, user=user, defaults={"emoji": emoji_text, "created_at": timezone.now()}
    )
    return _message_updated(message)


@transaction.atomic
def reaction_clear(*, user: Any, room_key: str, message_id: int) -> dict[str, Any]:
    message = _message_for_update(user, room_key, message_id)
    Reaction.objects.filter(message=message, user=user).delete()
    return _message_updated(message)


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
    """A message request (hidden or not) becomes a normal conversation."""
    member = _member_for_update(user, account)
    if member.is_request:
        member.is_request = member.hidden = False
        member.save(update_fields=["is_request", "hidden"])
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
    _member_clear(_member_for_update(user, account))


@transaction.atomic
def conversation_delete(*, user: Any, account: str) -> None:
    """Delete a message request (hidden or not) for ``user`` only, as a clear does; the
    sender's side is unchanged. It stays a request: the sender's next message brings it
    back as a new one, filtered on its own words. An accepted conversation is refused
    (Forbidden): that is what clearing is for."""
    member = _member_for_update(user, account)
    if not member.is_request:
        raise Forbidden("only a message request can be deleted; clear a conversation instead")
    member.hidden = False
    _member_clear(member, "hidden")


def _member_clear(member: RoomMember, *also: str) -> None:
    member.cleared_seq = member.last_read_seq = member.room.last_seq
    member.unread_count, member.visible = 0, False
    fields = ["cleared_seq", "last_read_seq", "unread_count", "visible", *also]
    member.save(update_fields=fields)


# --- Blocking --------------------------------------------------------------------------


def user_block(*, user: Any, account: str) -> None:
    """Block ``account``: their sends are refused and open sockets of the pair close."""
    other = user_by_account(account)
    if other.pk == user.pk:
        raise Forbidden("you cannot block yourself")
    block_create(user, other)


def block_create(user: Any, other: Any) -> None:
    with transaction.atomic():
        _, created = Block.objects.get_or_create(blocker=user, blocked=other)
        if created:
            broadcast_on_commit([(pair_room_key(user.pk, other.pk), {"type": "room.blocked"})])


def user_unblock(*, user: Any, account: str) -> None:
    other = user_by_account(account)
    Block.objects.filter(blocker=user, blocked=other).delete()


# --- Settings ------------------------------------------------------------------------------


def settings_update(
    *,
    user: Any,
    previews: bool | None = None,
    read_receipts: bool | None = None,
    hidden_words: list[str] | None = None,
) -> dict[str, Any]:
    """Change the given settings of ``user`` (None: leave it); returns them all.

    Read receipts turned off hide where ``user`` has read from then on: no ``seen``, and
    no read position in the other side's ``room.joined``. Turned on again, the read
    position shows again, and ``seen`` goes out from the next read (none is sent for
    the change itself). Hidden words apply to the messages that arrive afterwards."""
    changes: dict[str, Any] = {"previews": previews, "read_receipts": read_receipts}
    if hidden_words is not None:
        changes["hidden_words"] = hidden_words_clean(hidden_words)
    defaults = {name: value for name, value in changes.items() if value is not None}
    if defaults:
        UserSettings.objects.update_or_create(user_id=user.pk, defaults=defaults)
    return selectors.user_settings(user)


@transaction.atomic
def conversation_settings_update(
    *, user: Any, account: str, read_receipts: bool | None
) -> dict[str, Any]:
    """Set ``user``'s read receipts for their conversation with ``account``: True or
    False whatever their own setting says, None to follow it again (as
    :func:`settings_update`'s, from then on). Returns the conversation's settings."""
    member = _member_for_update(user, account)
    if member.read_receipts != read_receipts:
        member.read_receipts = read_receipts
        member.save(update_fields=["read_receipts"])
    return {"read_receipts": member.read_receipts}


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
        # Not the empty rooms refused first messages left before 0.3: no conversation there.
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
    if room is None or room.last_seq == 0:  # an empty room, left by a refused send before 0.3
        raise NotFound(f"no account {account[:40]!r}")
    if is_blocked(viewer.pk, other.pk):
        return {"online": False, "last_active_at": None}
    activity = UserActivity.objects.filter(user_id=other.pk).first()
    return {
        "online": presence.store().online(other.pk),
        "last_active_at": isotime(activity.last_active_at if activity else None),
    }


# --- Typing ----------------------------------------------------------------------------


def typing_set(*, room_key: str, user: Any, active: bool) -> None:
    """Tell the room that ``user`` is typing or stopped, unless throttled.

    The throttle is per user and room across all their sockets and, with Redis, across
    processes. Typing is never stored.
    """
    if active:
        seconds = dm_setting("TYPING_THROTTLE_SECONDS")
        if not ratelimit.typing_claim(room_key, user.pk, seconds):
            return
    else:
        ratelimit.typing_release(room_key, user.pk)
    frame = {"type": "typing", "account": handle_of(user), "active": active}
    broadcast_on_commit([(room_key, frame)])


# --- For consumers -------------------------------------------------------------------------

# ``await services.run(services.message_send, sender=..., ...)`` from async code: the
# service runs in a database thread and what it broadcasts is published from the
# caller's event loop.
run = run_service
