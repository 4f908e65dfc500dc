"""The app's settings: one ``DIRECT_MESSAGES`` dict in the host's settings, every key's
default here and nowhere else (docs/install.md lists them)."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # --- the host ---
    # What the app knows of the host's users (handle, display name, avatar, lookup).
    "USER_ADAPTER": "direct_messages.adapters.DefaultUserAdapter",
    # Turn a request's or a handshake's credentials into a user, tried in order.
    "AUTHENTICATORS": [
        "direct_messages.auth.TokenAuthenticator",
        "direct_messages.auth.SessionAuthenticator",
    ],
    # More django-ninja routers mounted on the app's API: {"/auth": "host.api.router"}.
    "API_ROUTERS": {},
    # --- tokens (signed with the host's SECRET_KEY) ---
    "TOKEN_LIFETIME_SECONDS": 7 * 24 * 3600,
    "TOKEN_AUDIENCE": "direct_messages",
    # --- messages ---
    "MESSAGE_MAX_LENGTH": 1000,  # characters of message text
    "FRAME_MAX_BYTES": 64 * 1024,  # a larger WebSocket frame gets `too_large`
    "EDIT_WINDOW_SECONDS": 15 * 60,
    "SEND_RATE_LIMIT": 30,  # accepted sends ...
    "SEND_RATE_WINDOW_SECONDS": 10,  # ... per sliding window, per user
    # --- attachments ---
    "ATTACHMENTS_PER_MESSAGE": 10,
    "FILE_MAX_BYTES": 25 * 1024 * 1024,
    "IMAGE_MAX_PIXELS": 40_000_000,
    "THUMBNAIL_SIZE": 640,  # longest side of the WebP thumbnail
    "UNCLAIMED_ATTACHMENT_TTL_SECONDS": 24 * 3600,
    "X_ACCEL_REDIRECT_PREFIX": "",  # e.g. "/protected-media/" behind nginx
    # --- real time ---
    "REDIS_URL": "",  # typing throttle and presence shared across processes when set
    "TYPING_THROTTLE_SECONDS": 1.0,
    "PRESENCE_TTL_SECONDS": 60,  # a dead process's sockets stop counting after this
    "MAX_SOCKETS_PER_USER": 50,  # more open sockets (all processes) are closed with 4429
    # Threads per process for the sockets' database work, each keeping one connection.
    "DATABASE_THREADS": min(32, (os.cpu_count() or 1) + 4),
}


def dm_setting(name: str) -> Any:
    return getattr(settings, "DIRECT_MESSAGES", {}).get(name, DEFAULTS[name])
