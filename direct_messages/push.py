"""Notifications for people who are not looking: Web Push subscriptions, the decision
whether a message notifies, and the push itself (docs/notifications.md).

Everything here runs off the send path: :mod:`direct_messages.tasks` enqueues
:func:`message_notify` after a send commits, and a worker runs it once the delay is
over. The decision is taken then, not at send time, so that a message read (or a
conversation opened) meanwhile makes no buzz.

pywebpush and py-vapid (the ``push`` extra) are imported only where a key or a push
needs them, so that a host without the extra still imports this module.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import ipaddress
import json
import logging
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.urls import reverse
from django.utils import timezone

from direct_messages import presence, push_mobile, selectors
from direct_messages.adapters import get_adapter, handle_of
from direct_messages.conf import dm_setting
from direct_messages.errors import Invalid, NotFound
from direct_messages.models import (
    AttachmentKind,
    Block,
    DirectMessage,
    DirectMessageAttachFiles,
    PushDelivery,
    PushDevice,
    PushSubscription,
    RoomMember,
)

logger = logging.getLogger(__name__)

ENDPOINT_MAX_LENGTH = 1000
PREVIEW_MAX_CHARS = 120
PUSH_TTL_SECONDS = 24 * 3600  # a push service keeps an undelivered one this long
KIND_PREVIEWS: dict[str, str] = {
    AttachmentKind.IMAGE: "Photo",
    AttachmentKind.VIDEO: "Video",
    AttachmentKind.AUDIO: "Voice message",
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Base64url with or without padding (browsers send it without); ValueError if not."""
    text = text.strip()
    if not text or len(text) > 400:
        raise ValueError("empty or too long")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- VAPID keys (RFC 8292) -----------------------------------------------------------


def push_enabled() -> bool:
    return bool(dm_setting("VAPID_PRIVATE_KEY"))


@functools.lru_cache(maxsize=4)
def _vapid(private_key: str) -> Any:
    from py_vapid import Vapid02

    if private_key.lstrip().startswith("-----BEGIN"):
        return Vapid02.from_pem(private_key.strip().encode())
    return Vapid02.from_string(private_key)


def vapid() -> Any:
    """The server's VAPID key pair (a py_vapid ``Vapid02``), from the settings."""
    if not push_enabled():
        raise NotFound("push notifications are not configured on this server")
    return _vapid(dm_setting("VAPID_PRIVATE_KEY"))


def vapid_public_key() -> str:
    """The public key as browsers' ``applicationServerKey`` takes it: base64url of the
    uncompressed P-256 point (65 bytes)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    point = vapid().public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return b64url(point)


def vapid_keys_generate() -> tuple[str, str]:
    """A new pair: (private key for ``VAPID_PRIVATE_KEY``, public key), both base64url."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private = ec.generate_private_key(ec.SECP256R1())
    scalar = private.private_numbers().private_value.to_bytes(32, "big")
    point = private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return b64url(scalar), b64url(point)


# --- Where the server may POST ---------------------------------------------------------


def _address_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


RESOLVE_TIMEOUT_SECONDS = 3.0
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dm-push-resolve")


def _resolve(host: str, port: int) -> list[Any]:
    """``getaddrinfo``, given at most RESOLVE_TIMEOUT_SECONDS: it has no timeout of its
    own, and a request (a subscription) must not wait on a name server an attacker
    chose for as long as that server likes. A lookup that outlives the wait finishes in
    the background, in a pool of four threads."""
    lookup = _resolver.submit(socket.getaddrinfo, host, port, proto=socket.IPPROTO_TCP)
    try:
        return list(lookup.result(timeout=RESOLVE_TIMEOUT_SECONDS))
    except TimeoutError as exc:  # before OSError, of which it is one
        lookup.cancel()
        raise Invalid("endpoint: the host does not resolve in time") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL, a label too long
        raise Invalid("endpoint: the host does not resolve") from exc


