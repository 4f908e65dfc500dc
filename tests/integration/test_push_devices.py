"""Notifications to mobile apps (docs/notifications.md, "Mobile apps"): the devices
endpoint, and pushes through FCM and APNs stand-ins (tests/mobile_push_service.py) that
check each request as the real services do: OAuth and HTTP v1 for FCM, HTTP/2 with a
provider token for APNs. The decision and the queue are Web Push's (test_push.py)."""

import json
import uuid

import pytest
from django.core.management import call_command

from direct_messages import services
from direct_messages.models import PushDelivery, PushDevice
from tests.mobile_push_service import APNS_TOPIC, MobilePushService, apns_token, fcm_token

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def mobile(database_tasks, tmp_path, monkeypatch):
    """Both platforms configured against the stand-in, no delay and no backoff, and no
    Web Push (so every request seen is a mobile one); the tasks in the database, which
    ``dm_worker --batch`` runs here."""
    settings = database_tasks
    with MobilePushService(tmp_path) as service:
        for name, value in service.environ().items():
            monkeypatch.setenv(name, value)
        settings.DIRECT_MESSAGES = {
            **settings.DIRECT_MESSAGES,
            **service.settings(),
            "VAPID_PRIVATE_KEY": "",
            "PUSH_DELAY_SECONDS": 0.0,
            "PUSH_RETRY_BASE_SECONDS": 0.0,
            "PUSH_ATTEMPTS": 3,
            "PUSH_TIMEOUT_SECONDS": 5.0,
        }
        yield service


def register(client, platform, token, method="post"):
    body = json.dumps({"platform": platform, "token": token})
    return getattr(client, method)("/api/push/devices", body, "application/json")


def send(sender, recipient, text="hello", **extra):
    return services.message_send(
        sender=sender, recipient=recipient, client_id=uuid.uuid4(), text=text, **extra
    ).message


def run_worker():
    call_command("dm_worker", "--batch", verbosity=0)


@pytest.fixture
def bob_android(mobile, auth_client, bob):
    token = fcm_token()
    assert register(auth_client(bob), "fcm", token).status_code == 201
    return token


@pytest.fixture
def bob_iphone(mobile, auth_client, bob):
    token = apns_token()
    assert register(auth_client(bob), "apns", token).status_code == 201
    return token


def test_offline_recipient_with_an_fcm_device_gets_exactly_one_message(
    alice, bob, mobile, bob_android
):
    send(bob, alice, "a reply from before")
    send(alice, bob, "first")
    message = send(alice, bob, "second   message\nwith lines")
    run_worker()
    assert mobile.rejected == [] and [p.platform for p in mobile.pushes] == ["fcm", "fcm"]
    sent = mobile.pushes[1].body["message"]
    assert sent["token"] == bob_android
    room = message.room.key
    # What Android shows: one notification per conversation, replaced by the next.
    android = sent["android"]
    assert android["notification"]["title"] == "Alice"
    assert android["notification"]["body"] == "second message with lines"
    assert android["notification"]["notification_count"] == 2
    assert android["notification"]["tag"] == room
    assert android["collapse_key"] == room and android["priority"] == "high"
    assert sent["notification"] == {"title": "Alice", "body": "second message with lines"}
    assert sent["data"] == {"url": "/direct/t/alice/", "room": room, "message_id": str(message.pk)}
    # An iOS app registered through Firebase gets the same, as APNs understands it.
    assert sent["apns"]["headers"]["apns-collapse-id"] == room
    assert sent["apns"]["payload"]["aps"] == {"badge": 2, "thread-id": room}
    run_worker()
    assert len(mobile.pushes) == 2
    assert PushDelivery.objects.filter(device__isnull=False, state="sent").count() == 2


def test_offline_recipient_with_an_apns_device_gets_exactly_one_notification(
    alice, bob, mobile, bob_iphone
):
    send(bob, alice, "hi")
    message = send(alice, bob, "over HTTP/2")
    run_worker()
    assert mobile.rejected == []
    (push,) = mobile.pushes
    room = message.room.key
    assert push.platform == "apns" and push.token == bob_iphone
    assert push.headers["apns-topic"] == APNS_TOPIC
    assert push.headers["apns-collapse-id"] == room
    assert push.headers["apns-push-type"] == "alert" and push.headers["apns-priority"] == "10"
    assert int(push.headers["apns-expiration"]) > 0
    assert push.body["aps"] == {
        "alert": {"title": "Alice", "body": "over HTTP/2"},
        "badge": 1,
        "sound": "default",
        "thread-id": room,
    }
    assert push.body["url"] == "/direct/t/alice/" and push.body["message_id"] == message.pk
    # Through the proxy of HTTPS_PROXY, to Apple's development server (APNS_SANDBOX).
    assert mobile.tunnels == ["api.development.push.apple.com"]


