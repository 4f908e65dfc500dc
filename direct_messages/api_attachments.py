"""HTTP routes for attachments (``/api/attachments``)."""

from ninja import Router

router = Router(tags=["attachments"])
