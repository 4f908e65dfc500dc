"""The app's settings: one ``DIRECT_MESSAGES`` dict, defaults documented here."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "MESSAGE_MAX_LENGTH": 1000,  # characters of message text
    "FRAME_MAX_BYTES": 64 * 1024,  # a larger WebSocket frame gets `too_large`
    "ATTACHMENTS_PER_MESSAGE": 10,
    "FILE_MAX_BYTES": 25 * 1024 * 1024,
    "IMAGE_MAX_PIXELS": 40_000_000,
    "THUMBNAIL_SIZE": 640,  # longest side of the WebP thumbnail
    "EDIT_WINDOW_SECONDS": 15 * 60,
    "SEND_RATE_LIMIT": 30,  # accepted sends ...
    "SEND_RATE_WINDOW_SECONDS": 10,  # ... per sliding window, per user
    "UNCLAIMED_ATTACHMENT_TTL_SECONDS": 24 * 3600,
    "X_ACCEL_REDIRECT_PREFIX": "",  # e.g. "/protected-media/" behind nginx
    "TYPING_THROTTLE_SECONDS": 1.0,
    "PRESENCE_TTL_SECONDS": 60,  # a dead process's sockets stop counting after this
    "MAX_SOCKETS_PER_USER": 50,  # more open sockets (all processes) are closed with 4429
    "REDIS_URL": "",  # typing throttle and presence shared across processes when set
}


def dm_setting(name: str) -> Any:
    return getattr(settings, "DIRECT_MESSAGES", {}).get(name, DEFAULTS[name])
