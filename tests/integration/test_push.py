"""Web Push (docs/notifications.md): subscriptions, the decision, the queue, the push.

Pushes go to a push service stand-in (tests/push_service.py) that checks the VAPID
token as a real one does, and are decrypted with the subscription's own keys, as the
browser would. The queue is the real one: the notification is a django-tasks task in
the database, run by ``manage.py dm_worker``.
"""

import itertools
import json
import socket
import uuid

import pytest
from django.core.management import call_command

from direct_messages import presence, services
from direct_messages.models import ConversationWatch, PushDelivery, PushSubscription
from tests.push_service import BrowserSubscription, PushService

pytestmark = pytest.mark.django_db(transaction=True)

REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture
def push_settings(database_tasks):
    """No delay and no backoff (the worker runs what is due), and DEBUG, under which
    the stand-in's http://127.0.0.1 endpoint is accepted. The database backend, with
    REDIS_URL too: these tests read its task rows (test_push_live.py runs on RQ)."""
    settings = database_tasks
    settings.DEBUG = True
    settings.DIRECT_MESSAGES = {
        **settings.DIRECT_MESSAGES,
        "PUSH_DELAY_SECONDS": 0.0,
        "PUSH_RETRY_BASE_SECONDS": 0.0,
        "PUSH_ATTEMPTS": 3,
        "PUSH_TIMEOUT_SECONDS": 5.0,
    }
    return settings


@pytest.fixture
def push_service(push_settings, auth_client, bob):
    key = auth_client(bob).get("/api/push/vapid-public-key").json()["key"]
    with PushService(key) as service:
        yield service


def subscribe(client, subscription):
    return client.post(
        "/api/push/subscriptions", json.dumps(subscription.to_json()), "application/json"
    )


def send(sender, recipient, text="hello", **extra):
    return services.message_send(
        sender=sender, recipient=recipient, client_id=uuid.uuid4(), text=text, **extra
    ).message


def run_worker():
    call_command("dm_worker", "--batch", verbosity=0)


@pytest.fixture
def bob_browser(push_service, auth_client, bob):
    browser = push_service.subscription("bob")
    assert subscribe(auth_client(bob), browser).status_code == 201
    return browser


def test_offline_recipient_gets_exactly_one_push_with_name_preview_badge_and_url(
    alice, bob, push_service, bob_browser
):
    send(bob, alice, "a reply from before")  # bob has nothing unread from this one
    send(alice, bob, "first")
    send(alice, bob, "second   message\nwith lines")
    run_worker()
    pushes = push_service.pushes
    assert push_service.rejected == [] and len(pushes) == 2
    second = bob_browser.decrypt(pushes[1].body)
    lo, hi = sorted((alice.pk, bob.pk))
    assert second["title"] == "Alice"
    assert second["body"] == "second message with lines"
    assert second["badge"] == 2
    assert second["url"] == "/direct/t/alice/"
    assert second["tag"] == f"dm.{lo}.{hi}"
    # The VAPID token was for the endpoint's origin; the push asks for prompt delivery.
    assert pushes[1].claims["aud"] == push_service.origin
    assert pushes[1].headers["urgency"] == "high" and pushes[1].headers["ttl"]
    run_worker()  # nothing left to run
    assert len(push_service.pushes) == 2


def test_message_read_within_the_delay_makes_no_push(alice, bob, push_service, bob_browser):
    message = send(alice, bob, "seen at once")
    services.room_mark_read(user=bob, account="alice", seq=message.seq)
    run_worker()
    assert push_service.requests == []


def test_muted_conversation_makes_no_push(alice, bob, push_service, bob_browser):
    send(bob, alice, "hi")
    services.conversation_mute(user=bob, account="alice", muted=True)
    send(alice, bob, "while muted")
    run_worker()
    assert push_service.requests == []


def test_a_hidden_request_makes_no_push_and_no_badge(
    alice, bob, make_user, auth_client, push_service, bob_browser
):
    from direct_messages import tasks

    body = json.dumps({"hidden_words": ["spam"]})
    assert auth_client(bob).patch("/api/settings", body, "application/json").status_code == 200
    hidden = send(alice, bob, "SPAM offer")
    run_worker()
    assert push_service.requests == []
    assert tasks.message_notify.call(hidden.pk) == "hidden"
    send(make_user("carol", name="Carol"), bob, "an honest hello")  # a request, not hidden
    run_worker()
    (push,) = push_service.pushes
    assert bob_browser.decrypt(push.body)["badge"] == 1  # the hidden one is not counted