def test_a_message_request_and_previews_off_show_no_text(
    alice, bob, auth_client, mobile, bob_android, bob_iphone
):
    send(alice, bob, "my secret first words")  # a request
    run_worker()
    shown = {p.platform: p.body for p in mobile.pushes}
    assert shown["fcm"]["message"]["notification"]["body"] == "Sent you a message request"
    assert shown["apns"]["aps"]["alert"]["body"] == "Sent you a message request"
    assert "secret" not in json.dumps(shown)

    services.conversation_accept(user=bob, account="alice")
    assert (
        auth_client(bob)
        .patch("/api/settings", json.dumps({"previews": False}), "application/json")
        .json()["previews"]
        is False
    )
    send(alice, bob, "private words")
    run_worker()
    later = {p.platform: p.body for p in mobile.pushes[2:]}
    assert later["fcm"]["message"]["notification"]["body"] == "Sent you a message"
    assert later["apns"]["aps"]["alert"]["body"] == "Sent you a message"


def test_read_or_muted_conversations_push_nothing(alice, bob, mobile, bob_android):
    send(bob, alice, "hi")
    message = send(alice, bob, "seen at once")
    services.room_mark_read(user=bob, account="alice", seq=message.seq)
    services.conversation_mute(user=bob, account="alice", muted=True)
    send(alice, bob, "while muted")
    run_worker()
    assert mobile.requests == []


@pytest.mark.parametrize(
    ("platform", "status"),
    [("fcm", 404), ("apns", 410), ("apns", 400)],  # UNREGISTERED, Unregistered, BadDeviceToken
)
def test_a_token_the_service_says_is_gone_deletes_the_device(
    alice, bob, auth_client, mobile, platform, status
):
    token = fcm_token() if platform == "fcm" else apns_token()
    assert register(auth_client(bob), platform, token).status_code == 201
    mobile.answers[token] = [status]
    send(bob, alice, "hi")
    send(alice, bob, "to an app that was uninstalled")
    run_worker()
    assert mobile.requests == [(platform, token)] and mobile.pushes == []
    assert not PushDevice.objects.exists()
    assert not PushDelivery.objects.exists()  # went with the device


def test_a_retried_task_sends_none_twice(alice, bob, mobile, bob_android, bob_iphone):
    from direct_messages import tasks

    send(bob, alice, "hi")
    message = send(alice, bob, "once only")
    tasks.notify_enqueue(message.pk, delay=0)  # the same notification, queued again
    run_worker()
    tasks.message_notify.call(message.pk)  # and once more, by hand
    assert sorted(p.platform for p in mobile.pushes) == ["apns", "fcm"]
    assert len(mobile.requests) == 2
    assert set(PushDelivery.objects.values_list("state", flat=True)) == {"sent"}


def test_timeouts_and_5xx_are_retried_with_the_task_then_given_up(
    alice, bob, mobile, bob_android, bob_iphone, caplog
):
    mobile.answers[bob_iphone] = [503, 500]  # then 200
    mobile.answers[bob_android] = [429]  # QUOTA_EXCEEDED (firebase-admin retries 5xx itself)
    send(bob, alice, "hi")
    first = send(alice, bob, "after failures")
    run_worker()
    assert mobile.requests.count(("apns", bob_iphone)) == 3
    assert mobile.requests.count(("fcm", bob_android)) == 2
    assert sorted(p.platform for p in mobile.pushes) == ["apns", "fcm"]
    deliveries = {d.device.platform: d for d in PushDelivery.objects.select_related("device")}
    assert deliveries["apns"].attempts == 3 and deliveries["fcm"].attempts == 2
    assert {d.state for d in deliveries.values()} == {"sent"}

    mobile.answers[bob_iphone] = [503] * 10
    second = send(alice, bob, "never accepted")
    with caplog.at_level("WARNING", logger="direct_messages.push"):
        run_worker()
    assert mobile.requests.count(("apns", bob_iphone)) == 3 + 3  # PUSH_ATTEMPTS
    device = PushDevice.objects.get(platform="apns")
    assert PushDelivery.objects.get(message=second, device=device).state == "gave_up"
    assert f"push of message {second.pk} to device {device.pk} given up after 3 attempts" in (
        caplog.text
    )
    assert first.pk != second.pk


