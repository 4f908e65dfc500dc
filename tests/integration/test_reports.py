"""Reports (issue 21, 1): what a report keeps, and what moderators do from the admin."""

from __future__ import annotations

import json
import uuid

import pytest
from django.contrib.admin.models import LogEntry
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from direct_messages import services
from direct_messages.models import Block, DirectMessage, Report, ReportedMessage
from tests.integration.test_attachments import media_root  # noqa: F401  (a fixture)
from tests.unit.test_attachment_processing import png_bytes

pytestmark = pytest.mark.django_db(transaction=True)


def send(user, other, text="hi", **extra):
    return services.message_send(
        sender=user, recipient=other, client_id=uuid.uuid4(), text=text, **extra
    ).message


def report(client: Client, account: str, **body):
    return client.post(f"/api/dm/{account}/report", json.dumps(body), "application/json")


def test_a_report_keeps_the_picked_messages_and_their_context_whatever_happens_after(
    alice, bob, auth_client
):
    sent = [send(alice if i % 2 else bob, bob if i % 2 else alice, f"m{i}") for i in range(20)]
    bad = sent[11]  # from alice
    answer = report(
        auth_client(bob), "alice", reason="harassment", note="see", message_ids=[bad.pk]
    )
    assert answer.status_code == 201
    created = Report.objects.get(pk=answer.json()["id"])
    assert (created.reporter, created.reported, created.reason) == (bob, alice, "harassment")
    rows = list(created.messages.all())
    assert [r.seq for r in rows] == list(range(bad.seq - 5, bad.seq + 6))  # 5 on each side
    assert [r.picked for r in rows] == [r.seq == bad.seq for r in rows]
    # The sender unsends it and both clear the conversation: the copy stays.
    services.message_unsend(user=alice, room_key=bad.room.key, message_id=bad.pk)
    services.conversation_clear(user=alice, account="bob")
    services.conversation_clear(user=bob, account="alice")
    assert DirectMessage.objects.get(pk=bad.pk).message == ""
    kept = ReportedMessage.objects.get(report=created, picked=True)
    assert kept.text == "m11" and kept.sender == alice and kept.message_id == bad.pk


@pytest.mark.usefixtures("media_root")
def test_a_reported_photo_is_copied_and_survives_the_unsend(alice, bob, auth_client):
    photo = SimpleUploadedFile("p.png", png_bytes(), content_type="image/png")
    message = send(alice, bob, "", files=[photo])
    answer = report(auth_client(bob), "alice", reason="nudity", message_ids=[message.pk])
    copy = ReportedMessage.objects.get(report_id=answer.json()["id"], picked=True).attachments
    assert [c["kind"] for c in copy] == ["image"]
    services.message_unsend(user=alice, room_key=message.room.key, message_id=message.pk)
    assert default_storage.exists(copy[0]["file"])
    with default_storage.open(copy[0]["file"]) as kept:
        assert kept.read()[:8] == b"\x89PNG\r\n\x1a\n"
    default_storage.delete(copy[0]["file"])


def test_a_whole_conversation_from_a_request_can_be_reported_and_blocked(alice, bob, auth_client):
    for i in range(25):
        send(alice, bob, f"buy {i}")
    answer = report(auth_client(bob), "alice", reason="spam", block=True)
    assert answer.status_code == 201
    kept = ReportedMessage.objects.filter(report_id=answer.json()["id"])
    assert [r.text for r in kept] == [f"buy {i}" for i in range(5, 25)]  # the latest 20
    assert not kept.filter(picked=True).exists()
    assert Block.objects.filter(blocker=bob, blocked=alice).exists()
    # Blocked, bob can still report more of it.
    assert report(auth_client(bob), "alice", reason="scam").status_code == 201


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"reason": "boring"}, 400),
        ({}, 400),
        ({"reason": "spam", "note": "x" * 1001}, 400),
        ({"reason": "spam", "message_ids": list(range(1, 12))}, 400),
        ({"reason": "spam", "message_ids": ["x"]}, 400),
    ],
)
def test_malformed_reports_are_invalid_and_store_nothing(alice, bob, auth_client, body, status):
    send(alice, bob)
    answer = report(auth_client(bob), "alice", **body)
    assert answer.status_code == status and answer.json()["error"]["code"] == "invalid"
    assert not Report.objects.exists()