def endpoint_check(endpoint: str) -> None:
    """Refuse (Invalid) an endpoint the server must not POST to.

    A push endpoint is a URL a client gives and the server requests: only ``https`` to
    hosts whose every address is public (no loopback, private, link-local, shared or
    reserved range), so that a subscription cannot aim the server at its own network.
    Called on subscription and again before each push, because a name may resolve
    elsewhere later (DNS rebinding). With ``DEBUG`` on, ``http://127.0.0.1`` is let
    through, for a push service stand-in on the developer's machine.
    """
    if len(endpoint) > ENDPOINT_MAX_LENGTH:
        raise Invalid(f"endpoint: at most {ENDPOINT_MAX_LENGTH} characters")
    try:
        parts = urlsplit(endpoint)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise Invalid("endpoint: not a URL") from exc
    if not host or parts.username is not None or parts.password is not None:
        raise Invalid("endpoint: not a push service URL")
    if settings.DEBUG and parts.scheme == "http" and host == "127.0.0.1":
        return
    if parts.scheme != "https":
        raise Invalid("endpoint: must be an https URL")
    addresses = {str(info[4][0]) for info in _resolve(host, port or 443)}
    if not addresses or not all(_address_public(a) for a in addresses):
        raise Invalid("endpoint: the host is not a public address")


def _key_check(p256dh: str, auth: str) -> None:
    """The subscription's keys as RFC 8291 has them: an uncompressed P-256 point and a
    16-byte authentication secret, base64url."""
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(p256dh))
    except ValueError as exc:
        raise Invalid("keys.p256dh: not a P-256 public key (base64url)") from exc
    try:
        secret = b64url_decode(auth)
    except ValueError as exc:
        raise Invalid("keys.auth: not base64url") from exc
    if len(secret) != 16:
        raise Invalid("keys.auth: must be 16 bytes")


# --- Subscriptions and settings ----------------------------------------------------------


def subscription_save(*, user: Any, endpoint: str, p256dh: str, auth: str) -> bool:
    """Store ``user``'s subscription; True if new. The endpoint is the key: the same one
    again updates its row (a browser that re-subscribed, or another user now logged in
    on that browser), so one endpoint is notified for one user only."""
    endpoint_check(endpoint)
    _key_check(p256dh, auth)
    fields = {"user": user, "p256dh": p256dh.strip(), "auth": auth.strip()}
    try:
        _, created = PushSubscription.objects.update_or_create(endpoint=endpoint, defaults=fields)
    except IntegrityError:  # a concurrent first save of the same endpoint won
        PushSubscription.objects.filter(endpoint=endpoint).update(**fields)
        created = False
    return created


def subscription_delete(*, user: Any, endpoint: str) -> None:
    """Forget ``user``'s subscription at ``endpoint`` (nothing if there is none)."""
    PushSubscription.objects.filter(user=user, endpoint=endpoint).delete()


# --- Mobile apps' devices ------------------------------------------------------------------


DEVICE_TOKEN_MAX_LENGTH = 500
_FCM_TOKEN = re.compile(r"[A-Za-z0-9_:\-]{20,500}")
_APNS_TOKEN = re.compile(r"(?:[0-9a-fA-F]{2}){32,100}")


def device_token_check(platform: str, token: str) -> None:
    """ValueError (400 ``invalid`` from the schema) for a token that cannot be one of
    ``platform``'s: FCM's are 20 to 500 characters of letters, digits and ``-_:``;
    APNs' are hex, 32 bytes today (up to 100 accepted: Apple says they may grow)."""
    pattern = _FCM_TOKEN if platform == "fcm" else _APNS_TOKEN
    if not pattern.fullmatch(token):
        raise ValueError(f"token: not an {platform.upper()} registration token")


def device_save(*, user: Any, platform: str, token: str) -> bool:
    """Store a mobile app's token for ``user``; whether it is new. A token already
    stored (the app registering again, or another user logging in on the phone) is
    taken over by ``user``: one row per (platform, token). NotFound when ``platform``
    is not configured here (or its client is not installed)."""
    if not push_mobile.platform_enabled(platform):
        raise NotFound(f"push notifications to {platform} devices are not configured here")
    token = token.lower() if platform == "apns" else token  # hex, either case
    device, created = PushDevice.objects.get_or_create(
        platform=platform, token=token, defaults={"user": user}
    )
    if not created and device.user_id != user.pk:
        PushDevice.objects.filter(pk=device.pk).update(user=user)
    return created