def test_an_unreachable_service_is_retried(alice, bob, mobile, bob_iphone, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens
    send(bob, alice, "hi")
    message = send(alice, bob, "nobody home")
    run_worker()
    delivery = PushDelivery.objects.get(message=message)
    assert delivery.state == "gave_up" and delivery.attempts == 3
    assert PushDevice.objects.exists()


# --- The endpoint ------------------------------------------------------------------------


def test_registering_twice_keeps_one_row_and_deleting_removes_it(bob, auth_client, mobile):
    client, token = auth_client(bob), apns_token()
    assert register(client, "apns", token).status_code == 201
    again = register(client, "apns", token.upper())  # hex in either case is one token
    assert again.status_code == 200 and again.json()["platform"] == "apns"
    assert PushDevice.objects.get().token == token
    response = register(client, "apns", token, method="delete")
    assert response.status_code == 204 and not PushDevice.objects.exists()
    assert register(client, "apns", token, method="delete").status_code == 204


def test_a_token_another_user_registered_is_taken_over(alice, bob, auth_client, mobile):
    token = fcm_token()
    assert register(auth_client(alice), "fcm", token).status_code == 201
    assert register(auth_client(bob), "fcm", token).status_code == 200  # bob on alice's phone
    assert PushDevice.objects.get().user == bob
    # alice logging out of her old session deletes nothing of bob's.
    assert register(auth_client(alice), "fcm", token, method="delete").status_code == 204
    assert PushDevice.objects.get().user == bob


@pytest.mark.parametrize(
    "body",
    [
        {"platform": "gcm", "token": "x" * 40},
        {"platform": "fcm"},
        {"token": "a" * 64},
        {"platform": "fcm", "token": ""},
        {"platform": "fcm", "token": "short"},
        {"platform": "fcm", "token": "has spaces " * 5},
        {"platform": "fcm", "token": "x" * 501},
        {"platform": "apns", "token": "not hex at all, not at all, not at all, not at all."},
        {"platform": "apns", "token": "ab" * 16},  # 16 bytes
        {"platform": "apns", "token": None},
        [],
    ],
)
def test_a_malformed_device_is_400_invalid(bob, auth_client, mobile, body):
    for method in ("post", "delete"):
        response = getattr(auth_client(bob), method)(
            "/api/push/devices", json.dumps(body), "application/json"
        )
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
    assert not PushDevice.objects.exists()


def test_a_platform_not_configured_here_is_404(bob, auth_client, settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "FCM_CREDENTIALS": "", "APNS_KEY": ""}
    response = register(auth_client(bob), "fcm", fcm_token())
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "not_found",
            "detail": "push notifications to fcm devices are not configured here",
        }
    }
    assert register(auth_client(bob), "apns", apns_token()).status_code == 404
    assert register(auth_client(bob), "apns", apns_token(), method="delete").status_code == 204


def test_without_the_extra_the_endpoint_says_404(bob, auth_client, mobile, monkeypatch):
    from direct_messages import push_mobile

    monkeypatch.setattr(push_mobile, "_importable", lambda module: False)
    response = register(auth_client(bob), "apns", apns_token())
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_devices_need_credentials_and_are_throttled(bob, client, auth_client, mobile, settings):
    assert register(client, "fcm", fcm_token()).status_code == 401
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "PUSH_RATE": "2/min"}
    from django.core.cache import cache

    cache.clear()
    bob_client = auth_client(bob)
    statuses = [register(bob_client, "fcm", fcm_token()).status_code for _ in range(3)]
    assert statuses == [201, 201, 429]


def test_the_apns_provider_token_is_kept_between_20_and_60_minutes(mobile):
    """Apple refuses a provider token renewed more often than every 20 minutes
    (TooManyProviderTokenUpdates) and expires it after 60."""
    import jwt

    from direct_messages import push_mobile

    start = 2_000_000_000
    first = push_mobile.apns_provider_token(now=start)
    assert push_mobile.apns_provider_token(now=start + 39 * 60) == first
    renewed = push_mobile.apns_provider_token(now=start + 41 * 60)
    assert renewed != first
    assert jwt.decode(renewed, options={"verify_signature": False})["iat"] == start + 41 * 60
