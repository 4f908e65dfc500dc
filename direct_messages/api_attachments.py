"""HTTP routes for attachments (``/api/attachments``): upload, and private downloads.

Downloads never expose storage: the API checks who is asking, then either streams the
file (a storage with local paths), hands it to nginx (``X_ACCEL_REDIRECT_PREFIX``), or
answers 302 to a short-lived signed URL (a remote storage such as S3). Which of these
happens depends on what the configured storage can do, never on a setting's name.

Every path gives the browser the same instructions: the detected ``Content-Type``, a
``Content-Disposition`` with the sanitised name, ``X-Content-Type-Options: nosniff``
and a sandboxing ``Content-Security-Policy``. nginx drops the last two from an
``X-Accel-Redirect`` response (it keeps only a few named headers), so its ``location``
adds them again (docs/attachments.md); a signed URL carries the type and disposition
as response overrides, under the signature, and the bucket is another origin.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
from collections.abc import AsyncIterator, Callable
from typing import IO, Any
from urllib.parse import quote

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.core.handlers.asgi import ASGIRequest
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    QueryDict,
)
from django.http.multipartparser import MultiPartParserError
from django.utils.datastructures import MultiValueDict
from django.utils.http import content_disposition_header
from ninja import Router, Status
from ninja.decorators import decorate_view
from pydantic import ValidationError as PydanticValidationError

from direct_messages import (
    converters,  # noqa: F401 (registers the "dm_id" path converter)
    selectors,
    services,
)
from direct_messages.attachments import (
    STORED_CONTENT_TYPES,
    LimitedUploadHandler,
    attachment_create,
    storage_open,
)
from direct_messages.conf import dm_setting
from direct_messages.errors import Invalid, NotFound, TooLarge
from direct_messages.http import errors
from direct_messages.schemas import (
    AttachmentOut,
    Id,
    MessageSendIn,
    attachment_out,
    describe_validation_error,
)

router = Router(tags=["attachments"])

STREAM_BLOCK_SIZE = 64 * 1024
FILE_CACHE_CONTROL = "private, max-age=3600"
# Should the bytes ever be rendered as a document, they run nothing and reach nothing.
FILE_CSP = "default-src 'none'; sandbox"
# What the browser may show in place ("inline"): the types uploads are stored as, which
# were recognised by parsing. Anything else (a row from an older version, or edited by
# hand) is offered as a download, as application/octet-stream.
INLINE_TYPES = STORED_CONTENT_TYPES

SEND_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": MessageSendIn.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "client_id": {"type": "string", "format": "uuid"},
                        "message": {"type": "string"},
                        "reply_to": {"type": "integer"},
                        "view_once": {"type": "integer", "enum": [1, 2]},
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "maxItems": 10,
                        },
                    },
                    "required": ["client_id"],
                }
            },
        },
    }
}
UPLOAD_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    }
}


# --- Receiving multipart bodies --------------------------------------------------------


def limit_uploads(max_files: int | None = None) -> Callable[[Any], Any]:
    """A ``decorate_view`` decorator: parse this route's multipart body through
    :class:`LimitedUploadHandler`, so that limits hold while the body streams in, and
    turn a malformed body into ``invalid`` wherever it is first read.

    It wraps the whole operation, authentication included, because a session's CSRF
    check may be the first to read the body (and django-ninja would report a parser
    error there as a 500). ``max_files`` defaults to ``ATTACHMENTS_PER_MESSAGE``, read
    at request time.
    """

    def decorator(run: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        @functools.wraps(run)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            limit = max_files if max_files is not None else dm_setting("ATTACHMENTS_PER_MESSAGE")
            request.upload_handlers = [LimitedUploadHandler(request, max_files=limit)]
            setattr(request, "parse_file_upload", _typed_errors(request.parse_file_upload))  # noqa: B010
            return run(request, *args, **kwargs)

        return wrapper

    return decorator


def _typed_errors(parse: Callable[..., Any]) -> Callable[..., Any]:
    """``HttpRequest.parse_file_upload``, raising the API's errors for bad bodies."""

    @functools.wraps(parse)
    def parse_or_refuse(*args: Any, **kwargs: Any) -> Any:
        try:
            return parse(*args, **kwargs)
        except RequestDataTooBig as exc:
            raise TooLarge("request body too large") from exc
        except (MultiPartParserError, SuspiciousOperation, ValueError) as exc:
            raise Invalid("body: malformed multipart/form-data") from exc

    return parse_or_refuse


