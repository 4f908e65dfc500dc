"""PROTOCOL.md at its edges: integers past what the database holds, unknown and bare API
paths, and the format of every time field.

"Never a 500 for bad input": every integer a client sends (bodies, frames, query and
path parameters, the WebSocket URL's ``?after=``) is range-checked at the schema, and
a path under the API that names no endpoint is a 404 envelope for every method, with
or without credentials.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import typing
import uuid
from typing import Annotated, Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from pydantic import BaseModel, TypeAdapter

from direct_messages.models import DirectMessage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("send_path")]

# Past a signed 64-bit column (SQLite's INTEGER, PostgreSQL's bigint), far past it, and
# below every id and seq.
OUT_OF_RANGE = [2**63, 2**64, -1]
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code, response.content


def post_json(client: Client, path: str, body: Any) -> Any:
    return client.post(path, json.dumps(body), content_type="application/json")


def send(client: Client, **body: Any) -> Any:
    return post_json(
        client, "/api/dm/bob/messages", {"client_id": str(uuid.uuid4()), "message": "hi", **body}
    )


# --- Integers in bodies, query strings and paths ----------------------------------------


@pytest.mark.parametrize("number", OUT_OF_RANGE)
def test_out_of_range_integers_in_bodies_are_invalid(alice, bob, auth_client, number):
    client = auth_client(alice)
    assert_error(send(client, attachment_ids=[number]), 400, "invalid")
    assert_error(send(client, attachment_ids=[1, number]), 400, "invalid")
    assert_error(send(client, reply_to=number), 400, "invalid")
    multipart = client.post(
        "/api/dm/bob/messages",
        {
            "client_id": str(uuid.uuid4()),
            "message": "hi",
            "reply_to": str(number),
            "files": [SimpleUploadedFile("a.txt", b"x")],
        },
    )
    assert_error(multipart, 400, "invalid")
    assert_error(post_json(client, "/api/dm/bob/read", {"seq": number}), 400, "invalid")
    assert not DirectMessage.objects.exists()


@pytest.mark.parametrize("number", [2**63, 2**64])
@pytest.mark.parametrize(
    "path",
    [
        "/api/inbox?limit={n}",
        "/api/dm/bob/messages?limit={n}",
        "/api/dm/bob/messages?before={n}",
        "/api/dm/bob/messages?after={n}",
        "/api/dm/bob/messages?q=hi&cursor={n}",
        "/api/search?q=hi&limit={n}",
        "/api/search?q=hi&cursor={n}",
    ],
)
def test_out_of_range_integers_in_query_strings_are_invalid(alice, bob, auth_client, path, number):
    assert_error(auth_client(alice).get(path.format(n=number)), 400, "invalid")


def test_negative_seqs_in_query_strings_are_invalid_and_limits_are_clamped(alice, bob, auth_client):
    client = auth_client(alice)
    for path in ("/api/dm/bob/messages?before=-1", "/api/dm/bob/messages?after=-1"):
        assert_error(client.get(path), 400, "invalid")
    for path in (
        "/api/inbox?limit=-1",
        "/api/dm/bob/messages?limit=-1",
        "/api/search?q=a&limit=-1",
    ):
        assert client.get(path).status_code == 200  # PROTOCOL.md: clamped to 1..200


@pytest.mark.parametrize("member_id", [*OUT_OF_RANGE, 0])
def test_an_inbox_cursor_naming_an_impossible_row_is_invalid(alice, auth_client, member_id):
    raw = f"2026-01-01T00:00:00+00:00|{member_id}".encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert_error(auth_client(alice).get(f"/api/inbox?cursor={cursor}"), 400, "invalid")


@pytest.mark.parametrize("number", [*OUT_OF_RANGE, 10**40])
@pytest.mark.parametrize("kind", ["file", "thumbnail"])
def test_attachment_ids_in_paths_past_an_id_are_404_envelopes(alice, auth_client, kind, number):
    response = auth_client(alice).get(f"/api/attachments/{number}/{kind}")
    assert_error(response, 404, "not_found")


# --- Integers in frames -------------------------------------------------------------------


def frames_with(number: int) -> list[dict[str, Any]]:
    client_id = str(uuid.uuid4())
    send = {"type": "message.send", "client_id": client_id, "message": "hi"}
    return [
        {**send, "attachment_ids": [number]},
        {**send, "reply_to": number},
        {"type": "message.edit", "id": number, "message": "edited"},
        {"type": "message.unsend", "id": number},
        {"type": "reaction.set", "id": number, "emoji": "👍"},
        {"type": "reaction.clear", "id": number},
        {"type": "read", "seq": number},
        {"type": "sync", "after": number},
    ]


async def next_of(ws: Any, *types: str) -> dict[str, Any]:
    while True:
        frame = await ws.receive_json_from(timeout=5)
        if frame["type"] in types:
            return dict(frame)


@pytest.mark.parametrize("number", OUT_OF_RANGE)
async def test_out_of_range_integers_in_frames_are_invalid_and_the_socket_stays_open(
    alice, bob, ws_connect, number
):
    ws = await ws_connect("/ws/dm/bob/", alice)
    assert (await ws.receive_json_from(timeout=5))["type"] == "room.joined"
    for frame in frames_with(number):
        await ws.send_json_to(frame)
        error = await next_of(ws, "error", "message.ack", "sync.done")
        assert error["type"] == "error" and error["code"] == "invalid", (frame, error)
        await ws.send_json_to({"type": "ping"})
        assert (await next_of(ws, "pong"))["type"] == "pong"


@pytest.mark.parametrize("after", [*[str(n) for n in OUT_OF_RANGE], "many", "1.5"])
async def test_an_out_of_range_after_in_the_url_is_invalid_and_the_socket_stays_open(
    alice, bob, ws_connect, after
):
    ws = await ws_connect(f"/ws/dm/bob/?after={after}", alice)
    assert (await ws.receive_json_from(timeout=5))["type"] == "room.joined"
    error = await next_of(ws, "error", "sync.done")
    assert error["type"] == "error" and error["code"] == "invalid", error
    assert error["detail"].startswith("after: "), error
    await ws.send_json_to({"type": "ping"})
    assert (await next_of(ws, "pong"))["type"] == "pong"


# --- Unknown and bare API paths -------------------------------------------------------------

UNKNOWN_PATHS = ["/api", "/api/", "/api/nope", "/api/nope/", "/api/dm/bob", "/api/inbox/extra"]
NO_SUCH_ENDPOINT = {"error": {"code": "not_found", "detail": "no such endpoint"}}


def clients(alice: Any, auth_client: Any) -> dict[str, Client]:
    session = Client(enforce_csrf_checks=True)  # logged in, and no CSRF token sent
    session.force_login(alice)
    return {"anonymous": Client(), "bearer": auth_client(alice), "session": session}


@pytest.mark.parametrize("path", UNKNOWN_PATHS)
def test_unknown_and_bare_api_paths_are_404_envelopes_for_everyone(alice, auth_client, path):
    for who, client in clients(alice, auth_client).items():
        for method in ("get", "post", "put", "patch", "delete"):
            response = getattr(client, method)(path)
            assert response.status_code == 404, (who, method, path, response.content)
            assert response.json() == NO_SUCH_ENDPOINT, (who, method, path)


@override_settings(DEBUG=True)
def test_a_post_to_the_bare_api_path_under_debug_is_a_404_not_a_slash_redirect_error(alice):
    # Django's APPEND_SLASH would redirect GET /api and raise on POST /api under DEBUG.
    for method in ("get", "post"):
        response = getattr(Client(), method)("/api")
        assert response.status_code == 404 and response.json() == NO_SUCH_ENDPOINT


# --- Times ------------------------------------------------------------------------------------


def test_token_expires_at_has_six_fractional_digits(make_user):
    make_user("dave")
    response = post_json(
        Client(), "/api/auth/token", {"account": "dave", "password": "correct-horse-battery"}
    )
    assert response.status_code == 200, response.content
    assert TIME.fullmatch(response.json()["expires_at"]), response.json()


def response_models() -> list[type[BaseModel]]:
    """Every model django-ninja validates the API's responses with."""
    from direct_messages.urls import api

    models = []
    for router in api._get_bound_routers():
        for path_view in router.path_operations.values():
            for operation in path_view.operations:
                models += [m for m in operation.response_models.values() if m is not None]
    return models


