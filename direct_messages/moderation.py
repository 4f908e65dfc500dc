"""Reports and what moderators do with them.

A participant reports messages of a conversation, or the whole of it; the report keeps
a copy of what was reported (text, and the files of the picked messages) and of the
messages around it, so that nothing the sender does afterwards (unsend, a clear on
either side) hides it from moderators. Moderators work in the Django admin
(``admin.ReportAdmin``), whose history is the audit log of their actions.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from typing import Any

from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from direct_messages import auth, services
from direct_messages.adapters import get_adapter
from direct_messages.errors import Invalid, NotFound
from direct_messages.models import (
    DirectMessage,
    Report,
    ReportedMessage,
    ReportStatus,
    Room,
    RoomMember,
)
from direct_messages.rooms import pair_room_key

CONTEXT = 5  # messages kept on each side of the picked ones
RECENT = 20  # messages kept of a conversation reported as a whole


def report_create(
    *,
    user: Any,
    account: str,
    reason: str,
    note: str = "",
    message_ids: Sequence[int] = (),
    block: bool = False,
) -> Report:
    """``user``'s report of ``message_ids`` of their conversation with ``account`` (of the
    latest messages, when none are picked); blocks ``account`` too if ``block``. The
    fields' limits are ``schemas.ReportIn``'s."""
    other = services.peer_resolve(user, account, allow_blocked=True)
    ids = list(dict.fromkeys(message_ids))
    room = Room.objects.filter(key=pair_room_key(user.pk, other.pk)).first()
    member = RoomMember.objects.filter(room=room, user=user).first() if room else None
    if room is None or member is None:
        raise NotFound(f"no conversation with {account[:40]!r}")
    # What the reporter can see: not what they cleared.
    visible = DirectMessage.objects.filter(room=room, seq__gt=member.cleared_seq)
    picked = list(
        visible.filter(pk__in=ids, unsent_at__isnull=True).prefetch_related("attachments")
    )
    if len(picked) != len(ids):
        raise Invalid("message_ids: not messages of this conversation you can see")
    if picked:
        seqs = [m.seq for m in picked]
        context = visible.filter(seq__gte=min(seqs) - CONTEXT, seq__lte=max(seqs) + CONTEXT)
    else:
        context = visible.order_by("-seq")[:RECENT]
    # Files first, outside the transaction (an S3 copy can take seconds); removed again
    # if the report is not stored.
    copies: dict[int, list[dict[str, Any]]] = {m.pk: _files_copy(m) for m in picked}
    try:
        with transaction.atomic():
            report = Report.objects.create(
                reporter=user, reported=other, room=room, reason=reason, note=note
            )
            ReportedMessage.objects.bulk_create(
                ReportedMessage(
                    report=report,
                    message=message,
                    seq=message.seq,
                    sender_id=message.sender_id,
                    text=message.message,
                    created_at=message.created_at,
                    unsent=message.unsent_at is not None,
                    picked=message.pk in copies,
                    attachments=copies.get(message.pk, []),
                )
                for message in sorted({*context, *picked}, key=lambda m: m.seq)
            )
            if block:
                services.block_create(user, other)
    except BaseException:
        _files_delete(copies.values())
        raise
    return report


def _files_copy(message: DirectMessage) -> list[dict[str, Any]]:
    out = []
    for attachment in message.attachments.all():
        with attachment.file.open("rb") as source:
            name = default_storage.save(
                f"dm/reports/{posixpath.basename(attachment.file.name)}", source
            )
        out.append({"file": name, "kind": attachment.kind, "content_type": attachment.content_type})
    return out


def _files_delete(copies: Iterable[list[dict[str, Any]]]) -> None:
    for files in copies:
        for copy in files:
            default_storage.delete(copy["file"])


# --- What moderators do (the admin's actions) ------------------------------------------


def _resolve(report: Report, moderator: Any, status: str) -> None:
    report.status, report.resolved_by, report.resolved_at = status, moderator, timezone.now()
    report.save(update_fields=["status", "resolved_by", "resolved_at"])


def report_dismiss(report: Report, moderator: Any) -> None:
    _resolve(report, moderator, ReportStatus.DISMISSED)


def report_remove_messages(report: Report, moderator: Any) -> int:
    """Remove the picked messages for both sides (the snapshot keeps them); how many."""
    ids = report.messages.filter(picked=True, message__isnull=False).values_list(
        "message_id", flat=True
    )
    removed = sum(services.message_remove(message_id) for message_id in ids)
    _resolve(report, moderator, ReportStatus.ACTIONED)
    return removed


def report_suspend(report: Report, moderator: Any) -> None:
    """Suspend the reported user: their sockets close on every process at once, and
    their Bearer tokens are revoked for good (a reactivation does not bring them back)."""
    get_adapter().suspend(report.reported)
    auth.tokens_revoke_all(report.reported)
    _resolve(report, moderator, ReportStatus.ACTIONED)
