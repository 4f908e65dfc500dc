"""Erasing a user (issue 21): what the app does when the host deletes one.

``user.delete()``, by the host, the admin or :func:`erase_request`, is the one way in:
:func:`user_erase_prepare` runs on the user model's ``pre_delete``, inside the deletion's
transaction, and the foreign keys do the rest. After it:

- their messages are tombstones: the row keeps its room, ``seq`` and time, so the other
  side's history pages without a gap, but its text, attachments, reactions, reply and
  sender (null: a neutral placeholder) are gone, and with the text its search entry;
- their files (attachments, exports, the copies in reports by or about them) are deleted
  from storage once the deletion commits;
- their rows go with them: memberships, reactions, blocks, settings, tokens, push
  subscriptions, exports, reports by or about them. The other side keeps the
  conversation (its ``with`` turns into the placeholder), with nothing unread in it; a
  conversation whose other side was erased before goes entirely;
- their open sockets close (4401), on every process.

Django collects what a deletion cascades to before it sends ``pre_delete``: what is
done here must not delete what the collector already counts on, nor anything it does
not know of but the rows it is about to null.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from direct_messages.adapters import get_adapter
from direct_messages.attachments import storage_names_delete
from direct_messages.auth import credentials_changed
from direct_messages.db import in_background
from direct_messages.errors import Forbidden
from direct_messages.models import (
    DataExport,
    DirectMessage,
    DirectMessageAttachFiles,
    Reaction,
    ReportedMessage,
    Room,
    RoomMember,
)


def user_erase_prepare(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``pre_delete`` of the user model: tombstone the user's messages and schedule the
    deletion of their files (see the module's docstring)."""
    user_id = instance.pk
    mine = Q(user_lo_id=user_id) | Q(user_hi_id=user_id)
    # Conversations with someone erased before: nobody is left to read them.
    Room.objects.filter(mine, Q(user_lo__isnull=True) | Q(user_hi__isnull=True)).delete()

    names = [
        name
        for pair in DirectMessageAttachFiles.objects.filter(uploader_id=user_id).values_list(
            "file", "thumbnail"
        )
        for name in pair
    ]
    names += DataExport.objects.filter(user_id=user_id).values_list("file", flat=True)
    copies = ReportedMessage.objects.filter(
        Q(report__reporter_id=user_id) | Q(report__reported_id=user_id)
    ).values_list("attachments", flat=True)
    names += [copy["file"] for files in copies for copy in files]

    messages = DirectMessage.objects.filter(sender_id=user_id)
    Reaction.objects.filter(message__in=messages).delete()
    messages.update(
        message="",
        unsent_at=Coalesce("unsent_at", timezone.now()),
        edited_at=None,
        reply_to=None,
        view_once=None,
        views=0,
    )
    # Whatever the other side had unread was the erased user's; their inbox shows the
    # latest message still there.
    RoomMember.objects.filter(other_id=user_id).update(unread_count=0)
    latest = DirectMessage.objects.filter(room_id=OuterRef("pk"), unsent_at__isnull=True)
    Room.objects.filter(mine).update(
        last_message=Subquery(latest.order_by("-seq").values("pk")[:1])
    )

    transaction.on_commit(lambda: storage_names_delete(names))
    credentials_changed(user_id)


def erase_request(
    request: Any, password: str, *, enqueue: Callable[[Any], None] | None = None
) -> None:
    """The user's own erasure (``POST /api/me/erase``): their password again, then at once
    they are suspended (signed out everywhere, sockets closed), and the erasure itself
    runs after commit through ``enqueue`` (the task queue's ``tasks.erase_enqueue``),
    else a thread of this process."""
    user = request.user
    if not user.check_password(password):
        raise Forbidden("password: wrong password")
    get_adapter().suspend(user)
    erase = enqueue or (lambda pk: in_background(user_erase, pk, name=f"dm-erase-{pk}"))
    transaction.on_commit(lambda: erase(user.pk))


def user_erase(user_id: Any) -> bool:
    """Erase the user of ``user_id`` through the adapter (``user.delete()`` by default);
    False if they are gone already."""
    user = get_user_model()._default_manager.filter(pk=user_id).first()
    if user is None:
        return False
    get_adapter().erase(user)
    return True
