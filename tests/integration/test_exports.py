"""A user's data export (issue 21, 5): the zip matches the database and holds every file;
only its owner downloads it, until it expires."""

from __future__ import annotations

import io
import json
import os
import time
import uuid
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from direct_messages import exports, services
from direct_messages.models import DataExport, DirectMessage
from tests.integration.test_attachments import media_root  # noqa: F401  (a fixture)
from tests.unit.test_attachment_processing import MEDIA_SAMPLES, png_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("media_root")]


@pytest.fixture(autouse=True)
def immediate_tasks(settings):
    """The endpoint's builds run as tasks: here at once, in process (the live test at
    the bottom runs them in a real worker)."""
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}


def send(user, other, text="", files=(), **extra):
    return services.message_send(
        sender=user, recipient=other, client_id=uuid.uuid4(), text=text, files=files, **extra
    ).message


def photo(name="p.png"):
    return SimpleUploadedFile(name, png_bytes(), content_type="image/png")


def wait_ready(client: Client, export_id: str) -> dict:
    for _ in range(200):
        body = client.get(f"/api/me/export/{export_id}").json()
        if body["status"] != "pending":
            return body
        time.sleep(0.05)
    raise AssertionError("the export did not finish")


def built(user) -> DataExport:
    """The user's export, asked for and built as the endpoint does (in the background)."""
    export = exports.export_request(user)
    for _ in range(200):
        export.refresh_from_db()
        if export.status != "pending":
            return export
        time.sleep(0.05)
    raise AssertionError("the export did not finish")


