"""``/api/me/...``: a user's own data (issue 21): their export, their erasure."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from ninja import Router, Status

from direct_messages import erasure, exports, selectors
from direct_messages.api_attachments import DOWNLOAD_OPENAPI, DOWNLOAD_RESPONSES, serve_stored
from direct_messages.conf import dm_setting
from direct_messages.errors import NotFound
from direct_messages.http import RateThrottle, errors
from direct_messages.schemas import EraseIn, ErasureOut, ExportOut, api_root

try:  # the task queue (the `push` extra); without it, a thread of this process
    from direct_messages.tasks import erase_enqueue, export_enqueue
except ImportError:
    erase_enqueue = export_enqueue = None  # type: ignore[assignment]

me_router = Router(tags=["my data"])


def export_out(export: Any) -> dict[str, Any]:
    ready = export.status == "ready"
    url = f"{api_root()}me/export/{export.pk}/download" if ready else None
    return {"id": str(export.pk), "status": export.status, "url": url}


@me_router.post(
    "/export",
    response={202: ExportOut, **errors(400, 401, 403, 413, 429)},
    throttle=RateThrottle("export", lambda: dm_setting("EXPORT_RATE"), per="user"),
)
def export_request(request: HttpRequest) -> Status:
    """Ask for a copy of my data: a zip, built in the background (poll the export)."""
    return Status(202, export_out(exports.export_request(request.user, enqueue=export_enqueue)))


@me_router.get("/export/{export_id}", response={200: ExportOut, **errors(401, 404)})
def export_get(request: HttpRequest, export_id: uuid.UUID) -> dict[str, Any]:
    return export_out(selectors.export_for(user=request.user, export_id=export_id))


@me_router.get(
    "/export/{export_id}/download", response=DOWNLOAD_RESPONSES, openapi_extra=DOWNLOAD_OPENAPI
)
def export_download(request: HttpRequest, export_id: uuid.UUID) -> HttpResponseBase:
    """The zip, to its owner only, until the export expires."""
    export = selectors.export_for(user=request.user, export_id=export_id, ready=True)
    return serve_stored(request, export.file.name, "application/zip", "instamg-dm-export.zip")


@me_router.post(
    "/erase",
    response={202: ErasureOut, **errors(400, 401, 403, 404, 413, 429)},
    throttle=RateThrottle("erase", lambda: dm_setting("ERASE_RATE"), per="user"),
)
def erase(request: HttpRequest, payload: EraseIn) -> Status:
    """Erase my account, when the host allows it (``ERASE_ENDPOINT``; else 404): with my
    password, I am signed out everywhere at once, and erased in the background."""
    if not dm_setting("ERASE_ENDPOINT"):
        raise NotFound("erasure is not offered here")
    erasure.erase_request(request, payload.password, enqueue=erase_enqueue)
    return Status(202, {"status": "pending"})