def multipart_read(request: HttpRequest) -> tuple[QueryDict, MultiValueDict[str, UploadedFile]]:
    """The form fields and files of a multipart body (parsed under :func:`limit_uploads`)."""
    if request.content_type != "multipart/form-data":
        raise Invalid("body: send multipart/form-data")
    return request.POST, request.FILES


def send_body_read(request: HttpRequest) -> tuple[MessageSendIn, list[UploadedFile] | None]:
    """The body of ``POST /api/dm/{account}/messages``: the send's fields, and its
    ``files`` when the body is multipart (None for JSON, which names ``attachment_ids``).

    JSON is checked exactly as django-ninja would: a body that does not parse is 400,
    fields through :class:`MessageSendIn`.
    """
    if request.content_type == "multipart/form-data":
        fields, files = multipart_read(request)
        data: Any = {
            k: fields[k] for k in ("client_id", "message", "reply_to", "view_once") if fields.get(k)
        }
        return _validate(MessageSendIn, data), files.getlist("files")
    try:
        data = json.loads(request.body) if request.body else None
    except ValueError as exc:
        raise Invalid("body: malformed JSON") from exc
    if not isinstance(data, dict):
        raise Invalid("body: a JSON object or multipart/form-data is required")
    return _validate(MessageSendIn, data), None


def _validate(model: type[MessageSendIn], data: dict[str, Any]) -> MessageSendIn:
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise Invalid(describe_validation_error(exc)) from exc


# --- Routes ----------------------------------------------------------------------------

# 200: the bytes; 302: a short-lived signed URL (object storage).
DOWNLOAD_RESPONSES: dict[int, Any] = {200: None, 302: None, **errors(401, 404)}
BINARY = {"schema": {"type": "string", "format": "binary"}}
DOWNLOAD_OPENAPI = {
    "responses": {
        200: {
            "description": "The file: an upload's detected type, else application/octet-stream",
            "content": dict.fromkeys(
                ("image/*", "video/*", "audio/*", "application/octet-stream"), BINARY
            ),
        },
        302: {
            "description": "A short-lived signed URL of the object storage",
            "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
        },
    }
}


@router.post(
    "",
    response={201: AttachmentOut, **errors(400, 401, 403, 413, 415, 429)},
    openapi_extra=UPLOAD_OPENAPI,
)
@decorate_view(limit_uploads(max_files=1))
def attachment_upload(request: HttpRequest) -> Status:
    """Store one file (multipart field ``file``), owned by the caller, in no message yet."""
    _, files = multipart_read(request)
    uploaded = files.get("file")
    if uploaded is None:
        raise Invalid("file: required (multipart field 'file')")
    attachment = attachment_create(request.user, uploaded)
    return Status(201, attachment_out(attachment))


@router.get(
    "/{dm_id:attachment_id}/file", response=DOWNLOAD_RESPONSES, openapi_extra=DOWNLOAD_OPENAPI
)
def attachment_file(request: HttpRequest, attachment_id: Id) -> HttpResponseBase:
    attachment = selectors.attachment_for_viewer(user=request.user, attachment_id=attachment_id)
    if attachment.message is not None and attachment.message.view_once is not None:
        handle = services.view_once_open(user=request.user, attachment=attachment)
        return serve_handle(request, handle, attachment.content_type, attachment.name)
    return serve_stored(request, attachment.file.name, attachment.content_type, attachment.name)


@router.get(
    "/{dm_id:attachment_id}/thumbnail",
    response=DOWNLOAD_RESPONSES,
    openapi_extra=DOWNLOAD_OPENAPI,
)
def attachment_thumbnail(request: HttpRequest, attachment_id: Id) -> HttpResponseBase:
    attachment = selectors.attachment_for_viewer(user=request.user, attachment_id=attachment_id)
    if not attachment.thumbnail.name or (attachment.message and attachment.message.view_once):
        raise NotFound("this attachment has no thumbnail")  # a view-once file shows none
    stem = attachment.name.rsplit(".", 1)[0] or "attachment"
    return serve_stored(request, attachment.thumbnail.name, "image/webp", f"{stem}.webp")