def unzip(data: bytes) -> tuple[dict, dict[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    return json.loads(files.pop("messages.json")), files


def test_the_export_is_every_message_both_ways_with_every_file(alice, bob, make_user, auth_client):
    carol = make_user("carol")
    first = send(alice, bob, "hello bob", files=[photo("one.png")])
    send(bob, alice, "hi alice", reply_to=first.pk)
    services.reaction_set(user=bob, room_key=first.room.key, message_id=first.pk, emoji_text="❤️")
    services.message_edit(user=alice, room_key=first.room.key, message_id=first.pk, text="hello!")
    audio = SimpleUploadedFile("v.m4a", MEDIA_SAMPLES["m4a"][0], content_type="audio/mp4")
    send(carol, alice, "", files=[audio])
    send(bob, carol, "not alice's")
    services.user_block(user=alice, account="carol")

    client = auth_client(alice)
    asked = client.post("/api/me/export")
    assert asked.status_code == 202 and asked.json()["status"] == "pending"
    ready = wait_ready(client, asked.json()["id"])
    assert ready["status"] == "ready" and ready["url"].endswith("/download")
    response = client.get(ready["url"])
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="instamg-dm-export.zip"'
    data, files = unzip(b"".join(response.streaming_content))

    assert data["user"]["account"] == "alice"
    assert [b["account"] for b in data["blocks"]] == ["carol"]
    assert data["settings"] == client.get("/api/settings").json()
    by_room = {c["with"]["account"]: c for c in data["conversations"]}
    assert set(by_room) == {"bob", "carol"}  # not bob's conversation with carol
    # Every message of hers, as the API renders it now (the edit, the reaction).
    for other, conversation in by_room.items():
        stored = DirectMessage.objects.filter(room__key=conversation["room"]).order_by("seq")
        assert [m["id"] for m in conversation["messages"]] == [m.pk for m in stored]
        history = client.get(f"/api/dm/{other}/messages").json()["results"]
        for exported, shown in zip(conversation["messages"], history, strict=True):
            for attachment in shown["attachments"]:
                del attachment["url"], attachment["thumbnail_url"]
            for attachment in exported["attachments"]:
                del attachment["file"]
            assert exported == shown
    hello = by_room["bob"]["messages"][0]
    assert hello["message"] == "hello!" and hello["reactions"][0]["emoji"] == "❤️"
    # Every file, byte for byte, where messages.json says it is.
    data, files = unzip(b"".join(client.get(ready["url"]).streaming_content))
    named = [
        a["file"] for c in data["conversations"] for m in c["messages"] for a in m["attachments"]
    ]
    assert sorted(named) == sorted(files) and len(files) == 2
    for message in DirectMessage.objects.filter(attachments__isnull=False):
        for row in message.attachments.all():
            with row.file.open("rb") as stored:
                assert files[f"attachments/{row.pk}-{row.name}"] == stored.read()


def test_view_once_files_and_cleared_messages_stay_out(alice, bob, auth_client):
    send(alice, bob, "before the clear")
    services.conversation_clear(user=bob, account="alice")
    send(alice, bob, "", files=[photo()], view_once=1)
    export = built(bob)
    with export.file.open("rb") as zipped:
        data, files = unzip(zipped.read())
    messages = data["conversations"][0]["messages"]
    assert [m["view_once"] for m in messages] == [1] and files == {}
    assert "file" not in messages[0]["attachments"][0]


def test_only_the_owner_downloads_and_only_until_it_expires(alice, bob, auth_client):
    send(alice, bob, "x")
    export = built(alice)
    url = f"/api/me/export/{export.pk}"
    assert auth_client(alice).get(f"{url}/download").status_code == 200
    # The attack: bob has the id (a shared screen, a log line).
    for path in (url, f"{url}/download"):
        assert auth_client(bob).get(path).status_code == 404
        assert Client().get(path).status_code == 401
    DataExport.objects.filter(pk=export.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert auth_client(alice).get(f"{url}/download").status_code == 404
    name = export.file.name
    exports.exports_purge()
    assert not DataExport.objects.exists() and not export.file.storage.exists(name)


def test_asking_again_while_one_is_pending_gives_the_same_export_built_once(alice):
    """Each request queues the build again (the first may have died), and however many
    builds run at once, one builds it."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    queued: list = []  # nothing builds until the builds below (no race with the asking)
    first = exports.export_request(alice, enqueue=queued.append)
    assert exports.export_request(alice, enqueue=queued.append).pk == first.pk
    assert queued == [first.pk, first.pk]

    def build(pk):
        try:
            return exports.export_build(pk)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(len(queued)) as pool:
        results = list(pool.map(build, queued))
    assert [result is None for result in sorted(results, key=bool)] == [True, False]
    assert exports.export_build(first.pk) is None  # never again once built
    first.refresh_from_db()
    assert first.status == "ready"


def test_a_build_whose_process_died_is_built_again(alice, bob):
    send(alice, bob, "x")
    stale = DataExport.objects.create(user=alice, started_at=timezone.now() - timedelta(hours=1))
    assert exports.export_build(stale.pk) is not None
    stale.refresh_from_db()
    assert stale.status == "ready" and stale.file


def test_a_user_erased_while_their_export_builds_leaves_no_zip(alice, bob, settings, monkeypatch):
    """The export's row goes with its user; the zip its build was writing must not stay
    in storage with nobody to delete it."""
    send(alice, bob, "mine", files=[photo()])
    write = exports.export_write

    def write_then_erase(user, out):
        data = write(user, out)
        type(user).objects.filter(pk=user.pk).first().delete()  # mid-build, by the host
        return data

    monkeypatch.setattr(exports, "export_write", write_then_erase)
    export = DataExport.objects.create(user=alice)
    assert exports.export_build(export.pk) is None
    assert not DataExport.objects.exists()
    assert [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()] == []


def test_the_management_command_writes_the_same_zip(alice, bob, tmp_path):
    send(alice, bob, "for the record", files=[photo()])
    out = tmp_path / "alice.zip"
    call_command("dm_export", "alice", output=str(out), stdout=io.StringIO())
    data, files = unzip(out.read_bytes())
    assert data["conversations"][0]["messages"][0]["message"] == "for the record"
    assert len(files) == 1


@pytest.mark.live
def test_the_worker_builds_the_export_asked_for_over_http(asgi_server_factory, worker):
    """The real thing: a server enqueues the build, a ``manage.py dm_worker`` process
    (another process; the database queue, or RQ's with REDIS_URL) runs it, the owner
    downloads it."""
    from tests.support import http_json, signup

    server = asgi_server_factory(os.environ.get("REDIS_URL") or None)
    alice, bob = signup(server.http), signup(server.http)
    sent = {"client_id": str(uuid.uuid4()), "message": "keep this"}
    assert (
        http_json("POST", f"{server.http}/api/dm/{bob['account']}/messages", sent, alice["token"])[
            0
        ]
        == 201
    )
    status, asked = http_json("POST", f"{server.http}/api/me/export", None, alice["token"])
    assert status == 202, asked
    worker.wait_for_tasks(1)
    status, ready = http_json(
        "GET", f"{server.http}/api/me/export/{asked['id']}", token=alice["token"]
    )
    assert status == 200 and ready["status"] == "ready", ready
    import urllib.request

    request = urllib.request.Request(
        server.http + ready["url"], headers={"Authorization": f"Bearer {alice['token']}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        data, _ = unzip(response.read())
    assert [m["message"] for m in data["conversations"][0]["messages"]] == ["keep this"]
