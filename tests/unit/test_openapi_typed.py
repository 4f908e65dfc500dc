"""``/api/openapi.json`` describes every body: each operation declares a schema for its
2xx answers (binary content for a download, none for a 204) and PROTOCOL.md's error
envelope for its errors, so a client can be generated from the document alone.

Everything is read from the document the API serves; nothing here lists routes by hand.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from direct_messages.schemas import Time
from direct_messages.urls import api

SPEC: dict[str, Any] = api.get_openapi_schema()
SCHEMAS: dict[str, Any] = SPEC["components"]["schemas"]
OPERATIONS = {
    f"{method.upper()} {path}": operation
    for path, item in SPEC["paths"].items()
    for method, operation in item.items()
}
ERROR_REF = "#/components/schemas/ErrorOut"
BINARY = {"type": "string", "format": "binary"}
SAFE_METHODS = ("GET ", "HEAD ", "OPTIONS ")


def resolved(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].removeprefix("#/components/schemas/")]
    return schema


def alternatives(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The object schemas a body may be: a union's members, without its null."""
    schema = resolved(schema)
    members = schema.get("oneOf") or schema.get("anyOf") or schema.get("allOf")
    if members:
        return [m for branch in members for m in alternatives(branch)]
    return [] if schema.get("type") == "null" else [schema]


def object_schemas() -> dict[str, dict[str, Any]]:
    """Every object schema any response reaches, by name or by where it sits."""
    found: dict[str, dict[str, Any]] = {}

    def walk(schema: Any, where: str) -> None:
        if isinstance(schema, dict):
            if "$ref" in schema:
                name = schema["$ref"].removeprefix("#/components/schemas/")
                if name not in found:
                    found[name] = SCHEMAS[name]
                    walk(SCHEMAS[name], name)
                return
            if "properties" in schema and where not in found:
                found[where] = schema
            for key, value in schema.items():
                walk(value, f"{where}.{key}")
        elif isinstance(schema, list):
            for value in schema:
                walk(value, where)

    for label, operation in OPERATIONS.items():
        walk(operation["responses"], label)
    return found


RESPONSE_OBJECTS = object_schemas()


def statuses(operation: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {int(status): response for status, response in operation["responses"].items()}


def test_the_document_lists_the_api() -> None:
    assert {"POST /api/dm/{account}/messages", "GET /api/inbox", "POST /api/auth/signup"} <= set(
        OPERATIONS
    )


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_every_success_declares_its_body(label: str) -> None:
    successes = {s: r for s, r in statuses(OPERATIONS[label]).items() if 200 <= s < 300}
    assert successes, f"{label} documents no 2xx answer"
    for status, response in successes.items():
        content = response.get("content", {})
        if status == 204:
            assert content == {}, f"{label} {status} has no body"
            continue
        assert content, f"{label} {status} declares no body"
        for media_type, body in content.items():
            where = f"{label} {status} {media_type}"
            if media_type != "application/json":
                assert body["schema"] == BINARY, f"{where}: a file is binary content"
                continue
            objects = alternatives(body["schema"])
            assert objects, f"{where}: no schema"
            for schema in objects:
                assert schema.get("properties"), f"{where}: an object without properties"


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_every_error_is_the_envelope(label: str) -> None:
    errors = {s: r for s, r in statuses(OPERATIONS[label]).items() if s >= 400}
    for status, response in errors.items():
        assert response.get("content") == {"application/json": {"schema": {"$ref": ERROR_REF}}}, (
            f"{label} {status}"
        )


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_every_operation_documents_its_client_errors(label: str) -> None:
    """401 where credentials are needed; 400 wherever input is read: a query, a body, or
    the body of any session POST (its CSRF check parses it). A GET that takes nothing
    but path parameters has no 400 to document (a bad one is a 404)."""
    operation = OPERATIONS[label]
    documented = set(statuses(operation))
    if operation.get("security"):
        assert 401 in documented, f"{label} needs credentials but documents no 401"
    takes_input = (
        "requestBody" in operation
        or any(p["in"] == "query" for p in operation.get("parameters", []))
        or not label.startswith(SAFE_METHODS)
    )
    if takes_input:
        assert 400 in documented, f"{label} reads input but documents no 400"


def test_the_error_envelope_is_protocol_md_s() -> None:
    envelope = resolved({"$ref": ERROR_REF})
    assert envelope["required"] == ["error"]
    body = resolved(envelope["properties"]["error"])
    assert set(body["required"]) == {"code", "detail"}
    assert {"invalid", "unauthenticated", "not_found"} <= set(body["properties"]["code"]["enum"])


@pytest.mark.parametrize("name", sorted(RESPONSE_OBJECTS))
def test_response_fields_are_named_as_on_the_wire(name: str) -> None:
    """A field named after a Python keyword (``with``) must reach the document, and the
    client, under its alias: ``with_`` would mean a route that does not dump by alias."""
    properties = RESPONSE_OBJECTS[name]["properties"]
    assert not [p for p in properties if p.endswith("_") or p.startswith("_")], name


def test_a_conversation_is_with_a_user_or_an_erased_ones_placeholder() -> None:
    conversation = SCHEMAS["ConversationOut"]
    assert "with" in conversation["required"]
    assert conversation["properties"]["with"] == {"$ref": "#/components/schemas/PeerOut"}
    peer = SCHEMAS["PeerOut"]
    assert set(peer["required"]) == set(SCHEMAS["UserOut"]["properties"])
    for nullable in ("id", "account"):
        assert {"type": "null"} in peer["properties"][nullable]["anyOf"]


TIME = TypeAdapter(Time)


def test_a_time_is_written_with_six_fractional_digits_and_z() -> None:
    moment = dt.datetime(2026, 11, 22, 3, 9, 29, 120000, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert TIME.dump_python(TIME.validate_python(moment)) == "2026-11-22T02:09:29.120000Z"


def test_a_time_already_rendered_passes_through_unchanged() -> None:
    text = "2026-11-22T02:09:29.123456Z"
    assert TIME.dump_python(TIME.validate_python(text)) == text


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("2026-11-22T02:09:29Z", "2026-11-22T02:09:29.000000Z"),
        ("2026-11-22T03:09:29.123+01:00", "2026-11-22T02:09:29.123000Z"),
    ],
)
def test_a_time_string_in_another_form_is_written_in_the_protocol_s(
    text: str, written: str
) -> None:
    assert TIME.dump_python(TIME.validate_python(text)) == written


@pytest.mark.parametrize("text", ["", "yesterday", "02:09:29"])
def test_a_string_that_is_no_time_is_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        TIME.validate_python(text)