def device_delete(*, user: Any, platform: str, token: str) -> None:
    """Forget ``user``'s device (nothing if there is none, or if it is another user's)."""
    token = token.lower() if platform == "apns" else token
    PushDevice.objects.filter(user=user, platform=platform, token=token).delete()


# --- Whether a message notifies, and what it says --------------------------------------------


def notification_wanted(message: DirectMessage) -> bool:
    """Whether a sent message may notify at all: a browser subscription or a mobile
    device to send to, on a transport configured here, and not a message in a request
    hidden by the recipient's hidden words (which never notifies, even if they accept
    the request before the delay is over). Checked after commit, so that most sends
    enqueue nothing."""
    if not any_transport():
        return False
    room = message.room
    recipient_id = room.user_hi_id if message.sender_id == room.user_lo_id else room.user_lo_id
    # None once that account is erased (issue 21.6: the room keeps a null member).
    if recipient_id is None or not user_has_targets(recipient_id):
        return False
    hidden = RoomMember.objects.filter(room_id=room.pk, user_id=recipient_id, hidden=True)
    return not hidden.exists()


def user_has_targets(user_id: int) -> bool:
    """Whether ``user_id`` has somewhere a notification could go (one or two indexed
    reads; none at all where no transport is configured)."""
    if push_enabled() and PushSubscription.objects.filter(user_id=user_id).exists():
        return True
    platforms = push_mobile.enabled_platforms()
    return bool(platforms) and (
        PushDevice.objects.filter(user_id=user_id, platform__in=platforms).exists()
    )


def any_transport() -> bool:
    return push_enabled() or bool(push_mobile.enabled_platforms())


def _quiet_reason(message: DirectMessage, member: RoomMember) -> str | None:
    """Why ``member`` gets no notification of ``message`` now, or None: they read it,
    they look at the conversation, they muted it, it is a request hidden by their hidden
    words, or either blocked the other."""
    if message.unsent_at is not None:
        return "unsent"
    if member.last_read_seq >= message.seq or member.cleared_seq >= message.seq:
        return "read"
    if member.muted:
        return "muted"
    if member.hidden:
        return "hidden"
    pair = Q(blocker_id=member.user_id, blocked_id=message.sender_id) | Q(
        blocker_id=message.sender_id, blocked_id=member.user_id
    )
    if Block.objects.filter(pair).exists():
        return "blocked"
    if presence.store().watching(member.user_id, message.room.key):
        return "watching"
    return None


def _preview(message: DirectMessage) -> str:
    text = " ".join(message.message.split())
    if text:
        return text if len(text) <= PREVIEW_MAX_CHARS else text[: PREVIEW_MAX_CHARS - 1] + "…"
    kind = (
        DirectMessageAttachFiles.objects.filter(message=message)
        .order_by("pk")
        .values_list("kind", flat=True)
        .first()
    )
    return KIND_PREVIEWS.get(kind, "Attachment") if kind else "Message"


def notification_payload(message: DirectMessage, member: RoomMember) -> dict[str, Any]:
    """What the service worker shows: the sender's name, a preview (none for a message
    request, or when the user turned previews off), the unread total for the badge,
    where a click goes, and a tag per conversation so that the next one replaces it."""
    sender = message.sender
    title = get_adapter().get_display_name(sender) or handle_of(sender)
    if member.is_request:
        body = "Sent you a message request"
    elif not selectors.user_settings(member.user)["previews"]:
        body = "Sent you a message"
    else:
        body = _preview(message)
    shown = RoomMember.objects.filter(user_id=member.user_id, visible=True, hidden=False)
    unread = shown.aggregate(total=Sum("unread_count"))["total"]
    return {
        "title": title,
        "body": body,
        "badge": int(unread or 0),
        "url": reverse("direct_messages:thread", args=[handle_of(sender)]),
        "tag": message.room.key,
        "message_id": message.pk,
    }


# --- Sending ------------------------------------------------------------------------------


