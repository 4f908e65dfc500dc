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
    # ``POST /api/me/erase``: users may erase themselves (the host's ``user.delete()``
    # through the adapter's ``erase()``). Off: that route is 404.
    "ERASE_ENDPOINT": False,
    # The name an erased user shows as, in the conversations of the people they wrote to.
    "ERASED_NAME": "Deleted account",
    # --- tokens (signed with the host's SECRET_KEY) ---
    "TOKEN_LIFETIME_SECONDS": 7 * 24 * 3600,
    "TOKEN_AUDIENCE": "direct_messages",
    # Throttles (per client address / per user, in the host's default cache): django-axes
    # in the host adds per-account lockouts on wrong passwords (docs/install.md).
    "TOKEN_RATE": "30/min",
    "USER_SEARCH_RATE": "60/min",
    "REPORT_RATE": "20/hour",  # reports per user
    "EXPORT_RATE": "3/day",  # data exports asked for, per user
    "SEARCH_RATE": "30/min",  # message searches (full text) per user
    "ERASE_RATE": "5/hour",  # erasure requests (password checks) per user
    # How long a data export's download stays (then its zip is deleted).
    "EXPORT_LINK_SECONDS": 4 * 24 * 3600,
    # --- messages ---
    "MESSAGE_MAX_LENGTH": 1000,  # characters of message text
    "FRAME_MAX_BYTES": 64 * 1024,  # a larger WebSocket frame gets `too_large`
    "EDIT_WINDOW_SECONDS": 15 * 60,
    "SEND_RATE_LIMIT": 30,  # accepted sends ...
    "SEND_RATE_WINDOW_SECONDS": 10,  # ... per sliding window, per user
    # On PostgreSQL, store a send in one SQL statement (send_pg) rather than the ORM's.
    "SEND_STATEMENT": True,
    # Words and phrases that send a message request to its recipient's hidden folder, for
    # every user, in addition to each user's own list (docs/protocol.md, "Hidden words").
    "HIDDEN_WORDS": [],
    # --- attachments ---
    "ATTACHMENTS_PER_MESSAGE": 10,
    "FILE_MAX_BYTES": 25 * 1024 * 1024,
    # All frames together; a WebP counts 4x (docs/attachments.md has the measurements).
    "IMAGE_MAX_PIXELS": 25_000_000,
    "THUMBNAIL_SIZE": 640,  # longest side of the WebP thumbnail
    "UNCLAIMED_ATTACHMENT_TTL_SECONDS": 24 * 3600,
    "X_ACCEL_REDIRECT_PREFIX": "",  # e.g. "/protected-media/" behind nginx
    # Files a user may upload (alone or in a multipart send) per sliding window ...
    "UPLOAD_RATE_LIMIT": 30,
    # ... of this many seconds, then `rate_limited`.
    "UPLOAD_RATE_WINDOW_SECONDS": 60,
    # Uploads of one user waiting for a send: at most this many files ...
    "UNCLAIMED_MAX_FILES": 50,
    # ... and this many bytes together, then `too_large`.
    "UNCLAIMED_MAX_BYTES": 200 * 1024 * 1024,
    # Images decoded at once per process (each can take 4 bytes per pixel and more).
    "IMAGE_DECODE_CONCURRENCY": 2,
    # How long an upload waits for a decoding slot before `rate_limited` (Retry-After 1).
    "IMAGE_DECODE_WAIT_SECONDS": 5.0,
    # Uploads start a purge of expired unclaimed uploads at most this often per
    # process, in a background thread; 0 leaves it to `manage.py purge_attachments`.
    "PURGE_INTERVAL_SECONDS": 300,
    # --- real time ---
    "REDIS_URL": "",  # typing throttle and presence shared across processes when set
    "TYPING_THROTTLE_SECONDS": 1.0,
    "PRESENCE_TTL_SECONDS": 60,  # a dead process's sockets stop counting after this
    "MAX_SOCKETS_PER_USER": 50,  # more open sockets (all processes) are closed with 4429
    # Frames a socket may send: a bucket of FRAME_BURST refilled at FRAME_RATE a second;
    # past it a frame gets `rate_limited` and is not applied. Sends also count against
    # SEND_RATE_LIMIT.
    "FRAME_RATE": 10.0,
    "FRAME_BURST": 40,
    # Messages one `?after=` or `sync` replays; `sync.done` then says whether there is more.
    "REPLAY_BATCH": 500,
    # Threads per process for the sockets' database work, each keeping one connection.
    "DATABASE_THREADS": min(32, (os.cpu_count() or 1) + 4),
    # --- notifications (docs/notifications.md; the `push` extra) ---
    # The VAPID key pair's private half (RFC 8292): base64url of the raw P-256 scalar, as
    # `manage.py dm_vapid_keys` prints it, or a PEM. Empty: no Web Push at all.
    "VAPID_PRIVATE_KEY": "",
    # Who the push services may contact about our pushes: "mailto:..." or "https://...".
    "VAPID_SUBJECT": "mailto:admin@localhost",
    # A notification waits this long, so a message read at once makes no buzz.
    "PUSH_DELAY_SECONDS": 3.0,
    # One push's HTTP timeout; a timeout or a 5xx is tried again after 2, 4, 8, ...
    # seconds, at most PUSH_ATTEMPTS times in all, then given up (logged once).
    "PUSH_TIMEOUT_SECONDS": 10.0,
    "PUSH_ATTEMPTS": 5,
    "PUSH_RETRY_BASE_SECONDS": 2.0,
    # A task or a push a worker started this long ago and never finished is taken as
    # its worker's death: the task runs again, the push is claimed again. Longer than
    # any task takes (PUSH_TIMEOUT_SECONDS per subscription of the recipient).
    "PUSH_CLAIM_SECONDS": 300,
    # Mobile apps (the `push-mobile` extra). FCM: the Firebase project's service account
    # file (JSON; the project id and token endpoint come from it). Empty: no FCM.
    "FCM_CREDENTIALS": "",
    # APNs, with a token-based key (.p8 file): all four set, or no APNs.
    "APNS_KEY": "",
    "APNS_KEY_ID": "",
    "APNS_TEAM_ID": "",
    "APNS_TOPIC": "",  # the app's bundle id
    "APNS_SANDBOX": False,  # True: Apple's development server (builds from Xcode)
    # Subscription, device and settings changes per user (the endpoints of docs/notifications.md).
    "PUSH_RATE": "30/min",
    # The django-tasks backend alias the app's tasks (notifications, exports, erasures)
    # are enqueued on, and the queue of that backend (listed in its QUEUES).
    "PUSH_TASK_BACKEND": "default",
    "TASK_QUEUE": "default",
}


def dm_setting(name: str) -> Any:
    return getattr(settings, "DIRECT_MESSAGES", {}).get(name, DEFAULTS[name])
