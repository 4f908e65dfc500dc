"""Attachments over the HTTP API (and one WebSocket send), on local storage.

Upload, refusals that leave nothing behind, claiming by a send (JSON, multipart and
WebSocket), who may download, how files are served, and the purge command.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from PIL import Image

from direct_messages.attachments import attachment_files_delete
from direct_messages.models import DirectMessage, DirectMessageAttachFiles, Room
from tests.unit.test_attachment_processing import (
    BAD_SAMPLES,
    MEDIA_SAMPLES,
    jpeg_with_gps_and_orientation,
    mp3_bytes,
    png_bytes,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("send_path")]

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def media_root(settings: Any, tmp_path: Path) -> Path:
    """Local storage in a directory of this test's own, and uploads' temporary files in
    another, so that a test can see exactly what was left behind."""
    root = tmp_path / "media"
    root.mkdir()
    (tmp_path / "uploads").mkdir()
    settings.MEDIA_ROOT = root
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "uploads")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    }
    return root


def stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def upload(client: Client, data: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg"):
    return client.post(
        "/api/attachments", {"file": SimpleUploadedFile(name, data, content_type=content_type)}
    )


def uploaded_id(client: Client, data: bytes | None = None, name: str = "photo.png") -> int:
    response = upload(client, data if data is not None else png_bytes(), name)
    assert response.status_code == 201, response.content
    return int(response.json()["id"])


def send_json(client: Client, account: str, **body: Any):
    body.setdefault("client_id", str(uuid.uuid4()))
    body.setdefault("message", "")
    return client.post(
        f"/api/dm/{account}/messages", json.dumps(body), content_type="application/json"
    )


def send_multipart(
    client: Client, account: str, files: list[tuple[str, bytes]], **fields: Any
) -> Any:
    fields.setdefault("client_id", str(uuid.uuid4()))
    fields["files"] = [SimpleUploadedFile(name, data) for name, data in files]
    return client.post(f"/api/dm/{account}/messages", fields)


def error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])


def content(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


# --- Upload -----------------------------------------------------------------------------


def test_upload_returns_an_unclaimed_attachment_with_api_urls(alice, auth_client, media_root):
    response = upload(auth_client(alice), jpeg_with_gps_and_orientation(1200, 800), "holiday.jpg")
    assert response.status_code == 201, response.content
    body = response.json()
    pk = body["id"]
    assert body == {
        "id": pk,
        "kind": "image",
        "content_type": "image/jpeg",
        "size": body["size"],
        "name": "holiday.jpg",
        "width": 800,
        "height": 1200,
        "url": f"/api/attachments/{pk}/file",
        "thumbnail_url": f"/api/attachments/{pk}/thumbnail",
    }
    row = DirectMessageAttachFiles.objects.get(pk=pk)
    assert row.uploader_id == alice.pk and row.message_id is None
    stored = (media_root / row.file.name).read_bytes()
    assert body["size"] == len(stored)
    image = Image.open(io.BytesIO(stored))
    assert image.size == (800, 1200) and len(image.getexif()) == 0 and b"GPS" not in stored
    thumbnail = Image.open(media_root / row.thumbnail.name)
    assert thumbnail.format == "WEBP" and thumbnail.size == (427, 640)


def test_stored_names_are_uuids_whatever_the_client_called_the_file(alice, auth_client):
    pk = uploaded_id(auth_client(alice), png_bytes(), "../../../etc/evil name.png")
    row = DirectMessageAttachFiles.objects.get(pk=pk)
    for name in (row.file.name, row.thumbnail.name):
        assert name.startswith("dm/") and ".." not in name and "evil" not in name
        assert len(Path(name).name.split(".")[0].split("_")[0]) == 32
    assert row.name == "evil name.png"


@pytest.mark.parametrize("name", list(MEDIA_SAMPLES))
def test_video_and_audio_uploads_are_kept_byte_for_byte(alice, auth_client, media_root, name):
    data, kind, content_type = MEDIA_SAMPLES[name]
    response = upload(auth_client(alice), data, "clip.bin", "application/octet-stream")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["kind"], body["content_type"], body["size"]) == (kind, content_type, len(data))
    assert body["thumbnail_url"] is None and body["width"] is None
    row = DirectMessageAttachFiles.objects.get(pk=body["id"])
    assert (media_root / row.file.name).read_bytes() == data


@pytest.mark.parametrize("name", list(BAD_SAMPLES))
def test_refused_uploads_leave_no_row_and_no_file(alice, auth_client, media_root, tmp_path, name):
    data, status, code = BAD_SAMPLES[name]
    response = upload(auth_client(alice), data, "innocent.jpg", "image/jpeg")
    assert response.status_code == status, response.content
    assert error_code(response) == code
    assert not DirectMessageAttachFiles.objects.exists()
    assert stored_files(media_root) == []
    assert list((tmp_path / "uploads").iterdir()) == []


def test_file_of_25_mib_and_one_byte_is_too_large(alice, auth_client, media_root, tmp_path):
    data = png_bytes()  # a real image at the front changes nothing: size comes first
    data += bytes(25 * MiB + 1 - len(data))
    response = upload(auth_client(alice), data)
    assert response.status_code == 413 and error_code(response) == "too_large"
    assert not DirectMessageAttachFiles.objects.exists()
    assert stored_files(media_root) == []
    assert list((tmp_path / "uploads").iterdir()) == []


def test_the_size_limit_is_inclusive(alice, auth_client, settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "FILE_MAX_BYTES": 64 * 1024}
    mp4 = MEDIA_SAMPLES["mp4"][0]
    exact = mp4 + bytes(64 * 1024 - len(mp4))
    assert upload(auth_client(alice), exact).status_code == 201
    over = upload(auth_client(alice), exact + b"\0")
    assert over.status_code == 413 and error_code(over) == "too_large"
    assert DirectMessageAttachFiles.objects.count() == 1


def test_upload_without_a_file_is_invalid(alice, auth_client):
    response = auth_client(alice).post("/api/attachments", {"other": "x"})
    assert response.status_code == 400 and error_code(response) == "invalid"
    json_body = auth_client(alice).post("/api/attachments", "{}", content_type="application/json")
    assert json_body.status_code == 400 and error_code(json_body) == "invalid"


def test_upload_of_two_files_at_once_is_invalid(alice, auth_client, media_root):
    files = [SimpleUploadedFile(f"{i}.png", png_bytes()) for i in range(2)]
    response = auth_client(alice).post("/api/attachments", {"file": files})
    assert response.status_code == 400 and error_code(response) == "invalid"
    assert stored_files(media_root) == []


def test_upload_without_credentials_is_unauthenticated(db, media_root):
    response = upload(Client(), png_bytes())
    assert response.status_code == 401 and error_code(response) == "unauthenticated"
    assert stored_files(media_root) == []


def test_malformed_multipart_is_invalid_not_a_crash(alice, auth_client):
    response = auth_client(alice).post(
        "/api/attachments",
        b"--nope\r\nContent-Disposition: form-data; name=file\r\n\r\nxx",
        content_type="multipart/form-data",  # no boundary
    )
    assert response.status_code == 400 and error_code(response) == "invalid"


@pytest.fixture
def session_client(alice) -> tuple[Client, str]:
    """A browser: alice's session cookie, CSRF enforced; returns the client and the
    token to send as X-CSRFToken."""
    from django.middleware.csrf import _get_new_csrf_string, _mask_cipher_secret

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    secret = _get_new_csrf_string()
    client.cookies["csrftoken"] = secret
    return client, _mask_cipher_secret(secret)


def test_browser_session_uploads_with_its_csrf_token(session_client, media_root):
    client, csrf = session_client
    data = {"file": SimpleUploadedFile("a.png", png_bytes())}
    assert client.post("/api/attachments", data, HTTP_X_CSRFTOKEN=csrf).status_code == 201
    data = {"file": SimpleUploadedFile("a.png", png_bytes())}
    refused = client.post("/api/attachments", data)
    assert refused.status_code == 403 and error_code(refused) == "forbidden"
    assert DirectMessageAttachFiles.objects.count() == 1


def test_browser_session_bad_bodies_are_4xx_even_in_the_csrf_check(
    session_client, settings, media_root
):
    # The CSRF check is the first to read a session's body: limits and parse errors
    # must hold there too.
    client, csrf = session_client
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "FILE_MAX_BYTES": 1000}
    big = {"file": SimpleUploadedFile("a.png", png_bytes() + bytes(5000))}
    response = client.post("/api/attachments", big, HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 413 and error_code(response) == "too_large"
    for path in ("/api/attachments", "/api/dm/bob/messages"):
        response = client.post(
            path, b"garbage", content_type="multipart/form-data", HTTP_X_CSRFTOKEN=csrf
        )
        assert response.status_code == 400 and error_code(response) == "invalid"
    assert stored_files(media_root) == []


# --- Claiming by a send -----------------------------------------------------------------


def test_json_send_claims_own_upload_and_message_carries_it(alice, bob, auth_client):
    pk = uploaded_id(auth_client(alice))
    response = send_json(auth_client(alice), "bob", message="look", attachment_ids=[pk])
    assert response.status_code == 201, response.content
    (attachment,) = response.json()["attachments"]
    assert attachment["id"] == pk and attachment["url"] == f"/api/attachments/{pk}/file"
    assert DirectMessageAttachFiles.objects.get(pk=pk).message_id == response.json()["id"]


def test_claiming_someone_elses_attachment_is_refused_and_writes_nothing(
    alice, bob, auth_client, media_root
):
    bobs = uploaded_id(auth_client(bob))
    files_before = stored_files(media_root)
    response = send_json(auth_client(alice), "bob", message="mine now", attachment_ids=[bobs])
    assert response.status_code == 400 and error_code(response) == "invalid"
    assert not DirectMessage.objects.exists()
    assert DirectMessageAttachFiles.objects.get(pk=bobs).message_id is None
    assert stored_files(media_root) == files_before


def test_claiming_twice_is_refused(alice, bob, auth_client):
    pk = uploaded_id(auth_client(alice))
    first = send_json(auth_client(alice), "bob", message="once", attachment_ids=[pk])
    assert first.status_code == 201
    again = send_json(auth_client(alice), "bob", message="twice", attachment_ids=[pk])
    assert again.status_code == 400 and error_code(again) == "invalid"
    assert DirectMessage.objects.count() == 1
    assert DirectMessageAttachFiles.objects.get(pk=pk).message_id == first.json()["id"]


def test_eleven_attachments_are_refused_and_none_is_claimed(alice, bob, auth_client):
    client = auth_client(alice)
    ids = [uploaded_id(client, png_bytes(8, 8)) for _ in range(11)]
    response = send_json(client, "bob", message="many", attachment_ids=ids)
    assert response.status_code == 400 and error_code(response) == "invalid"
    assert not DirectMessage.objects.exists()
    assert DirectMessageAttachFiles.objects.filter(message__isnull=True).count() == 11
    ok = send_json(client, "bob", message="ten", attachment_ids=ids[:10])
    assert ok.status_code == 201 and len(ok.json()["attachments"]) == 10


def test_one_bad_id_among_good_ones_claims_none(alice, bob, auth_client):
    client = auth_client(alice)
    mine = uploaded_id(client)
    bobs = uploaded_id(auth_client(bob))
    response = send_json(client, "bob", message="mixed", attachment_ids=[mine, bobs])
    assert response.status_code == 400
    assert DirectMessageAttachFiles.objects.filter(message__isnull=False).count() == 0


async def test_websocket_send_claims_attachments_and_refuses_others(
    alice, bob, auth_client, ws_connect
):
    from asgiref.sync import sync_to_async

    mine = await sync_to_async(lambda: uploaded_id(auth_client(alice)))()
    bobs = await sync_to_async(lambda: uploaded_id(auth_client(bob)))()
    ws = await ws_connect("/ws/dm/bob/", alice)
    assert (await ws.receive_json_from(timeout=5))["type"] == "room.joined"
    stolen = str(uuid.uuid4())
    await ws.send_json_to(
        {"type": "message.send", "client_id": stolen, "message": "x", "attachment_ids": [bobs]}
    )
    error = await _next(ws, "error")
    assert error["code"] == "invalid" and error["ref"] == stolen
    await ws.send_json_to(
        {"type": "message.send", "client_id": str(uuid.uuid4()), "attachment_ids": [mine]}
    )
    new = await _next(ws, "message.new")
    (attachment,) = new["message"]["attachments"]
    assert attachment["id"] == mine and attachment["kind"] == "image"
    assert attachment["thumbnail_url"] == f"/api/attachments/{mine}/thumbnail"


async def _next(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        frame = await ws.receive_json_from(timeout=5)
        if frame["type"] == kind:
            return dict(frame)


# --- Multipart send: upload and send in one request -------------------------------------


def test_multipart_send_uploads_and_sends_in_one_request(alice, bob, auth_client, media_root):
    response = send_multipart(
        auth_client(alice),
        "bob",
        [("beach.jpg", jpeg_with_gps_and_orientation(600, 400)), ("note.mp3", mp3_bytes())],
        message="from the beach",
    )
    assert response.status_code == 201, response.content
    message = response.json()
    assert message["message"] == "from the beach" and message["sender"] == "alice"
    photo, note = message["attachments"]
    assert (photo["kind"], photo["name"], photo["width"]) == ("image", "beach.jpg", 400)
    assert (note["kind"], note["content_type"], note["name"]) == ("audio", "audio/mpeg", "note.mp3")
    rows = DirectMessageAttachFiles.objects.filter(message_id=message["id"])
    assert rows.count() == 2 and all(r.uploader_id == alice.pk for r in rows)
    assert len(stored_files(media_root)) == 3  # photo, its thumbnail, the note


def test_multipart_send_of_text_alone_works(alice, bob, auth_client):
    response = send_multipart(auth_client(alice), "bob", [], message="just words")
    assert response.status_code == 201 and response.json()["attachments"] == []


@pytest.mark.parametrize(
    ("files", "fields", "status", "code"),
    [
        (
            [("a.jpg", png_bytes()), ("b.jpg", b"<html>no</html>")],
            {},
            415,
            "unsupported_media_type",
        ),
        ([("a.png", png_bytes()), ("b.png", BAD_SAMPLES["truncated jpeg"][0])], {}, 400, "invalid"),
        ([("a.png", png_bytes())], {"reply_to": "999"}, 400, "invalid"),  # refused after upload
        ([("a.png", png_bytes())], {"client_id": "not-a-uuid"}, 400, "invalid"),
        ([("a.png", png_bytes())], {"message": "x" * 1001}, 400, "invalid"),
        ([], {"message": ""}, 400, "invalid"),
        ([(f"{i}.png", png_bytes(8, 8)) for i in range(11)], {}, 400, "invalid"),
    ],
)
def test_failed_multipart_send_leaves_no_message_no_row_no_file(
    alice, bob, auth_client, media_root, tmp_path, files, fields, status, code
):
    response = send_multipart(auth_client(alice), "bob", files, **{"message": "hi", **fields})
    assert response.status_code == status, response.content
    assert error_code(response) == code
    assert not DirectMessage.objects.exists() and not Room.objects.exists()
    assert not DirectMessageAttachFiles.objects.exists()
    assert stored_files(media_root) == []
    assert list((tmp_path / "uploads").iterdir()) == []


@pytest.mark.parametrize(("account", "status"), [("nobody", 404), ("alice", 403)])
def test_multipart_send_to_unknown_or_self_stores_nothing(
    alice, auth_client, media_root, account, status
):
    response = send_multipart(auth_client(alice), account, [("a.png", png_bytes())])
    assert response.status_code == status
    assert not DirectMessageAttachFiles.objects.exists() and stored_files(media_root) == []


def test_multipart_file_over_the_limit_stores_nothing(
    alice, bob, auth_client, media_root, settings
):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "FILE_MAX_BYTES": 64 * 1024}
    files = [("a.png", png_bytes()), ("big.png", png_bytes() + bytes(64 * 1024))]
    response = send_multipart(auth_client(alice), "bob", files)
    assert response.status_code == 413 and error_code(response) == "too_large"
    assert not DirectMessage.objects.exists() and stored_files(media_root) == []


def test_multipart_retry_returns_the_original_and_stores_no_copies(
    alice, bob, auth_client, media_root
):
    client_id = str(uuid.uuid4())
    files = [("a.png", png_bytes())]
    first = send_multipart(auth_client(alice), "bob", files, client_id=client_id, message="x")
    stored = stored_files(media_root)
    again = send_multipart(auth_client(alice), "bob", files, client_id=client_id, message="x")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == first.json()
    assert DirectMessage.objects.count() == 1 and DirectMessageAttachFiles.objects.count() == 1
    assert stored_files(media_root) == stored


def test_json_send_is_unchanged_by_multipart_support(alice, bob, auth_client):
    bad = auth_client(alice).post(
        "/api/dm/bob/messages", "{not json", content_type="application/json"
    )
    assert bad.status_code == 400 and error_code(bad) == "invalid"
    not_object = auth_client(alice).post(
        "/api/dm/bob/messages", "[]", content_type="application/json"
    )
    assert not_object.status_code == 400
    ok = send_json(auth_client(alice), "bob", message="plain")
    assert ok.status_code == 201 and ok.json()["attachments"] == []


# --- Who may download -------------------------------------------------------------------


@pytest.fixture
def sent_photo(alice, bob, make_user, auth_client) -> int:
    make_user("carol")
    pk = uploaded_id(auth_client(alice), jpeg_with_gps_and_orientation(1200, 800), "p.jpg")
    assert send_json(auth_client(alice), "bob", attachment_ids=[pk]).status_code == 201
    return pk


@pytest.mark.parametrize("what", ["file", "thumbnail"])
@pytest.mark.parametrize(
    ("viewer", "status"),
    [("alice", 200), ("bob", 200), ("carol", 404), (None, 401)],
)
def test_download_authorization_matrix(sent_photo, auth_client, viewer, status, what):
    from django.contrib.auth import get_user_model

    client = auth_client(get_user_model().objects.get(account=viewer)) if viewer else Client()
    response = client.get(f"/api/attachments/{sent_photo}/{what}")
    assert response.status_code == status
    if status != 200:
        expected = "not_found" if status == 404 else "unauthenticated"
        assert error_code(response) == expected


def test_unclaimed_upload_is_visible_to_its_uploader_only(alice, bob, auth_client):
    pk = uploaded_id(auth_client(alice))
    assert auth_client(alice).get(f"/api/attachments/{pk}/file").status_code == 200
    assert auth_client(bob).get(f"/api/attachments/{pk}/file").status_code == 404


def test_recipient_can_download_although_not_the_uploader(alice, bob, auth_client, media_root):
    pk = uploaded_id(auth_client(alice), png_bytes(), "a.png")
    send_json(auth_client(alice), "bob", attachment_ids=[pk])
    response = auth_client(bob).get(f"/api/attachments/{pk}/file")
    row = DirectMessageAttachFiles.objects.get(pk=pk)
    assert content(response) == (media_root / row.file.name).read_bytes()


@pytest.mark.parametrize("path", ["999999/file", "999999/thumbnail", "abc/file", "1/other"])
def test_unknown_attachments_are_not_found(alice, auth_client, path):
    response = auth_client(alice).get(f"/api/attachments/{path}")
    assert response.status_code == 404 and error_code(response) == "not_found"


def test_huge_attachment_id_is_not_found(alice, auth_client):
    response = auth_client(alice).get(f"/api/attachments/{10**30}/file")
    assert response.status_code == 404


# --- How files are served ---------------------------------------------------------------


def test_file_is_streamed_with_its_detected_type_and_safe_headers(
    sent_photo, bob, auth_client, media_root
):
    response = auth_client(bob).get(f"/api/attachments/{sent_photo}/file")
    row = DirectMessageAttachFiles.objects.get(pk=sent_photo)
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "image/jpeg"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"] == 'inline; filename="p.jpg"'
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert response["Content-Length"] == str(row.size)
    assert "private" in response["Cache-Control"]
    assert content(response) == (media_root / row.file.name).read_bytes()


def test_thumbnail_is_served_as_webp(sent_photo, bob, auth_client):
    response = auth_client(bob).get(f"/api/attachments/{sent_photo}/thumbnail")
    assert response["Content-Type"] == "image/webp"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert Image.open(io.BytesIO(content(response))).size == (427, 640)


def test_type_comes_from_content_not_from_the_upload_claims(alice, auth_client):
    response = upload(auth_client(alice), png_bytes(), "fake.html", "text/html")
    served = auth_client(alice).get(response.json()["url"])
    assert served["Content-Type"] == "image/png"
    assert served["Content-Disposition"] == 'inline; filename="fake.png"'


def test_unicode_and_quotes_in_names_give_a_safe_content_disposition(alice, auth_client):
    pk = uploaded_id(auth_client(alice), png_bytes(), 'пляж "2026".png')
    disposition = auth_client(alice).get(f"/api/attachments/{pk}/file")["Content-Disposition"]
    assert disposition.startswith("inline; filename*=utf-8''")
    assert '"' not in disposition and "\n" not in disposition


def test_video_has_no_thumbnail(alice, auth_client):
    pk = uploaded_id(auth_client(alice), MEDIA_SAMPLES["webm"][0], "clip.webm")
    response = auth_client(alice).get(f"/api/attachments/{pk}/thumbnail")
    assert response.status_code == 404 and error_code(response) == "not_found"
    served = auth_client(alice).get(f"/api/attachments/{pk}/file")
    assert served["Content-Type"] == "video/webm"


def test_x_accel_redirect_hands_the_file_to_nginx(alice, auth_client, settings):
    settings.DIRECT_MESSAGES = {
        **settings.DIRECT_MESSAGES,
        "X_ACCEL_REDIRECT_PREFIX": "/protected-media/",
    }
    pk = uploaded_id(auth_client(alice), png_bytes(), "a.png")
    row = DirectMessageAttachFiles.objects.get(pk=pk)
    response = auth_client(alice).get(f"/api/attachments/{pk}/file")
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == f"/protected-media/{row.file.name}"
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert response["Content-Disposition"] == 'inline; filename="a.png"'
    assert response["Cache-Control"] == "private, max-age=3600"
    assert response.content == b""


@pytest.mark.parametrize("accel", [False, True])
def test_a_stored_type_outside_the_allow_list_is_served_as_a_download(
    alice, auth_client, settings, accel
):
    # A row from before uploads were parsed (an HTML file taken for audio/mpeg by its
    # first bytes would have become "text/html" in a hand-edited row, or any type a
    # later version adds): never rendered in place.
    if accel:
        settings.DIRECT_MESSAGES = {
            **settings.DIRECT_MESSAGES,
            "X_ACCEL_REDIRECT_PREFIX": "/protected-media/",
        }
    pk = uploaded_id(auth_client(alice), png_bytes(), "page.png")
    DirectMessageAttachFiles.objects.filter(pk=pk).update(content_type="text/html")
    response = auth_client(alice).get(f"/api/attachments/{pk}/file")
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == 'attachment; filename="page.png"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"


def test_missing_stored_file_is_not_found(alice, auth_client, media_root):
    pk = uploaded_id(auth_client(alice))
    row = DirectMessageAttachFiles.objects.get(pk=pk)
    (media_root / row.file.name).unlink()
    assert auth_client(alice).get(f"/api/attachments/{pk}/file").status_code == 404


# --- Lifecycle --------------------------------------------------------------------------


def test_attachment_files_delete_removes_file_and_thumbnail(alice, auth_client, media_root):
    pk = uploaded_id(auth_client(alice))
    assert len(stored_files(media_root)) == 2
    assert attachment_files_delete([DirectMessageAttachFiles.objects.get(pk=pk)]) == 2
    assert stored_files(media_root) == []
    assert auth_client(alice).get(f"/api/attachments/{pk}/file").status_code == 404


def test_purge_removes_old_unclaimed_uploads_and_their_files(alice, bob, auth_client, media_root):
    client = auth_client(alice)
    old_unclaimed, recent_unclaimed, old_claimed = (uploaded_id(client) for _ in range(3))
    send_json(client, "bob", attachment_ids=[old_claimed])
    day_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=24, minutes=1)
    DirectMessageAttachFiles.objects.filter(pk__in=[old_unclaimed, old_claimed]).update(
        created_at=day_ago
    )
    old_names = DirectMessageAttachFiles.objects.get(pk=old_unclaimed)
    out = io.StringIO()
    call_command("purge_attachments", stdout=out)
    assert "purged 1" in out.getvalue()
    assert set(DirectMessageAttachFiles.objects.values_list("pk", flat=True)) == {
        recent_unclaimed,
        old_claimed,
    }
    assert not (media_root / old_names.file.name).exists()
    assert not (media_root / old_names.thumbnail.name).exists()
    assert len(stored_files(media_root)) == 4


def test_purge_age_follows_the_setting_and_the_option(alice, auth_client, settings):
    pk = uploaded_id(auth_client(alice))
    DirectMessageAttachFiles.objects.filter(pk=pk).update(
        created_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    )
    call_command("purge_attachments", stdout=io.StringIO())
    assert DirectMessageAttachFiles.objects.filter(pk=pk).exists()  # 24 h by default
    settings.DIRECT_MESSAGES = {
        **settings.DIRECT_MESSAGES,
        "UNCLAIMED_ATTACHMENT_TTL_SECONDS": 3600,
    }
    call_command("purge_attachments", stdout=io.StringIO())
    assert DirectMessageAttachFiles.objects.filter(pk=pk).exists()
    call_command("purge_attachments", "--older-than", "300", stdout=io.StringIO())
    assert not DirectMessageAttachFiles.objects.filter(pk=pk).exists()