def test_a_hidden_message_makes_no_push_even_if_accepted_within_the_delay(
    alice, bob, push_settings, auth_client, push_service, bob_browser
):
    push_settings.DIRECT_MESSAGES = {**push_settings.DIRECT_MESSAGES, "HIDDEN_WORDS": ["spam"]}
    send(alice, bob, "spam offer")
    services.conversation_accept(user=bob, account="alice")
    run_worker()
    assert push_service.requests == [] and PushDelivery.objects.count() == 0
    send(alice, bob, "spam again, now accepted")  # no longer filtered: notifies
    run_worker()
    (push,) = push_service.pushes
    assert bob_browser.decrypt(push.body)["body"] == "spam again, now accepted"


def test_a_block_either_way_stops_a_pending_push(alice, bob, push_service, bob_browser):
    send(alice, bob, "before the block")
    services.user_block(user=alice, account="bob")  # the sender blocks: still no push
    run_worker()
    assert push_service.requests == []


async def test_a_socket_on_the_conversation_means_no_push(
    alice, bob, push_service, bob_browser, ws_connect
):
    from asgiref.sync import sync_to_async

    from direct_messages import tasks

    await sync_to_async(send)(bob, alice, "hi")
    bob_ws = await ws_connect("/ws/dm/alice/", bob)
    assert (await bob_ws.receive_json_from())["type"] == "room.joined"
    message = await sync_to_async(send)(alice, bob, "while bob looks")
    watching = sync_to_async(presence.store().watching)
    assert await watching(bob.pk, message.room.key)
    if isinstance(presence.store(), presence.MemoryPresence):
        # Also in the database, for the worker (another process) to see.
        stored = ConversationWatch.objects.filter(user=bob, room_key=message.room.key)
        assert await stored.acount() == 1
    # The worker's signal handlers need the main thread: the task is run here instead.
    assert await sync_to_async(tasks.message_notify.call)(message.pk) == "watching"
    assert push_service.requests == []
    await bob_ws.disconnect()
    assert not await watching(bob.pk, message.room.key)
    assert not await ConversationWatch.objects.aexists()
    assert await sync_to_async(tasks.message_notify.call)(message.pk) == "sent"
    assert len(push_service.pushes) == 1


def test_a_message_request_notifies_without_preview(alice, bob, push_service, bob_browser):
    send(alice, bob, "my secret first words")  # bob never wrote to alice: a request
    run_worker()
    (push,) = push_service.pushes
    shown = bob_browser.decrypt(push.body)
    assert shown["title"] == "Alice" and "secret" not in json.dumps(shown)
    assert shown["body"] == "Sent you a message request"


def test_previews_off_hides_the_text(alice, bob, auth_client, push_service, bob_browser):
    response = auth_client(bob).patch(
        "/api/settings", json.dumps({"previews": False}), "application/json"
    )
    assert response.status_code == 200 and response.json()["previews"] is False
    assert auth_client(bob).get("/api/settings").json()["previews"] is False
    send(bob, alice, "hi")
    send(alice, bob, "private words")
    run_worker()
    (push,) = push_service.pushes
    assert bob_browser.decrypt(push.body)["body"] == "Sent you a message"


def test_an_attachment_is_previewed_by_its_kind(alice, bob, push_service, bob_browser):
    from direct_messages.models import DirectMessageAttachFiles

    send(bob, alice, "hi")
    upload = DirectMessageAttachFiles.objects.create(
        uploader=alice, file="dm/x.webp", kind="image", content_type="image/webp", size=10
    )
    send(alice, bob, "", attachment_ids=[upload.pk])
    run_worker()
    (push,) = push_service.pushes
    assert bob_browser.decrypt(push.body)["body"] == "Photo"


def test_gone_subscription_is_deleted(alice, bob, push_service, bob_browser):
    push_service.answers["bob"] = [410]
    send(bob, alice, "hi")
    send(alice, bob, "to a browser that unsubscribed")
    run_worker()
    assert push_service.requests == ["/push/bob"] and push_service.pushes == []
    assert not PushSubscription.objects.filter(user=bob).exists()


