"""HTTP routes of PROTOCOL.md: thin, each validates, calls a service or selector, returns."""

from typing import Any, Literal

from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from ninja.decorators import decorate_view
from ninja.errors import Throttled
from pydantic import Field

from direct_messages import moderation, selectors, services
from direct_messages.api_attachments import SEND_OPENAPI, limit_uploads, send_body_read
from direct_messages.conf import dm_setting
from direct_messages.http import RateThrottle, errors
from direct_messages.rooms import pair_room_key
from direct_messages.schemas import (
    ConversationSettingsIn,
    ConversationSettingsOut,
    CreatedOut,
    InboxPage,
    Limit,
    MessageOut,
    MessagesPage,
    PresenceOut,
    ReadIn,
    ReportIn,
    SearchPage,
    Seq,
    history_page_out,
    inbox_page_out,
    search_page_out,
)

router = Router(tags=["direct messages"])
# 403: yourself, or a session request without its CSRF token; 400 and 413: a session
# request's body, which the CSRF check reads.
MANAGE_RESPONSES: dict[int, Any] = {204: None, **errors(400, 401, 403, 404, 413)}


class InboxQuery(Schema):
    limit: Limit = 20
    cursor: str | None = Field(None, max_length=200)
    folder: Literal["primary", "requests", "hidden"] = "primary"


class HistoryQuery(Schema):
    limit: Limit = 50
    before: Seq | None = None
    after: Seq | None = None
    q: str | None = Field(None, min_length=1, max_length=200)
    cursor: str | None = Field(None, max_length=40)


# By alias: a Conversation's ``with`` is ``with_`` in Python.
@router.get("/inbox", response={200: InboxPage, **errors(400, 401)}, by_alias=True)
def inbox(request: HttpRequest, query: Query[InboxQuery]) -> dict[str, Any]:
    page = selectors.inbox_list(
        user=request.user, folder=query.folder, cursor=query.cursor, limit=query.limit
    )
    return inbox_page_out(page)


# Full-text search reads far more than a page of history: limited per user (history and
# the inbox are a fixed number of indexed queries a page, and are not).
search_throttle = RateThrottle("message_search", lambda: dm_setting("SEARCH_RATE"), per="user")


def search_allowed(request: HttpRequest) -> None:
    if not search_throttle.allow_request(request):
        raise Throttled(wait=search_throttle.wait())  # type: ignore[arg-type]


HISTORY_RESPONSES: dict[int, Any] = {200: MessagesPage, **errors(400, 401, 403, 404, 429)}


@router.get("/dm/{account}/messages", response=HISTORY_RESPONSES)
def messages(request: HttpRequest, account: str, query: Query[HistoryQuery]) -> dict[str, Any]:
    user: Any = request.user
    other = services.peer_resolve(user, account, allow_blocked=True)
    return _history(request, pair_room_key(user.pk, other.pk), query)


@router.get("/rooms/{room}/messages", response=HISTORY_RESPONSES)
def room_messages(request: HttpRequest, room: str, query: Query[HistoryQuery]) -> dict[str, Any]:
    """The same, by the room's name: for a conversation whose other side has no account
    any more (an erased user's, whose ``with`` is a placeholder)."""
    selectors.room_member_check(user=request.user, room=room)
    return _history(request, room, query)


def _history(request: HttpRequest, room: str, query: HistoryQuery) -> dict[str, Any]:
    if query.q is not None:
        search_allowed(request)
        return search_page_out(
            selectors.message_search(
                user=request.user, room=room, text=query.q, cursor=query.cursor, limit=query.limit
            )
        )
    page = selectors.message_list(
        user=request.user, room=room, before=query.before, after=query.after, limit=query.limit
    )
    return history_page_out(page)


@router.post(
    "/dm/{account}/messages",
    response={200: MessageOut, 201: MessageOut, **errors(400, 401, 403, 404, 413, 415, 429)},
    openapi_extra=SEND_OPENAPI,
)
@decorate_view(limit_uploads())
def message_send(request: HttpRequest, account: str) -> Status:
    """Send a message: JSON (``attachment_ids`` of earlier uploads), or multipart/form-data
    with up to 10 ``files`` uploaded and sent in one request, all or nothing.

    The body is read here rather than declared, because one route takes two encodings
    and a multipart body must be parsed by the size-limited upload handler.
    """
    payload, files = send_body_read(request)
    result = services.message_send(
        sender=request.user,
        account=account,
        client_id=payload.client_id,
        text=payload.message,
        attachment_ids=payload.attachment_ids,
        files=files or (),
        reply_to=payload.reply_to,
        view_once=payload.view_once,
    )
    return Status(201 if result.created else 200, result.payload)


