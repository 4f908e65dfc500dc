"""A user's data, in their hands: one zip of their conversations, files, blocks and
settings, built in the background and downloadable by them for a limited time.

``messages.json`` renders every message with the API's own ``Message`` object, so an
export reads like the history pages; each attachment adds ``file``, its path in the zip.
What a user cleared ("delete for me") is not theirs to see any more and is left out,
as are view-once files, which the export must not turn into a copy that stays.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from typing import IO, Any

from django.core.files import File
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from direct_messages import selectors
from direct_messages.adapters import get_adapter, user_out
from direct_messages.conf import dm_setting
from direct_messages.db import in_background
from direct_messages.models import (
    Block,
    DataExport,
    DirectMessage,
    ExportStatus,
    RoomMember,
)
from direct_messages.schemas import isotime, message_out

logger = logging.getLogger(__name__)


def export_request(user: Any, *, enqueue: Callable[[Any], None] | None = None) -> DataExport:
    """The user's pending export, or a new one, built after commit by ``enqueue``
    (the task queue's, ``tasks.export_enqueue``), else by a thread of this process."""
    exports_purge()
    build = enqueue or (lambda pk: in_background(export_build, pk, name=f"dm-export-{pk}"))
    pending = DataExport.objects.filter(user=user, status=ExportStatus.PENDING).first()
    if pending is not None:
        transaction.on_commit(lambda: build(pending.pk))  # if its build died
        return pending
    export = DataExport.objects.create(user=user)
    transaction.on_commit(lambda: build(export.pk))
    return export


# A build that has not finished this long after it started died with its process: the
# next request for it (or a retried task) builds it again.
BUILD_STALE_SECONDS = 15 * 60


def export_build(export_id: Any) -> DataExport | None:
    """Build the zip of ``export_id`` and mark it ready (or failed, logged). None if it
    is gone, or another process is building it."""
    now = timezone.now()
    claimable = Q(started_at__isnull=True) | Q(
        started_at__lt=now - dt.timedelta(seconds=BUILD_STALE_SECONDS)
    )
    pending = DataExport.objects.filter(pk=export_id, status=ExportStatus.PENDING)
    if not pending.filter(claimable).update(started_at=now):
        return None
    export = DataExport.objects.select_related("user").get(pk=export_id)
    try:
        with tempfile.TemporaryFile() as archive:
            export_write(export.user, archive)
            archive.seek(0)
            export.file.save(f"{export.pk}.zip", File(archive), save=False)
    except Exception:
        logger.exception("data export %s failed", export.pk)
        export.status = ExportStatus.FAILED
    else:
        export.status = ExportStatus.READY
    export.finished_at = timezone.now()
    export.expires_at = export.finished_at + dt.timedelta(seconds=dm_setting("EXPORT_LINK_SECONDS"))
    fields = ("status", "file", "finished_at", "expires_at")
    if not DataExport.objects.filter(pk=export.pk).update(
        **{name: getattr(export, name) for name in fields}
    ):  # its user was deleted meanwhile: so is what was built
        if export.file:
            export.file.storage.delete(export.file.name)
        return None
    return export


def export_write(user: Any, out: IO[bytes]) -> dict[str, Any]:
    """Write ``user``'s zip to ``out``; return what ``messages.json`` holds."""
    data: dict[str, Any] = {
        "user": user_out(user),
        "exported_at": isotime(timezone.now()),
        "conversations": [],
        "settings": selectors.user_settings(user),
        "blocks": [
            {"account": get_adapter().get_handle(b.blocked), "created_at": isotime(b.created_at)}
            for b in Block.objects.filter(blocker=user).select_related("blocked")
        ],
    }
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        members = RoomMember.objects.filter(user=user).select_related("room", "other")
        for member in members.order_by("room_id"):
            messages = selectors.messages_with_related(
                DirectMessage.objects.filter(room=member.room, seq__gt=member.cleared_seq)
            ).order_by("seq")
            rendered = []
            for message in messages.iterator(chunk_size=1000):
                payload = message_out(message, member.room.key)
                for attachment, row in zip(
                    payload["attachments"], message.attachments.all(), strict=True
                ):
                    attachment.pop("thumbnail_url")
                    attachment.pop("url")
                    if message.view_once is None:
                        attachment["file"] = _file_add(archive, row)
                rendered.append(payload)
            data["conversations"].append(
                {
                    "room": member.room.key,
                    "with": user_out(member.other),
                    "request": member.is_request,
                    "muted": member.muted,
                    "read_receipts": member.read_receipts,  # None: follows "settings"
                    "messages": rendered,
                }
            )
        archive.writestr("messages.json", json.dumps(data, ensure_ascii=False, indent=1))
    return data


def _file_add(archive: zipfile.ZipFile, row: Any) -> str:
    name = f"attachments/{row.pk}-{row.name or 'file'}"
    entry = zipfile.ZipInfo(name, date_time=row.created_at.timetuple()[:6])
    entry.compress_type = zipfile.ZIP_STORED  # photos, video and voice are compressed
    with row.file.open("rb") as source, archive.open(entry, "w") as target:
        shutil.copyfileobj(source, target, 1024 * 1024)
    return name


def exports_purge() -> int:
    """Delete exports past their link's expiry: rows and zips. How many."""
    expired = list(DataExport.objects.filter(expires_at__lt=timezone.now()))
    for export in expired:
        if export.file:
            export.file.delete(save=False)
        export.delete()
    return len(expired)