def test_the_same_task_run_twice_pushes_once(alice, bob, push_service, bob_browser):
    from direct_messages import tasks

    message = send(alice, bob, "once only")
    tasks.notify_enqueue(message.pk, delay=0)  # the same notification, queued again
    run_worker()
    tasks.message_notify.call(message.pk)  # and run once more, by hand
    assert len(push_service.pushes) == 1
    assert PushDelivery.objects.get(message=message).state == PushDelivery.State.SENT


def test_a_failing_push_service_is_retried_then_given_up_once(
    alice, bob, push_service, bob_browser, caplog
):
    push_service.answers["bob"] = [503, 500]  # then 201
    send(bob, alice, "hi")
    first = send(alice, bob, "after two failures")
    run_worker()  # the retries are due at once here (no backoff)
    assert push_service.requests == ["/push/bob"] * 3 and len(push_service.pushes) == 1
    delivery = PushDelivery.objects.get(message=first)
    assert delivery.state == PushDelivery.State.SENT and delivery.attempts == 3

    push_service.answers["bob"] = [503] * 10
    second = send(alice, bob, "never accepted")
    with caplog.at_level("WARNING", logger="direct_messages.push"):
        run_worker()
    assert push_service.requests.count("/push/bob") == 3 + 3  # PUSH_ATTEMPTS
    assert PushDelivery.objects.get(message=second).state == PushDelivery.State.GAVE_UP
    assert [r.getMessage() for r in caplog.records if "given up" in r.getMessage()] == [
        f"push of message {second.pk} to subscription "
        f"{PushSubscription.objects.get().pk} given up after 3 attempts"
    ]


def test_push_failure_never_fails_a_send(alice, bob, push_settings, auth_client, monkeypatch):
    """The queue itself failing (not just the push service): the send is stored and
    answered as usual."""
    from direct_messages import tasks

    PushSubscription.objects.create(
        user=bob, endpoint="https://push.example.com/x", p256dh="x", auth="y"
    )

    def broken(*args, **kwargs):
        raise RuntimeError("queue down")

    monkeypatch.setattr(tasks, "notify_enqueue", broken)
    body = {"client_id": str(uuid.uuid4()), "message": "still sent"}
    response = auth_client(alice).post("/api/dm/bob/messages", json.dumps(body), "application/json")
    assert response.status_code == 201


# --- Subscriptions -------------------------------------------------------------------


def test_subscribing_twice_keeps_one_row_and_unsubscribing_deletes_it(
    bob, auth_client, push_service
):
    browser = push_service.subscription("bob")
    client = auth_client(bob)
    assert subscribe(client, browser).status_code == 201
    again = subscribe(client, browser)
    assert again.status_code == 200 and again.json() == {"endpoint": browser.endpoint}
    assert PushSubscription.objects.filter(endpoint=browser.endpoint).count() == 1
    response = client.delete(
        "/api/push/subscriptions", json.dumps({"endpoint": browser.endpoint}), "application/json"
    )
    assert response.status_code == 204 and not PushSubscription.objects.exists()


def test_vapid_public_key_is_an_uncompressed_p256_point(bob, auth_client, push_settings):
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.push_service import b64url_decode

    response = auth_client(bob).get("/api/push/vapid-public-key")
    point = b64url_decode(response.json()["key"])
    assert len(point) == 65 and point[0] == 4
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


def test_vapid_keys_command_prints_a_pair_the_app_accepts(capsys, push_settings, bob, auth_client):
    call_command("dm_vapid_keys")
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.split())
    push_settings.DIRECT_MESSAGES = {
        **push_settings.DIRECT_MESSAGES,
        "VAPID_PRIVATE_KEY": lines["VAPID_PRIVATE_KEY"],
    }
    key = auth_client(bob).get("/api/push/vapid-public-key").json()["key"]
    assert key == lines["VAPID_PUBLIC_KEY"]


