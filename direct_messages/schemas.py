"""The wire contract in code: every frame and body (pydantic), every object out.

Both transports validate with these models, so a message is checked the same way
whether it came over HTTP or a WebSocket.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from django.urls import reverse
from ninja import Schema
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    StrictBool,
    StringConstraints,
    Tag,
    TypeAdapter,
    WithJsonSchema,
)
from pydantic import ValidationError as PydanticValidationError

from direct_messages.adapters import handle_of, user_out
from direct_messages.conf import dm_setting
from direct_messages.errors import Invalid

__all__ = ["user_out"]  # PROTOCOL.md's User, from the host's adapter

MAX_IDS = 100  # a sanity cap on list sizes before the real limits are checked

# Every integer a client sends is range-checked here, at the schema: ids and seqs are
# signed 64-bit columns (SQLite's INTEGER, PostgreSQL's bigint), and a value past them
# would otherwise reach a query and fail there (SQLite's OverflowError is a 500).
INT64_MAX = 2**63 - 1
Id = Annotated[int, Field(ge=0, le=INT64_MAX)]
Seq = Annotated[int, Field(ge=0, le=INT64_MAX)]
# A page size: clamped to its range by the selectors, so any 64-bit value is accepted.
Limit = Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
TIME_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"


def isotime(value: dt.datetime | None) -> str | None:
    """RFC 3339 in UTC with six fractional digits and ``Z``."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).strftime(TIME_FORMAT)


def time_text(value: dt.datetime | str) -> str:
    """A :data:`Time` on the wire: a datetime through :func:`isotime`; a string is one
    already rendered by it (the object builders render times, for the WebSockets)."""
    return value if isinstance(value, str) else value.astimezone(dt.UTC).strftime(TIME_FORMAT)