@dataclass
class NotifyResult:
    reason: str  # "sent", or why nothing was sent ("read", "muted", ...)
    sent: int = 0
    retry: bool = False  # some pushes failed for now: run again later


def _recipient_member(message: DirectMessage) -> RoomMember | None:
    return (
        RoomMember.objects.select_related("user")
        .filter(room_id=message.room_id)
        .exclude(user_id=message.sender_id)  # type: ignore[misc]  # a send's, never None
        .first()
    )


def message_notify(*, message_id: int, attempt: int = 1) -> NotifyResult:
    """Notify the recipient of ``message_id`` on each of their subscriptions, unless
    they should not be (:func:`_quiet_reason`). Each (message, subscription) is pushed
    once: a second run (a retry, a task run twice) claims only what is new or due again.
    """
    message = DirectMessage.objects.select_related("room", "sender").filter(pk=message_id).first()
    member = _recipient_member(message) if message is not None else None
    if message is None or member is None:
        return NotifyResult("gone")
    if not any_transport():
        return NotifyResult("disabled")
    if reason := _quiet_reason(message, member):
        return NotifyResult(reason)
    targets: list[PushSubscription | PushDevice] = []
    if push_enabled():
        targets += PushSubscription.objects.filter(user_id=member.user_id)
    if platforms := push_mobile.enabled_platforms():
        targets += PushDevice.objects.filter(user_id=member.user_id, platform__in=platforms)
    if not targets:
        return NotifyResult("no subscription")
    payload = notification_payload(message, member)
    data = json.dumps(payload, ensure_ascii=False)
    result = NotifyResult("sent")
    last_attempt = attempt >= int(dm_setting("PUSH_ATTEMPTS"))
    for target in targets:
        delivery = _delivery_claim(message, target)
        if delivery is None:
            continue
        if isinstance(target, PushDevice):
            outcome = _device_send(target, payload)
        else:
            outcome = push_send(target, data, topic=message.room.key)
        delivery.attempts += 1
        if outcome == "sent":
            delivery.state = PushDelivery.State.SENT
            result.sent += 1
        elif outcome == "retry" and not last_attempt:
            delivery.state = PushDelivery.State.RETRY
            result.retry = True
        else:
            delivery.state = PushDelivery.State.GAVE_UP
            if outcome == "retry":
                logger.warning(
                    "push of message %s to %s %s given up after %s attempts",
                    message.pk,
                    "device" if isinstance(target, PushDevice) else "subscription",
                    target.pk,
                    attempt,
                )
        if outcome != "gone":  # else the row went with its subscription or device
            delivery.save(update_fields=["state", "attempts"])
    if not result.sent:
        result.reason = "retry" if result.retry else "none sent"
    return result


def _device_send(device: PushDevice, payload: dict[str, Any]) -> str:
    """One push to a mobile device (:mod:`direct_messages.push_mobile`); a device whose
    token the service says is gone is deleted."""
    outcome = push_mobile.device_send(device.platform, device.token, payload)
    if outcome == "gone":
        logger.warning(
            "%s device %s deleted: the service says its token is gone",
            *(device.platform, device.pk),
        )
        device.delete()
    return outcome


def _delivery_claim(
    message: DirectMessage, target: PushSubscription | PushDevice
) -> PushDelivery | None:
    """The delivery row of this push, claimed for sending, or None if another run has
    it (sending, or sent, or given up). A claim older than ``PUSH_CLAIM_SECONDS`` was
    a worker's that died: it is taken over."""
    key: dict[str, Any] = (
        {"device": target} if isinstance(target, PushDevice) else {"subscription": target}
    )
    try:
        with transaction.atomic():
            return PushDelivery.objects.create(message=message, **key)
    except IntegrityError:
        pass
    now = timezone.now()
    abandoned = now - dt.timedelta(seconds=float(dm_setting("PUSH_CLAIM_SECONDS")))
    claimed = (
        PushDelivery.objects.filter(message=message, **key)
        .filter(
            Q(state=PushDelivery.State.RETRY)
            | Q(state=PushDelivery.State.SENDING, claimed_at__lt=abandoned)
        )
        .update(state=PushDelivery.State.SENDING, claimed_at=now)
    )
    if not claimed:
        return None
    return PushDelivery.objects.get(message=message, **key)