@router.post("/dm/{account}/read", response={204: None, **errors(400, 401, 403, 404, 413)})
def read(request: HttpRequest, account: str, payload: ReadIn) -> Status:
    services.room_mark_read(user=request.user, account=account, seq=payload.seq)
    return Status(204, None)


# --- Managing conversations ------------------------------------------------------------


@router.post("/dm/{account}/accept", response=MANAGE_RESPONSES)
def accept(request: HttpRequest, account: str) -> Status:
    services.conversation_accept(user=request.user, account=account)
    return Status(204, None)


@router.post("/dm/{account}/mute", response=MANAGE_RESPONSES)
def mute(request: HttpRequest, account: str) -> Status:
    services.conversation_mute(user=request.user, account=account, muted=True)
    return Status(204, None)


@router.post("/dm/{account}/unmute", response=MANAGE_RESPONSES)
def unmute(request: HttpRequest, account: str) -> Status:
    services.conversation_mute(user=request.user, account=account, muted=False)
    return Status(204, None)


@router.post("/dm/{account}/clear", response=MANAGE_RESPONSES)
def clear(request: HttpRequest, account: str) -> Status:
    services.conversation_clear(user=request.user, account=account)
    return Status(204, None)


@router.get(
    "/dm/{account}/settings", response={200: ConversationSettingsOut, **errors(401, 403, 404)}
)
def conversation_settings(request: HttpRequest, account: str) -> dict[str, Any]:
    """My settings of this conversation: ``read_receipts`` true or false, or null
    where it follows my own (``GET /api/settings``)."""
    other = services.peer_resolve(request.user, account, allow_blocked=True)
    return selectors.conversation_settings(user=request.user, other=other)


@router.patch(
    "/dm/{account}/settings",
    response={200: ConversationSettingsOut, **errors(400, 401, 403, 404, 413)},
)
def conversation_settings_update(
    request: HttpRequest, account: str, payload: ConversationSettingsIn
) -> dict[str, Any]:
    """Set my read receipts for this conversation (null: follow my own setting)."""
    return services.conversation_settings_update(
        user=request.user, account=account, read_receipts=payload.read_receipts
    )


@router.post("/dm/{account}/delete", response=MANAGE_RESPONSES)
def delete(request: HttpRequest, account: str) -> Status:
    """Delete a message request (hidden or not) for me only; 403 for an accepted
    conversation, which ``/clear`` is for."""
    services.conversation_delete(user=request.user, account=account)
    return Status(204, None)


@router.post(
    "/dm/{account}/report",
    response={201: CreatedOut, **errors(400, 401, 403, 404, 413, 429)},
    throttle=RateThrottle("report", lambda: dm_setting("REPORT_RATE"), per="user"),
)
def report(request: HttpRequest, account: str, payload: ReportIn) -> Status:
    """Report messages of the conversation (``message_ids``), or the whole of it; a copy
    is kept for the moderators whatever happens to the messages afterwards."""
    created = moderation.report_create(
        user=request.user,
        account=account,
        reason=payload.reason,
        note=payload.note,
        message_ids=payload.message_ids,
        block=payload.block,
    )
    return Status(201, {"id": created.pk})


@router.post("/users/{account}/block", response=MANAGE_RESPONSES)
def block(request: HttpRequest, account: str) -> Status:
    services.user_block(user=request.user, account=account)
    return Status(204, None)


@router.post("/users/{account}/unblock", response=MANAGE_RESPONSES)
def unblock(request: HttpRequest, account: str) -> Status:
    services.user_unblock(user=request.user, account=account)
    return Status(204, None)


@router.get("/users/{account}/presence", response={200: PresenceOut, **errors(401, 403, 404)})
def presence(request: HttpRequest, account: str) -> dict[str, Any]:
    return services.presence_get(viewer=request.user, account=account)


class SearchQuery(Schema):
    q: str = Field(min_length=1, max_length=200)
    limit: Limit = 50
    cursor: str | None = Field(None, max_length=40)


@router.get("/search", response={200: SearchPage, **errors(400, 401, 429)})
def search(request: HttpRequest, query: Query[SearchQuery]) -> dict[str, Any]:
    search_allowed(request)
    page = selectors.message_search(
        user=request.user, text=query.q, cursor=query.cursor, limit=query.limit
    )
    return search_page_out(page)
