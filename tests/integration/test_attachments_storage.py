"""One storage contract, two backends: local disk, and S3 through django-storages.

The S3 backend is a real S3 API: moto in server mode on a loopback port, reached by
boto3 over HTTP, with the storage built by ``instamg.settings.s3_storage`` from the
same ``S3_*`` variables production sets. Every test runs against both backends; only
the helpers of :class:`Backend` know which one they are looking at.

The end-to-end test at the bottom runs a real server process (daphne) on each backend:
upload over HTTP, send over a WebSocket, download by the recipient through the API.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from PIL import Image

from direct_messages import services
from direct_messages.attachments import attachment_files_delete, purge_schedule
from direct_messages.models import DirectMessage, DirectMessageAttachFiles
from instamg.settings import s3_storage
from tests.support import WsClient, free_port, signup
from tests.unit.test_attachment_processing import (
    HTML,
    MEDIA_SAMPLES,
    jpeg_with_gps_and_orientation,
    png_bytes,
)

pytestmark = pytest.mark.django_db(transaction=True)


# --- The two backends -------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3 API over HTTP: moto's server mode, on a free loopback port."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@dataclass
class Backend:
    name: str
    env: dict[str, str]  # what a server process is configured with
    root: Path | None = None  # local
    s3: Any = None  # boto3 client, S3
    bucket: str = ""
    endpoint: str = ""

    def names(self) -> set[str]:
        if self.root is not None:
            return {str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()}
        listing = self.s3.list_objects_v2(Bucket=self.bucket)
        return {item["Key"] for item in listing.get("Contents", [])}

    def read(self, name: str) -> bytes:
        if self.root is not None:
            return (self.root / name).read_bytes()
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=name)["Body"].read())

    def stored_type(self, name: str) -> str | None:
        """The content type the backend itself serves (S3 object metadata); None locally,
        where the API sets it."""
        if self.root is not None:
            return None
        return str(self.s3.head_object(Bucket=self.bucket, Key=name)["ContentType"])

    def is_private(self, name: str) -> bool:
        if self.root is not None:
            return True
        grants = self.s3.get_object_acl(Bucket=self.bucket, Key=name)["Grants"]
        public = {"http://acs.amazonaws.com/groups/global/AllUsers"}
        return not any(g["Grantee"].get("URI") in public for g in grants)


def s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    return {
        "S3_BUCKET": bucket,
        "S3_ENDPOINT_URL": endpoint,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
        "S3_URL_EXPIRE_SECONDS": "120",
    }


@pytest.fixture(params=["local", "s3"])
def backend(request: Any, settings: Any, tmp_path: Path) -> Backend:
    if request.param == "local":
        root = tmp_path / "media"
        root.mkdir()
        settings.MEDIA_ROOT = root
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        }
        return Backend("local", env={"MEDIA_ROOT": str(root), "S3_BUCKET": ""}, root=root)
    import boto3

    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = f"dm-{uuid.uuid4().hex[:12]}"
    env = s3_env(endpoint, bucket)
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=env["S3_REGION"],
        aws_access_key_id=env["S3_ACCESS_KEY_ID"],
        aws_secret_access_key=env["S3_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=bucket)
    settings.STORAGES = {**settings.STORAGES, "default": s3_storage(env)}
    return Backend("s3", env=env, s3=client, bucket=bucket, endpoint=endpoint)


# --- HTTP helpers -----------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One real HTTP request, redirects not followed; header names lower-cased."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=15) as response:
            return response.status, _lower(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers), exc.read()


def _lower(headers: Any) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def fetch_signed(backend: Backend, location: str) -> tuple[str, bytes]:
    """Follow a 302 from the API as a browser would: no API credentials go along."""
    assert location.startswith(backend.endpoint + "/" + backend.bucket + "/")
    assert "X-Amz-Signature=" in location and "X-Amz-Expires=120" in location
    status, headers, data = http("GET", location)
    assert status == 200, data[:300]
    unsigned, _, _ = http("GET", location.split("?", 1)[0])
    assert unsigned == 403  # the object itself is private
    return headers["content-type"], data


def download(client: Client, url: str, backend: Backend) -> tuple[str, bytes]:
    """The bytes behind an attachment URL of the API, on either backend."""
    response = client.get(url)
    if backend.name == "s3":
        assert response.status_code == 302, response.content
        assert response["Cache-Control"] == "private, no-store"
        return fetch_signed(backend, response["Location"])
    assert response.status_code == 200, response.content
    assert response["X-Content-Type-Options"] == "nosniff"
    return response["Content-Type"], b"".join(response.streaming_content)


def upload(client: Client, data: bytes, name: str = "photo.jpg") -> dict[str, Any]:
    response = client.post("/api/attachments", {"file": SimpleUploadedFile(name, data)})
    assert response.status_code == 201, response.content
    return dict(response.json())


def send(client: Client, account: str, ids: list[int]) -> dict[str, Any]:
    body = {"client_id": str(uuid.uuid4()), "message": "", "attachment_ids": ids}
    response = client.post(
        f"/api/dm/{account}/messages", json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 201, response.content
    return dict(response.json())


# --- The contract -----------------------------------------------------------------------


def test_upload_writes_the_cleaned_file_and_its_thumbnail(alice, auth_client, backend):
    body = upload(auth_client(alice), jpeg_with_gps_and_orientation(1200, 800))
    row = DirectMessageAttachFiles.objects.get(pk=body["id"])
    assert backend.names() == {row.file.name, row.thumbnail.name}
    stored = Image.open(io.BytesIO(backend.read(row.file.name)))
    assert stored.size == (800, 1200) and len(stored.getexif()) == 0
    assert Image.open(io.BytesIO(backend.read(row.thumbnail.name))).size == (427, 640)
    assert backend.stored_type(row.file.name) in (None, "image/jpeg")
    assert backend.stored_type(row.thumbnail.name) in (None, "image/webp")
    assert backend.is_private(row.file.name) and backend.is_private(row.thumbnail.name)


def test_participants_download_the_stored_bytes(alice, bob, auth_client, backend):
    body = upload(auth_client(alice), jpeg_with_gps_and_orientation(1200, 800))
    send(auth_client(alice), "bob", [body["id"]])
    row = DirectMessageAttachFiles.objects.get(pk=body["id"])
    for user in (alice, bob):
        content_type, data = download(auth_client(user), body["url"], backend)
        assert content_type == "image/jpeg" and data == backend.read(row.file.name)
        content_type, data = download(auth_client(user), body["thumbnail_url"], backend)
        assert content_type == "image/webp" and data == backend.read(row.thumbnail.name)


def test_outsiders_get_no_redirect_and_no_bytes(alice, bob, make_user, auth_client, backend):
    carol = make_user("carol")
    body = upload(auth_client(alice), png_bytes())
    send(auth_client(alice), "bob", [body["id"]])
    for client, status in ((auth_client(carol), 404), (Client(), 401)):
        for url in (body["url"], body["thumbnail_url"]):
            response = client.get(url)
            assert response.status_code == status and "Location" not in response


@pytest.mark.parametrize("name", ["mp4", "m4a"])
def test_video_and_audio_round_trip_byte_for_byte(alice, auth_client, backend, name):
    data, _, content_type = MEDIA_SAMPLES[name]
    body = upload(auth_client(alice), data, f"clip.{name}")
    row = DirectMessageAttachFiles.objects.get(pk=body["id"])
    assert backend.names() == {row.file.name} and backend.read(row.file.name) == data
    assert backend.stored_type(row.file.name) in (None, content_type)
    assert download(auth_client(alice), body["url"], backend) == (content_type, data)


def test_unsend_deletes_the_files_from_storage(alice, bob, auth_client, backend):
    body = upload(auth_client(alice), png_bytes())
    message = send(auth_client(alice), "bob", [body["id"]])
    keep = upload(auth_client(alice), png_bytes(), "other.png")  # not in the message
    assert len(backend.names()) == 4
    services.message_unsend(user=alice, room_key=message["room"], message_id=message["id"])
    kept = DirectMessageAttachFiles.objects.get(pk=keep["id"])
    assert backend.names() == {kept.file.name, kept.thumbnail.name}
    assert auth_client(bob).get(body["url"]).status_code == 404


def test_attachment_files_delete_removes_file_and_thumbnail(alice, auth_client, backend):
    body = upload(auth_client(alice), png_bytes())
    assert len(backend.names()) == 2
    attachment_files_delete([DirectMessageAttachFiles.objects.get(pk=body["id"])])
    assert backend.names() == set()


def test_purge_deletes_unclaimed_files_from_storage(alice, auth_client, backend):
    body = upload(auth_client(alice), png_bytes())
    DirectMessageAttachFiles.objects.update(created_at="2000-01-01T00:00:00Z")
    call_command("purge_attachments", stdout=io.StringIO())
    assert not DirectMessageAttachFiles.objects.filter(pk=body["id"]).exists()
    assert backend.names() == set()


def test_every_download_path_tells_the_browser_the_type_and_not_to_render_a_page(
    alice, auth_client, backend
):
    """Locally the API's own headers; on S3 the signed URL's response overrides, which
    the signature covers: either way the detected type and an inline disposition with
    the display name, so no bytes are ever shown as an HTML page."""
    body = upload(auth_client(alice), png_bytes(), "holiday.png")
    response = auth_client(alice).get(body["url"])
    if backend.name == "local":
        assert response["Content-Type"] == "image/png"
        assert response["Content-Disposition"] == 'inline; filename="holiday.png"'
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
        return
    location = urllib.parse.urlsplit(response["Location"])
    query = dict(urllib.parse.parse_qsl(location.query))
    assert query["response-content-type"] == "image/png"
    assert query["response-content-disposition"] == 'inline; filename="holiday.png"'
    status, headers, _ = http("GET", response["Location"])
    assert status == 200
    assert headers["content-type"] == "image/png"
    assert headers["content-disposition"] == 'inline; filename="holiday.png"'
    # The overrides are part of the signed query: S3 refuses the URL if they are
    # changed or removed (moto does not check signatures, so that is not tested here).


def test_unclaimed_uploads_expire_from_storage_by_themselves(alice, auth_client, backend, settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "PURGE_INTERVAL_SECONDS": 300}
    old = upload(auth_client(alice), png_bytes())
    DirectMessageAttachFiles.objects.update(created_at="2000-01-01T00:00:00Z")
    purge_schedule.reset()
    fresh = upload(auth_client(alice), png_bytes())  # starts the purge, off its path
    purge_schedule.join(30)
    assert list(DirectMessageAttachFiles.objects.values_list("pk", flat=True)) == [fresh["id"]]
    row = DirectMessageAttachFiles.objects.get(pk=fresh["id"])
    assert backend.names() == {row.file.name, row.thumbnail.name}
    assert auth_client(alice).get(old["url"]).status_code == 404


def test_failed_multipart_send_leaves_nothing_in_storage(alice, bob, auth_client, backend):
    files = [SimpleUploadedFile("a.png", png_bytes()), SimpleUploadedFile("b.jpg", HTML)]
    response = auth_client(alice).post(
        "/api/dm/bob/messages", {"client_id": str(uuid.uuid4()), "files": files}
    )
    assert response.status_code == 415
    assert backend.names() == set()
    assert not DirectMessage.objects.exists() and not DirectMessageAttachFiles.objects.exists()


def test_multipart_send_stores_every_file(alice, bob, auth_client, backend):
    files = [
        SimpleUploadedFile("a.png", png_bytes()),
        SimpleUploadedFile("b.webm", MEDIA_SAMPLES["webm"][0]),
    ]
    response = auth_client(alice).post(
        "/api/dm/bob/messages", {"client_id": str(uuid.uuid4()), "files": files}
    )
    assert response.status_code == 201, response.content
    photo, clip = response.json()["attachments"]
    assert len(backend.names()) == 3  # photo, its thumbnail, the clip
    assert download(auth_client(bob), clip["url"], backend)[1] == MEDIA_SAMPLES["webm"][0]
    assert download(auth_client(bob), photo["thumbnail_url"], backend)[0] == "image/webp"


# --- End to end, over real sockets ------------------------------------------------------


# --- View once (issue 21, 4) -------------------------------------------------------------


def send_view_once(client: Client, account: str, ids: list[int], times: int) -> Any:
    body = {"client_id": str(uuid.uuid4()), "attachment_ids": ids, "view_once": times}
    return client.post(
        f"/api/dm/{account}/messages", json.dumps(body), content_type="application/json"
    )


def open_once(client: Client, url: str) -> tuple[int, bytes]:
    """A view-once opening: always streamed by the app (a signed URL could be reused)."""
    response = client.get(url)
    if response.status_code != 200:
        return response.status_code, b""
    assert response["Cache-Control"] == "private, no-store" and "Location" not in response
    return 200, b"".join(response.streaming_content)


@pytest.mark.parametrize("times", [1, 2])
def test_a_view_once_photo_opens_as_often_as_allowed_then_is_gone(
    alice, bob, make_user, auth_client, backend, times
):
    body = upload(auth_client(alice), png_bytes())
    row = DirectMessageAttachFiles.objects.get(pk=body["id"])
    original = backend.read(row.file.name)
    sent = send_view_once(auth_client(alice), "bob", [body["id"]], times)
    assert sent.status_code == 201, sent.content
    message = sent.json()
    assert message["view_once"] == times and not message["opened"]
    assert message["attachments"][0]["thumbnail_url"] is None  # never a preview
    # Neither the sender nor anyone else opens it; nobody gets its thumbnail.
    assert open_once(auth_client(alice), body["url"])[0] == 404
    assert open_once(auth_client(make_user("carol")), body["url"])[0] == 404
    for user in (alice, bob):
        assert auth_client(user).get(body["thumbnail_url"]).status_code == 404
    for _ in range(times):
        assert open_once(auth_client(bob), body["url"]) == (200, original)
    for user in (bob, alice):
        assert open_once(auth_client(user), body["url"])[0] == 404
    assert backend.names() == set()  # file and thumbnail
    history = auth_client(alice).get("/api/dm/bob/messages").json()["results"]
    assert history[-1]["opened"] and history[-1]["view_once"] == times


def test_two_openings_at_once_of_a_view_once_photo_give_one_file(alice, bob, auth_client, backend):
    """The race: four requests for the one opening; exactly one gets the bytes."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    body = upload(auth_client(alice), png_bytes())
    assert send_view_once(auth_client(alice), "bob", [body["id"]], 1).status_code == 201

    def attempt(_: int) -> int:
        try:
            return open_once(auth_client(bob), body["url"])[0]
        finally:
            connection.close()

    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(attempt, range(4)))
    assert statuses == [200, 404, 404, 404]
    assert DirectMessage.objects.get(client_id__isnull=False, view_once=1).views == 1


