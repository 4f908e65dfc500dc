"""A frame acts only on messages of its socket's own conversation, and edit, unsend and
reactions obey blocks as sends do (issue 18, 4): the attack that worked before."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import sync_to_async

from direct_messages import services
from direct_messages.errors import Forbidden
from direct_messages.models import DirectMessage, Reaction
from tests.conftest import token_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("send_path")]


async def open_dm(ws_connect, user, account):
    headers = [
        (b"host", b"127.0.0.1"),
        (b"authorization", f"Bearer {await sync_to_async(token_for)(user)}".encode()),
    ]
    ws = await ws_connect(f"/ws/dm/{account}/", headers=headers)
    assert (await ws.receive_json_from(timeout=5))["type"] == "room.joined"
    return ws


async def next_error(ws):
    while True:
        frame = await ws.receive_json_from(timeout=5)
        if frame["type"] == "error":
            return frame


async def test_a_blocked_user_cannot_change_the_conversation_from_another_socket(
    make_user, ws_connect
):
    carol, dave, erin = await sync_to_async(lambda: [make_user() for _ in range(3)])()
    sent = await sync_to_async(services.message_send)(
        sender=carol, recipient=dave, client_id=uuid.uuid4(), text="before the block"
    )
    theirs = await sync_to_async(services.message_send)(
        sender=dave, recipient=carol, client_id=uuid.uuid4(), text="reply"
    )
    await sync_to_async(services.user_block)(user=dave, account=carol.account)
    ws = await open_dm(ws_connect, carol, erin.account)  # a socket to someone else
    attacks = [
        {"type": "message.edit", "id": sent.message.pk, "message": "edited after the block"},
        {"type": "reaction.set", "id": theirs.message.pk, "emoji": "😡"},
        {"type": "reaction.clear", "id": theirs.message.pk},
        {"type": "message.unsend", "id": sent.message.pk},
    ]
    for frame in attacks:
        await ws.send_json_to(frame)
        error = await next_error(ws)
        assert (error["code"], error["ref"]) == ("not_found", frame["id"]), frame
    stored = await sync_to_async(DirectMessage.objects.get)(pk=sent.message.pk)
    assert (stored.message, stored.edited_at, stored.unsent_at) == ("before the block", None, None)
    assert not await sync_to_async(Reaction.objects.exists)()


def test_edit_unsend_and_reactions_in_a_blocked_conversation_are_forbidden(make_user):
    carol, dave = make_user(), make_user()
    sent = services.message_send(sender=carol, recipient=dave, client_id=uuid.uuid4(), text="hi")
    room = sent.payload["room"]
    services.user_block(user=dave, account=carol.account)
    for change in (
        lambda: services.message_edit(
            user=carol, room_key=room, message_id=sent.message.pk, text="x"
        ),
        lambda: services.message_unsend(user=carol, room_key=room, message_id=sent.message.pk),
        lambda: services.reaction_set(
            user=dave, room_key=room, message_id=sent.message.pk, emoji_text="👍"
        ),
        lambda: services.reaction_clear(user=carol, room_key=room, message_id=sent.message.pk),
    ):
        with pytest.raises(Forbidden):
            change()
    services.user_unblock(user=dave, account=carol.account)  # control: allowed again
    services.message_edit(user=carol, room_key=room, message_id=sent.message.pk, text="edited")
