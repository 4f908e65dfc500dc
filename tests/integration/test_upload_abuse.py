"""Uploads are cheap to send and expensive to process: each test here is an attack.

Too many uploads in a minute, a pile of uploads never sent, a burst of large images at
once, unclaimed files left to rot: each is refused or cleaned up by the server itself.
Local storage; the S3 side of the purge is in test_attachments_storage.py.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.test import Client

from direct_messages import attachments
from direct_messages.models import DirectMessage, DirectMessageAttachFiles
from tests.unit.test_attachment_processing import MEDIA_SAMPLES, png_bytes

pytestmark = pytest.mark.django_db(transaction=True)

MP4 = MEDIA_SAMPLES["mp4"][0]


@pytest.fixture(autouse=True)
def media_root(settings: Any, tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = root
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    }
    return root


@pytest.fixture
def limits(settings: Any) -> Any:
    """Set some ``DIRECT_MESSAGES`` keys for this test."""

    def apply(**values: Any) -> None:
        settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, **values}

    return apply


@pytest.fixture(autouse=True)
def _no_background_purge(limits: Any) -> None:
    """Purges start only in the tests that are about them."""
    limits(PURGE_INTERVAL_SECONDS=0)


def stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def upload(client: Client, data: bytes | None = None, name: str = "a.png") -> Any:
    data = png_bytes() if data is None else data
    return client.post("/api/attachments", {"file": SimpleUploadedFile(name, data)})


def send_files(client: Client, account: str, count: int) -> Any:
    files = [SimpleUploadedFile(f"{i}.png", png_bytes(8, 8)) for i in range(count)]
    return client.post(
        f"/api/dm/{account}/messages", {"client_id": str(uuid.uuid4()), "files": files}
    )


def send_ids(client: Client, account: str, ids: list[int]) -> Any:
    import json

    body = {"client_id": str(uuid.uuid4()), "message": "", "attachment_ids": ids}
    return client.post(
        f"/api/dm/{account}/messages", json.dumps(body), content_type="application/json"
    )


def error(response: Any) -> tuple[int, str]:
    return response.status_code, str(response.json()["error"]["code"])


@pytest.fixture
def processed(monkeypatch: Any) -> list[int]:
    """Counts the files that reached recognition and cleaning (the expensive part)."""
    calls: list[int] = []
    real = attachments.upload_process

    def counting(fp: Any) -> Any:
        calls.append(1)
        return real(fp)

    monkeypatch.setattr(attachments, "upload_process", counting)
    return calls


# --- The upload rate --------------------------------------------------------------------


def test_uploads_over_the_rate_are_refused_before_any_processing(
    alice, auth_client, limits, media_root, processed
):
    limits(UPLOAD_RATE_LIMIT=3, UPLOAD_RATE_WINDOW_SECONDS=60)
    client = auth_client(alice)
    assert [upload(client).status_code for _ in range(3)] == [201, 201, 201]
    files_before = stored_files(media_root)
    refused = upload(client)
    assert error(refused) == (429, "rate_limited")
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert len(processed) == 3  # the fourth file was never decoded
    assert DirectMessageAttachFiles.objects.count() == 3
    assert stored_files(media_root) == files_before


def test_retry_after_says_when_the_window_has_room_again(alice, auth_client, limits):
    limits(UPLOAD_RATE_LIMIT=2, UPLOAD_RATE_WINDOW_SECONDS=60)
    client = auth_client(alice)
    upload(client)
    upload(client)
    oldest = DirectMessageAttachFiles.objects.order_by("pk").first()
    assert oldest is not None
    DirectMessageAttachFiles.objects.filter(pk=oldest.pk).update(
        created_at=oldest.created_at - dt.timedelta(seconds=50)
    )
    refused = upload(client)
    assert refused.status_code == 429 and 9 <= int(refused["Retry-After"]) <= 11
    DirectMessageAttachFiles.objects.filter(pk=oldest.pk).update(
        created_at=oldest.created_at - dt.timedelta(seconds=61)
    )
    assert upload(client).status_code == 201  # the oldest left the window


def test_the_rate_is_per_user(alice, bob, auth_client, limits):
    limits(UPLOAD_RATE_LIMIT=1)
    assert upload(auth_client(alice)).status_code == 201
    assert upload(auth_client(alice)).status_code == 429
    assert upload(auth_client(bob)).status_code == 201


def test_files_of_a_multipart_send_count_as_uploads(
    alice, bob, auth_client, limits, media_root, processed
):
    limits(UPLOAD_RATE_LIMIT=3)
    client = auth_client(alice)
    assert upload(client).status_code == 201
    refused = send_files(client, "bob", 3)  # 1 + 3 > 3
    assert error(refused) == (429, "rate_limited")
    assert len(processed) == 1
    assert not DirectMessage.objects.exists()
    assert DirectMessageAttachFiles.objects.count() == 1 and len(stored_files(media_root)) == 2
    assert send_files(client, "bob", 2).status_code == 201
    assert error(upload(client)) == (429, "rate_limited")  # sent files counted too


def test_concurrent_uploads_never_pass_the_rate(alice, auth_client, limits):
    """Every request passes the early count together; the count in the row's own
    transaction, under the uploader's lock, is the one that holds."""
    limits(UPLOAD_RATE_LIMIT=3)
    clients = [auth_client(alice) for _ in range(8)]
    start = threading.Barrier(len(clients))
    statuses: list[int] = []

    def one(client: Client) -> None:
        try:
            start.wait(10)
            statuses.append(upload(client).status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [201] * 3 + [429] * 5
    assert DirectMessageAttachFiles.objects.count() == 3


# --- The quota of unclaimed uploads -----------------------------------------------------


def test_unclaimed_uploads_are_capped_in_number(alice, bob, auth_client, limits, media_root):
    limits(UNCLAIMED_MAX_FILES=2)
    client = auth_client(alice)
    first = upload(client).json()["id"]
    assert upload(client).status_code == 201
    refused = upload(client)
    assert error(refused) == (413, "too_large")
    assert "not yet sent" in refused.json()["error"]["detail"]
    assert len(stored_files(media_root)) == 4  # two photos, two thumbnails
    assert send_ids(client, "bob", [first]).status_code == 201  # one leaves the quota
    assert upload(client).status_code == 201


def test_unclaimed_uploads_are_capped_in_bytes(alice, auth_client, limits, media_root):
    limits(UNCLAIMED_MAX_BYTES=2 * len(MP4) + 10)
    client = auth_client(alice)
    assert upload(client, MP4, "a.mp4").status_code == 201
    assert upload(client, MP4, "b.mp4").status_code == 201
    refused = upload(client, MP4, "c.mp4")
    assert error(refused) == (413, "too_large")
    assert DirectMessageAttachFiles.objects.count() == 2 and len(stored_files(media_root)) == 2


def test_a_multipart_send_is_not_held_by_the_unclaimed_quota(alice, bob, auth_client, limits):
    limits(UNCLAIMED_MAX_FILES=1)
    client = auth_client(alice)
    assert upload(client).status_code == 201
    assert send_files(client, "bob", 3).status_code == 201  # claimed at once


# --- Decoding, a few images at a time ---------------------------------------------------


def test_an_image_that_waits_too_long_to_be_decoded_is_rate_limited(
    alice, auth_client, limits, media_root
):
    limits(IMAGE_DECODE_CONCURRENCY=1, IMAGE_DECODE_WAIT_SECONDS=0.2)
    slot = attachments._decode_slots(1)
    assert slot.acquire(timeout=5)  # another upload is decoding
    try:
        refused = upload(auth_client(alice))
        video = upload(auth_client(alice), MP4, "clip.mp4")
    finally:
        slot.release()
    assert error(refused) == (429, "rate_limited") and refused["Retry-After"] == "1"
    assert video.status_code == 201  # video and audio are not decoded: no slot needed
    assert DirectMessageAttachFiles.objects.count() == 1
    assert upload(auth_client(alice)).status_code == 201


# --- Unclaimed uploads purged by the server itself --------------------------------------


def test_an_expired_unclaimed_upload_is_purged_without_running_the_command(
    alice, bob, auth_client, limits, media_root
):
    limits(PURGE_INTERVAL_SECONDS=300)
    client = auth_client(alice)
    old = DirectMessageAttachFiles.objects.get(pk=upload(client).json()["id"])
    old_sent = upload(client).json()["id"]
    assert send_ids(client, "bob", [old_sent]).status_code == 201
    two_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    DirectMessageAttachFiles.objects.update(created_at=two_days_ago)
    attachments.purge_schedule.reset()

    fresh = upload(client).json()["id"]  # any upload starts the purge
    attachments.purge_schedule.join(30)

    assert set(DirectMessageAttachFiles.objects.values_list("pk", flat=True)) == {
        old_sent,
        fresh,
    }
    assert not (media_root / old.file.name).exists()
    assert not (media_root / old.thumbnail.name).exists()
    assert len(stored_files(media_root)) == 4


def test_the_purge_runs_at_most_once_per_interval(alice, auth_client, limits):
    limits(PURGE_INTERVAL_SECONDS=300)
    attachments.purge_schedule.reset()
    first = attachments.purge_schedule.poke()
    assert first is not None
    first.join(30)
    assert attachments.purge_schedule.poke() is None  # within the interval
    limits(PURGE_INTERVAL_SECONDS=0)
    attachments.purge_schedule.reset()
    assert attachments.purge_schedule.poke() is None  # 0: left to the command
