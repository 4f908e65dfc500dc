"""Bulk factories for read-path tests: conversations and messages without the send path."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from direct_messages.models import DirectMessage, Room, RoomMember
from direct_messages.rooms import pair_room_key


def make_conversations(user: Any, count: int, messages_each: int = 1) -> list[Room]:
    """``count`` conversations of ``user`` with new partners, each with messages."""
    User = get_user_model()
    tag = uuid.uuid4().hex[:6]
    partners = User.objects.bulk_create(
        [User(account=f"p{tag}_{i}", name=f"Partner {i}", password="!") for i in range(count)]
    )
    now = timezone.now()
    rooms = Room.objects.bulk_create(
        [
            Room(
                key=pair_room_key(user.pk, p.pk),
                user_lo_id=min(user.pk, p.pk),
                user_hi_id=max(user.pk, p.pk),
                last_seq=messages_each,
                last_activity_at=now - dt.timedelta(seconds=i),
            )
            for i, p in enumerate(partners)
        ]
    )
    messages = DirectMessage.objects.bulk_create(
        [
            DirectMessage(
                room=room,
                sender_id=partner.pk if seq % 2 else user.pk,
                seq=seq,
                message=f"message {seq}",
                client_id=uuid.uuid4(),
                created_at=room.last_activity_at - dt.timedelta(seconds=messages_each - seq),
            )
            for room, partner in zip(rooms, partners, strict=True)
            for seq in range(1, messages_each + 1)
        ]
    )
    last_by_room = {m.room_id: m for m in messages if m.seq == messages_each}
    for room in rooms:
        room.last_message = last_by_room[room.pk]
    Room.objects.bulk_update(rooms, ["last_message"])
    RoomMember.objects.bulk_create(
        [
            member
            for room, partner in zip(rooms, partners, strict=True)
            for member in (
                RoomMember(
                    room=room,
                    user=user,
                    other=partner,
                    unread_count=1,
                    last_activity_at=room.last_activity_at,
                ),
                RoomMember(
                    room=room, user=partner, other=user, last_activity_at=room.last_activity_at
                ),
            )
        ]
    )
    return rooms