def test_a_file_opened_for_a_response_survives_its_deletion(backend):
    """What the racing test below depends on, without the race: an unsend deletes the
    file after a download has opened it. S3 opens lazily, so the open itself must fetch
    (else the response fails as a 500 when it first reads, as CI once saw); a file
    already gone is a 404."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from direct_messages.attachments import storage_open
    from direct_messages.errors import NotFound

    name = default_storage.save("race/a.bin", ContentFile(b"x" * 70_000))
    handle = storage_open(name)
    default_storage.delete(name)
    assert backend.names() == set()
    with handle:
        assert handle.read() == b"x" * 70_000
    with pytest.raises(NotFound):
        storage_open(name)


def test_an_opening_racing_the_senders_unsend_leaves_nothing(alice, bob, auth_client, backend):
    """The recipient opens a view-once photo while its sender unsends it: whichever
    wins, the answer is the file or a 404, never an error, and storage ends empty."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    def opening(url: str) -> int:
        try:
            return open_once(auth_client(bob), url)[0]
        finally:
            connection.close()

    def unsend(room: str, message_id: int) -> None:
        try:
            services.message_unsend(user=alice, room_key=room, message_id=message_id)
        finally:
            connection.close()

    for _ in range(5):
        body = upload(auth_client(alice), png_bytes())
        sent = send_view_once(auth_client(alice), "bob", [body["id"]], 2).json()
        with ThreadPoolExecutor(3) as pool:
            opened = [pool.submit(opening, body["url"]) for _ in range(2)]
            unsent = pool.submit(unsend, sent["room"], sent["id"])
            assert {f.result() for f in opened} <= {200, 404}
            unsent.result()
        assert DirectMessage.objects.get(pk=sent["id"]).unsent_at is not None
        assert open_once(auth_client(bob), body["url"])[0] == 404
        assert backend.names() == set()