@pytest.mark.parametrize(
    "change",
    [
        {"endpoint": ""},
        {"endpoint": "not a url"},
        {"keys": {"p256dh": "AAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}},  # not a point
        {"keys": {"p256dh": None, "auth": "x"}},
        {"auth_len": 8},
        {"keys": None},
    ],
)
def test_malformed_subscription_is_400_invalid(bob, auth_client, push_service, change):
    body = push_service.subscription("bob").to_json()
    if "auth_len" in change:
        body["keys"]["auth"] = "AAAAAAAAAAA"  # 8 bytes
    else:
        body.update(change)
    response = auth_client(bob).post(
        "/api/push/subscriptions", json.dumps(body), "application/json"
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
    assert not PushSubscription.objects.exists()


# --- The endpoint URL policy, as attacks --------------------------------------------------


def resolving(monkeypatch, names):
    """DNS as an attacker's zone would answer: ``names`` resolve to the given address."""

    def getaddrinfo(host, port, *args, **kwargs):
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port))]
        return REAL_GETADDRINFO(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "https://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/push",
        "https://10.0.0.1/push",
        "https://192.168.1.1/push",
        "https://100.64.0.1/push",  # carrier-grade NAT
        "https://localhost/push",
        "https://127.0.0.1/push",
        "https://[::1]/push",
        "https://[::ffff:127.0.0.1]/push",
        "https://[fe80::1]/push",
        "http://localhost:8000/push",  # DEBUG lets http://127.0.0.1 only
        "https://user:pw@push.example.com/push",
        "ftp://push.example.com/push",
        "https://rebind.attacker.example/push",  # a public-looking name for loopback
        "https://internal.attacker.example/push",
    ],
)
def test_subscription_to_a_non_public_endpoint_is_refused(
    bob, auth_client, push_settings, monkeypatch, endpoint
):
    resolving(
        monkeypatch,
        {"rebind.attacker.example": "127.0.0.1", "internal.attacker.example": "10.1.2.3"},
    )
    body = BrowserSubscription(endpoint).to_json()
    response = auth_client(bob).post(
        "/api/push/subscriptions", json.dumps(body), "application/json"
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
    assert "endpoint" in response.json()["error"]["detail"]


def test_http_loopback_is_refused_without_debug(bob, auth_client, push_settings):
    push_settings.DEBUG = False
    response = subscribe(auth_client(bob), BrowserSubscription("http://127.0.0.1:9/push/bob"))
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"


def test_a_name_rebound_to_loopback_after_subscribing_is_never_pushed_to(
    alice, bob, auth_client, push_service, monkeypatch
):
    """Public when subscribed, loopback when the push is due (DNS rebinding): the push
    is not sent and the subscription is deleted."""
    zone = {"push.attacker.example": "93.184.216.34"}
    resolving(monkeypatch, zone)
    browser = push_service.subscription("bob")
    browser.endpoint = f"https://push.attacker.example:{push_service.port}/push/bob"
    assert subscribe(auth_client(bob), browser).status_code == 201
    zone["push.attacker.example"] = "127.0.0.1"
    send(bob, alice, "hi")
    send(alice, bob, "hello")
    run_worker()
    assert push_service.requests == []
    assert not PushSubscription.objects.exists()


def test_unsubscribing_someone_elses_endpoint_deletes_nothing(
    alice, bob, auth_client, push_service
):
    browser = push_service.subscription("bob")
    assert subscribe(auth_client(bob), browser).status_code == 201
    response = auth_client(alice).delete(
        "/api/push/subscriptions", json.dumps({"endpoint": browser.endpoint}), "application/json"
    )
    assert response.status_code == 204
    assert PushSubscription.objects.get().user == bob


def test_a_name_that_passes_the_check_then_connects_to_loopback_is_refused(
    alice, bob, auth_client, push_service, monkeypatch, caplog
):
    """DNS rebinding with a zero TTL: the name resolves to a public address for every
    check, and to loopback for the connection itself. The connection is refused before
    a byte is sent, and the subscription deleted."""
    public, loopback = "93.184.216.34", "127.0.0.1"
    # Subscribing checks once; then each attempt checks, and connects.
    answers = itertools.chain([public], itertools.cycle([public, loopback]))

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "push.attacker.example":
            address = next(answers)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return REAL_GETADDRINFO(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    browser = push_service.subscription("bob")
    browser.endpoint = f"https://push.attacker.example:{push_service.port}/push/bob"
    assert subscribe(auth_client(bob), browser).status_code == 201
    send(bob, alice, "hi")
    send(alice, bob, "hello")
    with caplog.at_level("WARNING", logger="direct_messages.push"):
        run_worker()
    assert push_service.requests == []
    assert not PushSubscription.objects.exists()
    assert "endpoint: reached 127.0.0.1" in caplog.text


def test_a_worker_that_died_mid_push_loses_no_notification(alice, bob, push_service, bob_browser):
    """The task was claimed and the push claimed, then the worker died: the next worker
    runs the task again and takes the abandoned push over, once."""
    import datetime as dt

    from django.utils import timezone
    from django_tasks import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    send(bob, alice, "hi")
    message = send(alice, bob, "do not lose me")
    long_ago = timezone.now() - dt.timedelta(minutes=10)
    task = DBTaskResult.objects.get()
    DBTaskResult.objects.filter(pk=task.pk).update(
        status=TaskResultStatus.RUNNING, started_at=long_ago, worker_ids=["dead"]
    )
    PushDelivery.objects.create(
        message=message, subscription=PushSubscription.objects.get(), claimed_at=long_ago
    )
    run_worker()
    (push,) = push_service.pushes
    assert bob_browser.decrypt(push.body)["body"] == "do not lose me"
    assert PushDelivery.objects.get().state == PushDelivery.State.SENT
    task.refresh_from_db()
    assert task.status == TaskResultStatus.SUCCESSFUL


def test_a_push_another_worker_is_sending_now_is_left_to_it(alice, bob, push_service, bob_browser):
    from direct_messages import tasks

    send(bob, alice, "hi")
    message = send(alice, bob, "being sent elsewhere")
    PushDelivery.objects.create(message=message, subscription=PushSubscription.objects.get())
    assert tasks.message_notify.call(message.pk) == "none sent"
    assert push_service.requests == []


def test_a_message_unsent_within_the_delay_makes_no_push(alice, bob, push_service, bob_browser):
    send(bob, alice, "hi")
    message = send(alice, bob, "oops")
    services.message_unsend(user=alice, room_key=message.room.key, message_id=message.pk)
    run_worker()
    assert push_service.requests == []


def test_edits_and_reactions_notify_nobody(alice, bob, push_service, bob_browser):
    from django_tasks_db.models import DBTaskResult

    send(bob, alice, "hi")
    message = send(alice, bob, "typo")
    run_worker()
    assert len(push_service.pushes) == 1
    queued = DBTaskResult.objects.count()
    services.message_edit(
        user=alice, room_key=message.room.key, message_id=message.pk, text="fixed"
    )
    services.reaction_set(
        user=alice, room_key=message.room.key, message_id=message.pk, emoji_text="👍"
    )
    run_worker()
    assert DBTaskResult.objects.count() == queued and len(push_service.pushes) == 1


def test_a_name_server_that_never_answers_costs_a_subscription_request_little(
    bob, auth_client, push_settings, monkeypatch
):
    import time

    from direct_messages import push

    def slow(host, port, *args, **kwargs):
        if host == "slow.attacker.example":
            time.sleep(1.5)
        return REAL_GETADDRINFO(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    monkeypatch.setattr(push, "RESOLVE_TIMEOUT_SECONDS", 0.2)
    started = time.monotonic()
    response = subscribe(auth_client(bob), BrowserSubscription("https://slow.attacker.example/p"))
    assert time.monotonic() - started < 1.0
    assert response.status_code == 400
    assert response.json()["error"]["detail"] == "endpoint: the host does not resolve in time"


def test_a_deferred_notification_is_due_on_a_whole_second_after_its_delay(push_settings):
    """RQ's scheduler keeps whole seconds and drops the fraction: a task due at
    12:00:01.7 would run at 12:00:01, before its delay is over (CI once saw a push 1.5 s
    into a 2 s delay). The app rounds the time up, on every backend."""
    import datetime as dt

    from django.utils import timezone
    from django_tasks_db.models import DBTaskResult

    from direct_messages import tasks

    before = timezone.now()
    tasks.notify_enqueue(1, delay=1.25)
    run_after = DBTaskResult.objects.get().run_after
    assert run_after.microsecond == 0
    assert before + dt.timedelta(seconds=1.25) <= run_after
    assert run_after < before + dt.timedelta(seconds=2.25)