def _topic(room_key: str) -> str:
    """RFC 8030's Topic (at most 32 base64url characters): a push service holding an
    undelivered push of the conversation replaces it with the newer one."""
    return b64url(hashlib.sha256(room_key.encode()).digest())[:32]


def _peer_allowed(address: str, scheme: str) -> bool:
    """Whether a connection for ``scheme`` may go on to ``address``: the rule of
    :func:`endpoint_check`, applied to the address a connection actually reached."""
    if scheme == "http":
        return bool(settings.DEBUG) and address == "127.0.0.1"
    return _address_public(address)


def guarded_session() -> tuple[Any, list[str]]:
    """A requests session whose every connection checks the address it reached, after
    connecting and before sending a byte, and the list of addresses it refused.

    :func:`endpoint_check` resolves the name, and then the connection resolves it again:
    a name whose answers alternate (DNS rebinding with a zero TTL) could pass the one and
    reach a private address with the other. Here the second is checked too. The session
    ignores proxy variables, so that the address checked is the push service's.

    The check overrides urllib3's ``_new_conn``, a private step: it is the one place
    between the TCP connect and the TLS handshake, so that a refused address receives
    not even a ClientHello (the public ``connect()`` returns after the handshake).
    tests/integration/test_push.py's rebinding test fails if an upgrade moves it."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    refused: list[str] = []

    def checked(base: Any, scheme: str) -> Any:
        class Checked(base):  # type: ignore[misc, valid-type]
            def _new_conn(self) -> Any:
                sock = super()._new_conn()
                peer = str(sock.getpeername()[0])
                if not _peer_allowed(peer, scheme):
                    sock.close()
                    refused.append(peer)
                    raise OSError(f"{peer} is not a public address")
                return sock

        return Checked

    class Pool(HTTPConnectionPool):
        ConnectionCls = checked(HTTPConnection, "http")

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = checked(HTTPSConnection, "https")

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": TlsPool}

    session = requests.Session()
    session.trust_env = False
    session.mount("http://", Adapter())
    session.mount("https://", Adapter())
    return session, refused


def _subscription_gone(subscription: PushSubscription, why: str) -> str:
    logger.warning("push subscription %s deleted: %s", subscription.pk, why)
    subscription.delete()
    return "gone"


def push_send(subscription: PushSubscription, data: str, *, topic: str) -> str:
    """POST one encrypted push: "sent"; "gone" (the push service said 404 or 410, or the
    endpoint now points somewhere it must not: the subscription is deleted); "retry"
    (a timeout, a connection failure, 429 or 5xx); "refused" (any other answer)."""
    from pywebpush import WebPushException, webpush
    from requests import RequestException

    try:
        endpoint_check(subscription.endpoint)
    except Invalid as exc:
        return _subscription_gone(subscription, exc.detail)
    session, refused = guarded_session()
    info = {
        "endpoint": subscription.endpoint,
        "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
    }
    try:
        webpush(
            subscription_info=info,
            data=data,
            vapid_private_key=vapid(),
            vapid_claims={"sub": dm_setting("VAPID_SUBJECT")},
            timeout=float(dm_setting("PUSH_TIMEOUT_SECONDS")),
            ttl=PUSH_TTL_SECONDS,
            headers={"Urgency": "high", "Topic": _topic(topic)},
            requests_session=session,
        )
    except WebPushException as exc:
        status = getattr(exc.response, "status_code", None)
        if status in (404, 410):
            subscription.delete()
            return "gone"
        if status is None or status == 429 or status >= 500:
            return "retry"
        logger.warning("push refused by %s: %s", urlsplit(subscription.endpoint).netloc, status)
        return "refused"
    except RequestException:
        if refused:
            return _subscription_gone(subscription, f"endpoint: reached {refused[0]}")
        return "retry"
    finally:
        session.close()
    return "sent"


def retry_delay(attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: 2, 4, 8, ... (PUSH_RETRY_BASE_SECONDS)."""
    return float(dm_setting("PUSH_RETRY_BASE_SECONDS")) * 2 ** (attempt - 1)