def types_in(kind: Any) -> list[Any]:
    """``kind`` and every type inside it (``X | None``, ``list[X]``, ``Annotated[X, ...]``)."""
    return [kind, *(inner for arg in typing.get_args(kind) for inner in types_in(arg))]


def time_fields(model: type[BaseModel], seen: set[type] | None = None) -> list[Any]:
    """The type of every field of ``model`` (nested models included) holding a datetime,
    with its serializers."""
    seen = set() if seen is None else seen
    if model in seen:
        return []
    seen.add(model)
    found = []
    for field in model.model_fields.values():
        kind = (
            Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        )
        inner = types_in(kind)
        if dt.datetime in inner:
            found.append(kind)
        for nested in inner:
            if isinstance(nested, type) and issubclass(nested, BaseModel):
                found += time_fields(nested, seen)
    return found


def test_every_time_field_of_every_response_schema_has_six_digits_and_z():
    fields = [field for model in response_models() for field in time_fields(model)]
    assert fields, "the token endpoint's expires_at at least"
    at = dt.datetime(2026, 11, 22, 2, 9, 29, 120000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    for kind in fields:
        for mode in ("python", "json"):
            dumped = TypeAdapter(kind).dump_python(at, mode=mode)
            assert dumped == "2026-11-22T00:09:29.120000Z", kind
