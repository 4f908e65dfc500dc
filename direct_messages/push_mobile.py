"""Notifications to mobile apps: FCM (HTTP v1, through firebase-admin, with the message
built by django-push-notifications) and APNs (HTTP/2, through httpx).
docs/notifications.md ("Mobile apps") says why django-push-notifications' own senders
are not called.

One function per platform sends one notification to one device and says what became of
it: "sent", "gone" (the service says the token is dead: the caller deletes the device),
"retry" (a timeout, a connection failure, 429 or 5xx) or "refused" (anything else).
The decision whether to notify, and the idempotency, are :mod:`direct_messages.push`'s.

The ``push-mobile`` extra is imported only here, and only when a push is sent.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import urllib.request
from typing import Any

from direct_messages.conf import dm_setting

logger = logging.getLogger(__name__)

FCM, APNS = "fcm", "apns"
PUSH_TTL_SECONDS = 24 * 3600  # as Web Push's: a service keeps an undelivered one this long
# APNs reasons that mean the token will never work again (the device is deleted).
APNS_GONE = {"Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic"}


def platform_enabled(platform: str) -> bool:
    """Whether pushes to ``platform`` are configured here and its client installed."""
    if platform == FCM:
        configured = bool(dm_setting("FCM_CREDENTIALS"))
        modules = ("firebase_admin", "push_notifications.gcm")
    elif platform == APNS:
        configured = all(
            dm_setting(key) for key in ("APNS_KEY", "APNS_KEY_ID", "APNS_TEAM_ID", "APNS_TOPIC")
        )
        modules = ("httpx", "h2")  # h2: httpx's HTTP/2
    else:
        return False
    return configured and all(_importable(module) for module in modules)


@functools.cache
def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def enabled_platforms() -> list[str]:
    return [platform for platform in (FCM, APNS) if platform_enabled(platform)]


# --- FCM -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _firebase_app(credentials_file: str, timeout: float) -> Any:
    """A firebase-admin app of its own (not the host's default one), from the service
    account file: the project id and the OAuth token endpoint come from it."""
    import firebase_admin
    from firebase_admin import credentials

    name = f"direct_messages:{credentials_file}:{timeout}"
    try:
        return firebase_admin.get_app(name)  # made before this cache forgot it
    except ValueError:
        return firebase_admin.initialize_app(
            credentials.Certificate(credentials_file), {"httpTimeout": timeout}, name=name
        )


def fcm_message(token: str, notification: dict[str, Any]) -> Any:
    """The FCM message: the Android part built by django-push-notifications'
    ``dict_to_fcm_message`` (notification, ``notification_count`` badge, the room as
    ``tag`` and ``collapse_key``, high priority, the TTL), plus a top-level notification
    and an APNs part for an iOS app that registered through Firebase."""
    from firebase_admin import messaging
    from push_notifications.gcm import dict_to_fcm_message

    room = notification["tag"]
    data = {"url": notification["url"], "room": room, "message_id": str(notification["message_id"])}
    message = dict_to_fcm_message(
        {
            **data,
            "title": notification["title"],
            "message": notification["body"],
            "badge": notification["badge"],
            "tag": room,
            "collapse_key": room,
            "priority": "high",
            "time_to_live": PUSH_TTL_SECONDS,
        }
    )
    message.data = data
    message.android.data = data
    message.token = token
    message.notification = messaging.Notification(
        title=notification["title"], body=notification["body"]
    )
    message.apns = messaging.APNSConfig(
        headers={"apns-collapse-id": room[:64], "apns-priority": "10"},
        payload=messaging.APNSPayload(
            aps=messaging.Aps(badge=notification["badge"], thread_id=room)
        ),
    )
    return message


def fcm_send(token: str, notification: dict[str, Any]) -> str:
    """One FCM HTTP v1 ``messages:send``. firebase-admin itself tries a 500 or 503 again
    up to four times (0.5 s, 1 s, 2 s, 4 s) before it answers here."""
    from firebase_admin import exceptions, messaging
    from google.auth import exceptions as auth_exceptions

    app = _firebase_app(dm_setting("FCM_CREDENTIALS"), float(dm_setting("PUSH_TIMEOUT_SECONDS")))
    try:
        messaging.send(fcm_message(token, notification), app=app)
    except (messaging.UnregisteredError, messaging.SenderIdMismatchError, exceptions.NotFoundError):
        return "gone"
    except (
        exceptions.UnavailableError,
        exceptions.InternalError,
        exceptions.DeadlineExceededError,
        exceptions.ResourceExhaustedError,  # 429, QUOTA_EXCEEDED
        exceptions.UnknownError,
    ):
        return "retry"
    except exceptions.FirebaseError as exc:
        logger.warning("FCM refused a push: %s %s", exc.code, exc)
        return "refused"
    except auth_exceptions.TransportError:  # the OAuth token endpoint out of reach
        return "retry"
    except auth_exceptions.RefreshError as exc:
        if getattr(exc, "retryable", False):
            return "retry"
        logger.warning("FCM credentials refused: %s", exc)
        return "refused"
    return "sent"


# --- APNs ------------------------------------------------------------------------------


APNS_HOSTS = {False: "api.push.apple.com", True: "api.development.push.apple.com"}
# Apple wants a provider token refreshed no more often than every 20 minutes (else 429
# TooManyProviderTokenUpdates) and no less often than every 60 (403 ExpiredProviderToken).
PROVIDER_TOKEN_SECONDS = 40 * 60
_provider_tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
_provider_lock = threading.Lock()


def apns_provider_token(*, now: float | None = None) -> str:
    """The ES256 JWT APNs takes as ``authorization: bearer``: kept and reused for
    PROVIDER_TOKEN_SECONDS per key, per process."""
    import jwt

    key = (dm_setting("APNS_KEY"), dm_setting("APNS_KEY_ID"), dm_setting("APNS_TEAM_ID"))
    now = time.time() if now is None else now
    with _provider_lock:
        cached = _provider_tokens.get(key)
        if cached and now - cached[1] < PROVIDER_TOKEN_SECONDS:
            return cached[0]
        with open(key[0]) as f:
            signing_key = f.read()
        token = jwt.encode(
            {"iss": key[2], "iat": int(now)},
            signing_key,
            algorithm="ES256",
            headers={"kid": key[1]},
        )
        _provider_tokens[key] = (token, now)
        return token


@functools.lru_cache(maxsize=2)
def _http2_client(proxy: str | None, ca_file: str | None) -> Any:
    """One HTTP/2 client per process (Apple asks for connections kept open, not one per
    push), made anew when the environment's proxy or CA file changes. Like requests,
    and so firebase-admin, httpx goes through ``HTTPS_PROXY`` and trusts
    ``SSL_CERT_FILE`` when they are set."""
    import httpx

    return httpx.Client(http2=True, trust_env=True)


def apns_payload(notification: dict[str, Any]) -> dict[str, Any]:
    room = notification["tag"]
    return {
        "aps": {
            "alert": {"title": notification["title"], "body": notification["body"]},
            "badge": notification["badge"],
            "sound": "default",
            "thread-id": room,  # grouped per conversation on the phone
        },
        "url": notification["url"],
        "room": room,
        "message_id": notification["message_id"],
    }


def apns_send(token: str, notification: dict[str, Any]) -> str:
    """One APNs ``POST /3/device/{token}`` over HTTP/2, one notification per conversation
    (``apns-collapse-id``: the newer replaces the older)."""
    import httpx

    host = APNS_HOSTS[bool(dm_setting("APNS_SANDBOX"))]
    client = _http2_client(
        urllib.request.getproxies().get("https"), os.environ.get("SSL_CERT_FILE")
    )
    headers = {
        "authorization": f"bearer {apns_provider_token()}",
        "apns-topic": dm_setting("APNS_TOPIC"),
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-expiration": str(int(time.time()) + PUSH_TTL_SECONDS),
        "apns-collapse-id": notification["tag"][:64],  # at most 64 bytes
    }
    try:
        response = client.post(
            f"https://{host}/3/device/{token}",
            json=apns_payload(notification),
            headers=headers,
            timeout=float(dm_setting("PUSH_TIMEOUT_SECONDS")),
        )
    except httpx.HTTPError as exc:  # a timeout, no connection, a broken stream
        logger.info("APNs out of reach: %r", exc)
        return "retry"
    if response.status_code == 200:
        return "sent"
    try:
        reason = str(response.json().get("reason", ""))
    except ValueError:
        reason = ""
    if response.status_code == 410 or reason in APNS_GONE:
        return "gone"
    if reason == "ExpiredProviderToken":
        _provider_tokens.clear()
        return "retry"
    if response.status_code == 429 or response.status_code >= 500:
        return "retry"
    logger.warning("APNs refused a push: %s %s", response.status_code, reason)
    return "refused"


def device_send(platform: str, token: str, notification: dict[str, Any]) -> str:
    return fcm_send(token, notification) if platform == FCM else apns_send(token, notification)