@pytest.mark.parametrize(
    ("files", "times"),
    [(["png"], 3), ([], 1), (["png", "png"], 1), (["m4a"], 1)],
)
def test_view_once_is_one_photo_or_video_once_or_twice(
    alice, bob, auth_client, backend, files, times
):
    samples = {"png": (png_bytes(), "a.png"), "m4a": (MEDIA_SAMPLES["m4a"][0], "a.m4a")}
    ids = [upload(auth_client(alice), *samples[kind])["id"] for kind in files]
    answer = send_view_once(auth_client(alice), "bob", ids, times)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid"
    assert not DirectMessage.objects.exists()
    assert not DirectMessageAttachFiles.objects.filter(message__isnull=False).exists()


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def multipart(field_name: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return (
        head + data + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


@pytest.mark.live
async def test_photo_uploaded_sent_over_websocket_and_downloaded_by_the_recipient(
    asgi_server_factory: Callable[..., Any], backend: Backend
):
    server = asgi_server_factory(os.environ.get("REDIS_URL") or None, **backend.env)
    alice, bob = signup(server.http), signup(server.http)
    carol = signup(server.http)

    body, content_type = multipart("file", "sunset.jpg", jpeg_with_gps_and_orientation(1200, 800))
    status, _, raw = http(
        "POST",
        f"{server.http}/api/attachments",
        body,
        {"Authorization": f"Bearer {alice['token']}", "Content-Type": content_type},
    )
    assert status == 201, raw
    attachment = json.loads(raw)
    assert attachment["kind"] == "image" and attachment["name"] == "sunset.jpg"

    bob_ws = await WsClient.open(f"{server.ws}/ws/dm/{alice['account']}/", bob["token"])
    alice_ws = await WsClient.open(f"{server.ws}/ws/dm/{bob['account']}/", alice["token"])
    try:
        await bob_ws.recv_type("room.joined")
        await alice_ws.recv_type("room.joined")
        ack = await alice_ws.send_message("sunset", attachment_ids=[attachment["id"]])
        assert ack["type"] == "message.ack", ack
        new = await bob_ws.recv_type("message.new")
        assert new["message"]["id"] == ack["id"] and new["message"]["sender"] == alice["account"]
        assert new["message"]["attachments"] == [attachment]

        as_bob = {"Authorization": f"Bearer {bob['token']}"}
        for url, expected_type, size in (
            (attachment["url"], "image/jpeg", (800, 1200)),
            (attachment["thumbnail_url"], "image/webp", (427, 640)),
        ):
            status, headers, data = http("GET", server.http + url, headers=as_bob)
            if backend.name == "s3":
                assert status == 302, data
                got_type, data = fetch_signed(backend, headers["location"])
            else:
                assert status == 200 and headers["x-content-type-options"] == "nosniff"
                got_type = headers["content-type"]
            assert got_type == expected_type
            image = Image.open(io.BytesIO(data))
            assert image.size == size and len(image.getexif()) == 0

        as_carol = {"Authorization": f"Bearer {carol['token']}"}
        assert http("GET", server.http + attachment["url"], headers=as_carol)[0] == 404
        assert http("GET", server.http + attachment["url"])[0] == 401

        # Unsending removes the files from storage, for both sides.
        names_before = backend.names()
        assert len(names_before) == 2
        await alice_ws.send({"type": "message.unsend", "id": ack["id"]})
        updated = await bob_ws.recv_type("message.updated")
        assert updated["message"]["unsent"] and updated["message"]["attachments"] == []
        assert await eventually(lambda: backend.names() == set())
        assert http("GET", server.http + attachment["url"], headers=as_bob)[0] == 404
    finally:
        await alice_ws.close()
        await bob_ws.close()


@pytest.mark.live
async def test_a_view_once_photo_over_websockets_opens_once_and_leaves_storage(
    asgi_server_factory: Callable[..., Any], backend: Backend
):
    server = asgi_server_factory(os.environ.get("REDIS_URL") or None, **backend.env)
    alice, bob = signup(server.http), signup(server.http)
    body, content_type = multipart("file", "once.png", png_bytes())
    as_alice = {"Authorization": f"Bearer {alice['token']}"}
    status, _, raw = http(
        "POST", f"{server.http}/api/attachments", body, {**as_alice, "Content-Type": content_type}
    )
    assert status == 201, raw
    attachment = json.loads(raw)
    assert len(backend.names()) == 2
    bob_ws = await WsClient.open(f"{server.ws}/ws/dm/{alice['account']}/", bob["token"])
    alice_ws = await WsClient.open(f"{server.ws}/ws/dm/{bob['account']}/", alice["token"])
    try:
        await bob_ws.recv_type("room.joined")
        await alice_ws.recv_type("room.joined")
        ack = await alice_ws.send_message("", attachment_ids=[attachment["id"]], view_once=1)
        assert ack["type"] == "message.ack", ack
        new = (await bob_ws.recv_type("message.new"))["message"]
        assert new["view_once"] == 1 and not new["opened"]
        url = server.http + new["attachments"][0]["url"]
        as_bob = {"Authorization": f"Bearer {bob['token']}"}
        assert http("GET", url, headers=as_alice)[0] == 404  # not even its sender
        status, headers, data = http("GET", url, headers=as_bob)
        assert status == 200 and headers["cache-control"] == "private, no-store"
        assert Image.open(io.BytesIO(data)).size == (64, 48)
        for ws in (alice_ws, bob_ws):  # both see it opened
            opened = (await ws.recv_type("message.updated"))["message"]
            assert opened["id"] == ack["id"] and opened["opened"]
        assert await eventually(lambda: backend.names() == set())
        assert http("GET", url, headers=as_bob)[0] == 404
    finally:
        await alice_ws.close()
        await bob_ws.close()