def test_one_can_report_only_messages_of_ones_own_conversation(alice, bob, make_user, auth_client):
    """The attack: carol picks the id of a message between alice and bob."""
    carol = make_user("carol")
    private = send(alice, bob, "private")
    send(carol, alice, "hello")
    answer = report(auth_client(carol), "alice", reason="spam", message_ids=[private.pk])
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid"
    # ...nor a conversation that does not exist, nor without a token.
    assert report(auth_client(carol), "bob", reason="spam").status_code == 404
    assert report(Client(), "alice", reason="spam").status_code == 401
    assert not Report.objects.exists()


def test_a_cleared_message_cannot_be_picked(alice, bob, auth_client):
    old = send(alice, bob, "old")
    services.conversation_clear(user=bob, account="alice")
    answer = report(auth_client(bob), "alice", reason="spam", message_ids=[old.pk])
    assert answer.status_code == 400


# --- The moderation queue ----------------------------------------------------------------


@pytest.fixture
def moderator(make_user):
    user = make_user("mod", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return user, client


def admin_action(client: Client, action: str, *reports: Report):
    return client.post(
        "/admin/direct_messages/report/",
        {"action": action, "_selected_action": [r.pk for r in reports]},
    )


def test_the_queue_shows_a_report_with_its_copy(alice, bob, auth_client, moderator):
    bad = send(alice, bob, "the reported words")
    answer = report(auth_client(bob), "alice", reason="harassment", message_ids=[bad.pk])
    _, client = moderator
    listing = client.get("/admin/direct_messages/report/?status__exact=open")
    assert listing.status_code == 200 and b"harassment" in listing.content
    page = client.get(f"/admin/direct_messages/report/{answer.json()['id']}/change/")
    assert page.status_code == 200 and b"the reported words" in page.content


def test_deleting_the_reported_messages_removes_them_for_both_and_is_logged(
    alice, bob, auth_client, moderator
):
    bad, fine = send(alice, bob, "bad"), send(alice, bob, "fine")
    services.user_block(user=bob, account="alice")  # a blocked pair: still removable
    created = Report.objects.get(
        pk=report(auth_client(bob), "alice", reason="spam", message_ids=[bad.pk]).json()["id"]
    )
    user, client = moderator
    assert admin_action(client, "remove_messages", created).status_code == 302
    bad.refresh_from_db()
    fine.refresh_from_db()
    assert bad.unsent_at is not None and bad.message == "" and fine.message == "fine"
    created.refresh_from_db()
    assert (created.status, created.resolved_by) == ("actioned", user)
    logged = LogEntry.objects.get(object_id=str(created.pk))
    assert logged.user == user and "1 message(s) removed" in logged.get_change_message()
    assert ReportedMessage.objects.get(report=created, picked=True).text == "bad"


def test_suspending_deactivates_the_reported_user_and_dismissing_only_closes(
    alice, bob, auth_client, moderator
):
    send(alice, bob)
    first = Report.objects.get(pk=report(auth_client(bob), "alice", reason="scam").json()["id"])
    second = Report.objects.get(pk=report(auth_client(bob), "alice", reason="spam").json()["id"])
    user, client = moderator
    admin_action(client, "dismiss", second)
    alice.refresh_from_db()
    assert alice.is_active and Report.objects.get(pk=second.pk).status == "dismissed"
    token = auth_client(alice)
    assert token.get("/api/inbox").status_code == 200
    admin_action(client, "suspend_reported", first, second)  # the dismissed one is skipped
    alice.refresh_from_db()
    assert not alice.is_active and token.get("/api/inbox").status_code == 401
    alice.is_active = True  # reactivated: the tokens from before stay revoked
    alice.save()
    assert token.get("/api/inbox").status_code == 401
    assert auth_client(alice).get("/api/inbox").status_code == 200
    assert Report.objects.get(pk=first.pk).status == "actioned"
    assert Report.objects.get(pk=second.pk).status == "dismissed"
    assert LogEntry.objects.filter(user=user).count() == 2