# --- Access and serving ----------------------------------------------------------------


def storage_is_local(name: str) -> bool:
    """Whether the storage keeps ``name`` on this machine's file system.

    Storages without local paths (S3 and the like) raise ``NotImplementedError`` from
    ``path()``; that is Django's own contract for "remote".
    """
    try:
        default_storage.path(name)
    except NotImplementedError:
        return False
    return True


def serve_stored(
    request: HttpRequest, name: str, content_type: str, filename: str
) -> HttpResponseBase:
    if not name:
        raise NotFound("no such file")
    content_type = _served_type(content_type)
    disposition = content_disposition(content_type, filename)
    response: HttpResponseBase
    if not storage_is_local(name):
        response = HttpResponseRedirect(signed_url(name, content_type, disposition))
        response["Cache-Control"] = "private, no-store"  # the signed URL expires
    elif prefix := dm_setting("X_ACCEL_REDIRECT_PREFIX"):
        if not default_storage.exists(name):
            raise NotFound("no such file")
        # nginx keeps Content-Type, Content-Disposition and Cache-Control from this
        # response, and drops the other two below: its location adds them again.
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = f"{prefix.rstrip('/')}/{quote(name)}"
        response["Content-Disposition"] = disposition
        response["Cache-Control"] = FILE_CACHE_CONTROL
    else:
        response = _file_response(request, name, content_type, disposition)
        response["Cache-Control"] = FILE_CACHE_CONTROL
    return _inert(response)


def serve_handle(
    request: HttpRequest, handle: IO[bytes], content_type: str, filename: str
) -> HttpResponseBase:
    """An open file, streamed by the app, for no cache to keep (a view-once opening)."""
    content_type = _served_type(content_type)
    response = _handle_response(
        request, handle, content_type, content_disposition(content_type, filename)
    )
    response["Cache-Control"] = "private, no-store"
    return _inert(response)


def _served_type(content_type: str) -> str:
    """The stored media types as they are; anything else as bytes to download."""
    return content_type if content_type in INLINE_TYPES else "application/octet-stream"


def _inert(response: HttpResponseBase) -> HttpResponseBase:
    """A served file is never sniffed into another type, nor run as a page."""
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = FILE_CSP
    return response


def content_disposition(content_type: str, filename: str) -> str:
    """``inline`` for the media types uploads are stored as, ``attachment`` otherwise,
    with the display name (quoted, or RFC 5987-encoded when it is not ASCII)."""
    inline = content_type in INLINE_TYPES
    return content_disposition_header(not inline, filename) or (
        "inline" if inline else "attachment"
    )


def signed_url(name: str, content_type: str, disposition: str) -> str:
    """The storage's short-lived URL for ``name``, telling the object store which
    ``Content-Type`` and ``Content-Disposition`` to answer with.

    S3 serves an object with the metadata it was stored with and cannot add headers
    such as ``nosniff``; but a signed URL may override those two response headers
    (``response-content-type``, ``response-content-disposition``), and the overrides
    are part of what is signed, so nobody can strip them. django-storages' S3 backend
    takes them as ``url(name, parameters=...)``; a storage without that argument gets
    a plain ``url(name)``.
    """
    url = default_storage.url
    if "parameters" in inspect.signature(url).parameters:
        parameters = {
            "ResponseContentType": content_type,
            "ResponseContentDisposition": disposition,
        }
        return str(url(name, parameters=parameters))  # type: ignore[call-arg]
    return str(url(name))


def _file_response(
    request: HttpRequest, name: str, content_type: str, disposition: str
) -> FileResponse:
    return _handle_response(request, storage_open(name), content_type, disposition)


def _handle_response(
    request: HttpRequest, handle: IO[bytes], content_type: str, disposition: str
) -> FileResponse:
    response = FileResponse(handle, content_type=content_type)
    response["Content-Disposition"] = disposition
    if isinstance(request, ASGIRequest):
        # Under ASGI, Django buffers a synchronous iterator whole before sending it;
        # an asynchronous one streams, one block at a time.
        response.streaming_content = _read_blocks(handle)
    return response


async def _read_blocks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    while block := await asyncio.to_thread(handle.read, STREAM_BLOCK_SIZE):
        yield block
