"""HTTP routes for notifications (PROTOCOL.md, "Notifications"): thin, each validates,
calls :mod:`direct_messages.push` and returns."""

from typing import Any, Literal

from django.http import HttpRequest
from ninja import Router, Schema, Status
from pydantic import Field, StrictBool, model_validator

from direct_messages import push, selectors, services
from direct_messages.conf import dm_setting
from direct_messages.http import RateThrottle, errors

router = Router(tags=["notifications"])
# Every change costs a write (and a subscription a DNS lookup): limited per user.
push_throttle = RateThrottle("push", lambda: dm_setting("PUSH_RATE"), per="user")


class VapidKeyOut(Schema):
    key: str = Field(description="base64url of the uncompressed P-256 point")


class SubscriptionKeys(Schema):
    p256dh: str = Field(max_length=200)
    auth: str = Field(max_length=100)


class SubscriptionIn(Schema):
    """A browser's ``PushSubscription.toJSON()`` (``expirationTime`` is ignored)."""

    endpoint: str = Field(min_length=1, max_length=push.ENDPOINT_MAX_LENGTH)
    keys: SubscriptionKeys


class SubscriptionOut(Schema):
    endpoint: str


class EndpointIn(Schema):
    endpoint: str = Field(min_length=1, max_length=push.ENDPOINT_MAX_LENGTH)


class DeviceIn(Schema):
    """A mobile app's registration token: FCM's (letters, digits, ``-_:``), or APNs'
    device token in hex."""

    platform: Literal["fcm", "apns"]
    token: str = Field(min_length=1, max_length=push.DEVICE_TOKEN_MAX_LENGTH)

    @model_validator(mode="after")
    def token_shape(self) -> "DeviceIn":
        push.device_token_check(self.platform, self.token)
        return self


class DeviceOut(Schema):
    platform: str
    token: str


class SettingsIn(Schema):
    previews: bool | None = None
    # Strict: "false" or 0 is a client's bug, not a choice (400 invalid).
    read_receipts: StrictBool | None = None
    hidden_words: list[str] | None = None


class SettingsOut(Schema):
    previews: bool
    read_receipts: bool = Field(
        description="the other side learns where I have read, unless a conversation's "
        "own setting (GET /api/dm/{account}/settings) says otherwise"
    )
    hidden_words: list[str]


@router.get("/push/vapid-public-key", response={200: VapidKeyOut, **errors(401, 404)})
def vapid_public_key(request: HttpRequest) -> dict[str, Any]:
    """The server's VAPID public key, for ``pushManager.subscribe``'s
    ``applicationServerKey``; 404 when push is not configured."""
    return {"key": push.vapid_public_key()}


@router.post(
    "/push/subscriptions",
    response={200: SubscriptionOut, 201: SubscriptionOut, **errors(400, 401, 403, 413, 429)},
    throttle=push_throttle,
)
def subscription_save(request: HttpRequest, payload: SubscriptionIn) -> Status:
    """Subscribe this browser: 201, or 200 for an endpoint already stored (one row)."""
    created = push.subscription_save(
        user=request.user,
        endpoint=payload.endpoint,
        p256dh=payload.keys.p256dh,
        auth=payload.keys.auth,
    )
    return Status(201 if created else 200, {"endpoint": payload.endpoint})


@router.delete(
    "/push/subscriptions",
    response={204: None, **errors(400, 401, 403, 413, 429)},
    throttle=push_throttle,
)
def subscription_delete(request: HttpRequest, payload: EndpointIn) -> Status:
    push.subscription_delete(user=request.user, endpoint=payload.endpoint)
    return Status(204, None)


@router.post(
    "/push/devices",
    response={200: DeviceOut, 201: DeviceOut, **errors(400, 401, 403, 404, 413, 429)},
    throttle=push_throttle,
)
def device_save(request: HttpRequest, payload: DeviceIn) -> Status:
    """Register this app's token: 201, or 200 for a token already stored (one row);
    404 when this server does not push to that platform."""
    created = push.device_save(user=request.user, platform=payload.platform, token=payload.token)
    return Status(201 if created else 200, {"platform": payload.platform, "token": payload.token})


@router.delete(
    "/push/devices",
    response={204: None, **errors(400, 401, 403, 413, 429)},
    throttle=push_throttle,
)
def device_delete(request: HttpRequest, payload: DeviceIn) -> Status:
    """Forget this app's token (on logout): 204, whether it was stored or not."""
    push.device_delete(user=request.user, platform=payload.platform, token=payload.token)
    return Status(204, None)


@router.get("/settings", response={200: SettingsOut, **errors(401)})
def settings_get(request: HttpRequest) -> dict[str, Any]:
    return selectors.user_settings(request.user)


@router.patch(
    "/settings",
    response={200: SettingsOut, **errors(400, 401, 403, 413, 429)},
    throttle=push_throttle,
)
def settings_update(request: HttpRequest, payload: SettingsIn) -> dict[str, Any]:
    """Change the user's settings: ``previews`` (notifications show message text),
    ``read_receipts`` (the other side learns where I have read); ``hidden_words`` (a
    request holding one goes to the hidden folder); null or absent: as is."""
    return services.settings_update(
        user=request.user,
        previews=payload.previews,
        read_receipts=payload.read_receipts,
        hidden_words=payload.hidden_words,
    )