# A time field of a response schema, written as :func:`isotime` writes every time
# (django-ninja's JSON encoder would cut it to milliseconds). A string in that form,
# as the builders render times, passes as it is; another is read as a datetime and
# written again, so no other form reaches a client.
Time = Annotated[
    dt.datetime | Annotated[str, StringConstraints(pattern=TIME_PATTERN)],
    PlainSerializer(time_text, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


# --- Bodies and frames in -------------------------------------------------------------


class MessageSendIn(Wire):
    client_id: uuid.UUID
    message: str = Field("", max_length=100_000)
    attachment_ids: list[Id] = Field(default_factory=list, max_length=MAX_IDS)
    reply_to: Id | None = None
    view_once: int | None = Field(None, ge=1, le=2)


class ReadIn(Wire):
    seq: Seq


class ConversationSettingsIn(Wire):
    """``PATCH /api/dm/{account}/settings``: ``read_receipts`` is required, a JSON
    boolean, or null to follow the user's own setting again."""

    read_receipts: StrictBool | None


class ConversationSettingsOut(Schema):
    read_receipts: bool | None = Field(
        description="this conversation's own setting; null: follows GET /api/settings"
    )


class ReportIn(Wire):
    reason: Literal["spam", "harassment", "nudity", "violence", "scam", "other"]
    note: str = Field("", max_length=1000)
    message_ids: list[Id] = Field(default_factory=list, max_length=10)  # picked, at most
    block: bool = False


class SendFrame(MessageSendIn):
    type: Literal["message.send"]


class EditFrame(Wire):
    type: Literal["message.edit"]
    id: Id
    message: str = Field(max_length=100_000)


class UnsendFrame(Wire):
    type: Literal["message.unsend"]
    id: Id


class ReactionSetFrame(Wire):
    type: Literal["reaction.set"]
    id: Id
    emoji: str = Field(min_length=1, max_length=64)


class ReactionClearFrame(Wire):
    type: Literal["reaction.clear"]
    id: Id


class ReadFrame(ReadIn):
    type: Literal["read"]


class TypingFrame(Wire):
    type: Literal["typing"]
    active: bool


class SyncFrame(Wire):
    type: Literal["sync"]
    after: Seq


class PingFrame(Wire):
    type: Literal["ping"]


Frame = Annotated[
    SendFrame
    | EditFrame
    | UnsendFrame
    | ReactionSetFrame
    | ReactionClearFrame
    | ReadFrame
    | TypingFrame
    | SyncFrame
    | PingFrame,
    Field(discriminator="type"),
]
FRAME_TYPES = {
    "message.send",
    "message.edit",
    "message.unsend",
    "reaction.set",
    "reaction.clear",
    "read",
    "typing",
    "sync",
    "ping",
}
_frame_adapter: TypeAdapter[Any] = TypeAdapter(Frame)


def describe_validation_error(exc: PydanticValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        loc = [str(p) for p in error.get("loc", ()) if not str(p).startswith(tuple(FRAME_TYPES))]
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return "; ".join(parts) or "invalid frame"


def parse_frame(content: Any) -> Any:
    """A decoded JSON frame to its model; :class:`Invalid` for anything else."""
    if not isinstance(content, dict):
        raise Invalid("a frame is a JSON object")
    kind = content.get("type")
    if not isinstance(kind, str):  # an object or list here is unhashable, and may nest deep
        raise Invalid("type: required" if kind is None else "type: must be a string")
    if kind not in FRAME_TYPES:
        raise Invalid(f"type: unknown frame type {kind[:100]!r}")
    try:
        return _frame_adapter.validate_python(content)
    except PydanticValidationError as exc:
        raise Invalid(describe_validation_error(exc)) from exc


_seq_adapter: TypeAdapter[int] = TypeAdapter(Seq)


def seq_parse(value: Any, name: str) -> int:
    """A seq that comes outside a frame or body (``?after=`` in a WebSocket's URL),
    checked as the schemas check one; :class:`Invalid` if it is not one."""
    try:
        return int(_seq_adapter.validate_python(value))
    except PydanticValidationError as exc:
        raise Invalid(f"{name}: {describe_validation_error(exc)}") from exc


def frame_ref(content: Any) -> Any:
    """``ref`` of an error frame: the frame's ``client_id``, else its ``id``, else null."""
    if not isinstance(content, dict):
        return None
    ref = content.get("client_id", content.get("id"))
    return ref if isinstance(ref, str | int) and not isinstance(ref, bool) else None


def check_message_text(text: str) -> None:
    limit = dm_setting("MESSAGE_MAX_LENGTH")
    if len(text) > limit:
        raise Invalid(f"message: at most {limit} characters")
    if "\x00" in text:  # PostgreSQL cannot store it in text; no client means it
        raise Invalid("message: must not contain NUL (U+0000)")


# --- Objects out ----------------------------------------------------------------------


def api_root() -> str:
    """The API's path under the host's prefix (``/api/`` in the demo, ``/chat/api/``...)."""
    return reverse("direct_messages:home") + "api/"


def attachment_out(
    attachment: Any, api: str | None = None, *, view_once: bool = False
) -> dict[str, Any]:
    """PROTOCOL.md's ``Attachment``; a view-once file has no thumbnail."""
    base = f"{api or api_root()}attachments/{attachment.pk}"
    return {
        "id": attachment.pk,
        "kind": attachment.kind,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "name": attachment.name,
        "width": attachment.width,
        "height": attachment.height,
        "url": f"{base}/file",
        "thumbnail_url": f"{base}/thumbnail" if attachment.thumbnail and not view_once else None,
    }


def reply_out(message: Any) -> dict[str, Any] | None:
    if message is None:
        return None
    unsent = message.unsent_at is not None
    return {
        "id": message.pk,
        "seq": message.seq,
        "sender": handle_of(message.sender),
        "message": "" if unsent else message.message[:100],
        "unsent": unsent,
    }


def message_out(
    message: Any, room_key: str, *, attachments: Any = None, reactions: Any = None
) -> dict[str, Any]:
    """PROTOCOL.md's ``Message``. Expects sender, reply_to, attachments and reactions
    loaded (see ``selectors.messages_with_related``), or the last two given (a message
    just sent)."""
    unsent = message.unsent_at is not None
    if attachments is None:
        attachments = message.attachments.all()
    if reactions is None:
        reactions = message.reactions.all()
    api = api_root() if attachments else None
    return {
        "id": message.pk,
        "room": room_key,
        "seq": message.seq,
        "sender": handle_of(message.sender),
        "message": "" if unsent else message.message,
        "attachments": []
        if unsent
        else [attachment_out(a, api, view_once=message.view_once is not None) for a in attachments],
        "client_id": str(message.client_id),
        "reply_to": reply_out(message.reply_to),
        "created_at": isotime(message.created_at),
        "edited_at": isotime(message.edited_at),
        "unsent": unsent,
        "reactions": [
            {"account": handle_of(r.user), "emoji": r.emoji}
            for r in sorted(reactions, key=lambda r: (r.created_at, r.pk))
        ],
        "view_once": message.view_once,
        "opened": message.opened,
    }


def conversation_out(
    member: Any, last_message: Any, last_message_out: dict[str, Any] | None = None
) -> dict[str, Any]:
    """PROTOCOL.md's ``Conversation``, from one member row (room and other loaded);
    ``last_message_out`` is ``last_message`` already rendered, if the caller has it."""
    if last_message_out is None and last_message is not None:
        last_message_out = message_out(last_message, member.room.key)
    return {
        "room": member.room.key,
        "with": user_out(member.other),
        "last_message": last_message_out,
        "unread_count": member.unread_count,
        "last_activity_at": isotime(member.last_activity_at),
        "muted": member.muted,
        "request": member.is_request,
        "hidden": member.hidden,
    }


def history_page_out(page: Any) -> dict[str, Any]:
    """A :class:`selectors.Page` of history as ``HistoryPage``."""
    results = [message_out(m, page.room) for m in page.rows]
    return {"room": page.room, "results": results, "has_more": page.has_more}


def search_page_out(page: Any) -> dict[str, Any]:
    """A :class:`selectors.Page` of search hits (rooms loaded) as ``SearchPage``."""
    results = [message_out(m, m.room.key) for m in page.rows]
    return {"results": results, "next_cursor": page.next_cursor}


def inbox_page_out(page: Any) -> dict[str, Any]:
    """A :class:`selectors.Page` of ``(member, last message)`` as ``InboxPage``."""
    results = [conversation_out(member, last) for member, last in page.rows]
    return {"results": results, "next_cursor": page.next_cursor}


# --- Users and tokens -------------------------------------------------------------------


class UserOut(Schema):
    id: int
    account: str
    name: str
    avatar_url: str | None


class UserList(Schema):
    results: list[UserOut]


class TokenIn(Schema):
    account: str = Field(max_length=254)
    password: str = Field(max_length=256)


class EraseIn(Schema):
    password: str = Field(max_length=256)


class TokenOut(Schema):
    token: str
    expires_at: Time


# --- Response bodies ---------------------------------------------------------------------
# PROTOCOL.md's objects as django-ninja declares them: the OpenAPI document shows them,
# and ninja validates the builders' dicts above against them on the way out. The
# builders stay dicts, because the WebSocket frames carry the same objects.


class Out(BaseModel):
    """A response object: plain pydantic, so a builder's dict is validated in
    pydantic-core. A ninja ``Schema`` reads every nested object through its Python
    ``DjangoGetter``: 5.1 ms instead of 0.8 ms for a page of 200 messages."""


class AttachmentOut(Out):
    id: int
    kind: Literal["image", "video", "audio"]
    content_type: str
    size: int
    name: str
    width: int | None
    height: int | None
    url: str  # the API's download path, never raw storage
    thumbnail_url: str | None


class ReplyOut(Out):
    """The message replied to, its text cut to 100 characters."""

    id: int
    seq: int
    sender: str | None  # None: an erased user's
    message: str
    unsent: bool


class ReactionOut(Out):
    account: str
    emoji: str


class MessageOut(Out):
    id: int
    room: str
    seq: int
    sender: str | None  # None: a tombstone of an erased user's message
    message: str
    attachments: list[AttachmentOut]
    client_id: str = Field(json_schema_extra={"format": "uuid"})
    reply_to: ReplyOut | None
    created_at: Time
    edited_at: Time | None
    unsent: bool
    reactions: list[ReactionOut]
    view_once: int | None = None  # how many times the recipient may open its file
    opened: bool = False  # a view-once message opened as often as it may be


class PeerOut(Out):
    """The other side of a conversation: a ``User``, or the placeholder of an erased one
    (``id`` and ``account`` null)."""

    id: int | None
    account: str | None
    name: str
    avatar_url: str | None


class ConversationOut(Out):
    room: str
    # A keyword in Python: its routes serialize by alias (by_alias=True), or it is with_.
    with_: PeerOut = Field(alias="with")
    last_message: MessageOut | None
    unread_count: int
    last_activity_at: Time
    muted: bool
    request: bool
    hidden: bool = Field(description="a request that held a hidden word (folder=hidden)")


class InboxPage(Out):
    results: list[ConversationOut]
    next_cursor: str | None


class HistoryPage(Out):
    room: str
    results: list[MessageOut]  # ascending seq
    has_more: bool


class SearchPage(Out):
    results: list[MessageOut]  # newest first
    next_cursor: str | None


def _page_kind(page: Any) -> str:
    has_room = "room" in page if isinstance(page, dict) else hasattr(page, "room")
    return "history" if has_room else "search"


# ``GET /api/dm/{account}/messages``: a search with ``q``, the history without. Told
# apart by their keys, so a page is validated once, against its own schema.
MessagesPage = Annotated[
    Annotated[HistoryPage, Tag("history")] | Annotated[SearchPage, Tag("search")],
    Discriminator(_page_kind),
]


class CreatedOut(Out):
    id: int


class ExportOut(Out):
    id: str = Field(json_schema_extra={"format": "uuid"})
    status: Literal["pending", "ready", "failed"]
    url: str | None  # the zip, for its owner only, until the export expires


class ErasureOut(Out):
    status: Literal["pending"]  # the account is closed; the erasure runs in the background


class PresenceOut(Out):
    online: bool
    last_active_at: Time | None
