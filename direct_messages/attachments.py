"""Attachments: what an upload is (by its bytes), how it is cleaned, where it is kept.

Policies, in one place:

* **Images** are recognised by Pillow alone, opened with an allow-list of formats
  (JPEG, PNG, GIF, WebP), never by the file's name or the client's content type. The
  pixel count is read from the header and refused over ``IMAGE_MAX_PIXELS`` (413)
  before any pixel is decoded; Pillow's ``DecompressionBombWarning`` is an error too.
  Then ``verify()``, a full decode, the EXIF orientation applied, and a re-encode in the
  same format with no metadata: no EXIF (GPS, camera serial), no XMP, no comments or
  text chunks. Only the ICC profile is kept, because colour needs it. A WebP thumbnail
  (longest side ``THUMBNAIL_SIZE``) is stored beside the original.
* **Animated** GIF, WebP and PNG stay animated: every frame is decoded and re-encoded,
  with its duration and the loop count. The pixels of all frames together count
  against ``IMAGE_MAX_PIXELS``, so a long animation costs no more memory than one
  large still. The thumbnail is the first frame.
* **Video and audio** (MP4, QuickTime, WebM; M4A, MP3, Ogg) are recognised by
  puremagic from their bytes and stored byte for byte as uploaded. An MP4 is ``video``
  whatever its tracks: telling an audio-only MP4 apart needs a demuxer.
* Anything else is 415; an allowed image format that does not decode is 400; an empty
  file is 400.
* **Size**: :class:`LimitedUploadHandler` streams each file part to a temporary file
  and refuses it (413) as soon as it passes ``FILE_MAX_BYTES``: nothing is read into
  memory first, and a request whose ``Content-Length`` could not fit is refused before
  its body is parsed.
* **Storage** goes through Django's default storage only (``STORAGES["default"]``): a
  local directory or S3, decided in settings and nowhere else. Stored names are UUIDs;
  the client's file name survives only as a sanitised display name.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import tempfile
import unicodedata
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import puremagic
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from PIL import ExifTags, Image, ImageSequence, UnidentifiedImageError

from direct_messages import services
from direct_messages.conf import dm_setting
from direct_messages.errors import ApiError, Invalid, TooLarge, UnsupportedMediaType
from direct_messages.models import AttachmentKind, DirectMessageAttachFiles
from direct_messages.schemas import check_message_text

logger = logging.getLogger(__name__)

# Multipart framing and the small text fields around the files of one request.
MULTIPART_OVERHEAD_BYTES = 1024 * 1024
# Re-encoded images are written through a spooled file: memory up to this, disk beyond.
SPOOL_MAX_MEMORY = 1024 * 1024
DISPLAY_NAME_MAX = 120


@dataclass(frozen=True)
class MediaType:
    kind: str
    content_type: str
    extension: str


IMAGE_FORMATS = {
    "JPEG": MediaType(AttachmentKind.IMAGE, "image/jpeg", "jpg"),
    "PNG": MediaType(AttachmentKind.IMAGE, "image/png", "png"),
    "GIF": MediaType(AttachmentKind.IMAGE, "image/gif", "gif"),
    "WEBP": MediaType(AttachmentKind.IMAGE, "image/webp", "webp"),
}
# puremagic's answer (its extension) -> what we store and serve. This is the allow-list
# of video and audio, not a signature table: recognising the bytes is puremagic's job.
# Order matters when puremagic is equally sure of several answers: the more specific
# wins (an M4A's bytes also match the generic MP4 container).
MEDIA_BY_SNIFFED_EXTENSION = {
    ".m4a": MediaType(AttachmentKind.AUDIO, "audio/mp4", "m4a"),
    ".mov": MediaType(AttachmentKind.VIDEO, "video/quicktime", "mov"),
    ".webm": MediaType(AttachmentKind.VIDEO, "video/webm", "webm"),
    ".mp3": MediaType(AttachmentKind.AUDIO, "audio/mpeg", "mp3"),
    ".mpga": MediaType(AttachmentKind.AUDIO, "audio/mpeg", "mp3"),
    ".ogg": MediaType(AttachmentKind.AUDIO, "audio/ogg", "ogg"),
    ".oga": MediaType(AttachmentKind.AUDIO, "audio/ogg", "ogg"),
    ".mp4": MediaType(AttachmentKind.VIDEO, "video/mp4", "mp4"),
    ".m4v": MediaType(AttachmentKind.VIDEO, "video/mp4", "mp4"),
}
# Image formats puremagic recognises that Pillow must have opened if they were sound.
SNIFFED_IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jfif", ".png", ".gif", ".webp"}

THUMBNAIL_TYPE = MediaType(AttachmentKind.IMAGE, "image/webp", "webp")

# EXIF orientation -> the transpose that makes the pixels upright (as ImageOps does).
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def file_max_bytes() -> int:
    return int(dm_setting("FILE_MAX_BYTES"))


def _too_large_detail() -> str:
    limit = file_max_bytes()
    if limit % (1024 * 1024) == 0:
        return f"file: at most {limit // (1024 * 1024)} MiB"
    return f"file: at most {limit} bytes"


# --- Receiving: the size limit while the body streams in ------------------------------


class LimitedUploadHandler(TemporaryFileUploadHandler):
    """Stream each file part to a temporary file and stop at the first byte too many.

    Installed per view (``request.upload_handlers``) before the body is parsed. A file
    over ``FILE_MAX_BYTES`` raises :class:`TooLarge` from inside the multipart parser,
    after at most one chunk (64 KiB) beyond the limit; more than ``max_files`` file
    parts raise :class:`Invalid`. Temporary files already written are closed (and so
    deleted) before the error leaves.
    """

    def __init__(self, request: HttpRequest | None = None, *, max_files: int) -> None:
        super().__init__(request)
        self.max_files = max_files
        self.max_bytes = file_max_bytes()
        self.files_seen = 0
        self.received = 0
        self.opened: list[UploadedFile] = []

    def handle_raw_input(
        self,
        input_data: Any,
        META: Any,
        content_length: int,
        boundary: Any,
        encoding: str | None = None,
    ) -> None:
        if content_length > self.max_files * self.max_bytes + MULTIPART_OVERHEAD_BYTES:
            raise TooLarge("request body too large")

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        self.files_seen += 1
        if self.files_seen > self.max_files:
            self.abort()
            raise Invalid(f"files: at most {self.max_files} per request")
        self.received = 0
        super().new_file(*args, **kwargs)
        self.opened.append(self.file)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > self.max_bytes:
            self.abort()
            raise TooLarge(_too_large_detail())
        return super().receive_data_chunk(raw_data, start)

    def abort(self) -> None:
        """Close (and so delete) every temporary file of this request."""
        for upload in self.opened:
            upload.close()
        self.opened.clear()


# --- Recognising and cleaning ----------------------------------------------------------


class TypedFile(File):  # type: ignore[type-arg]
    """A file to store, carrying the detected content type.

    django-storages' S3 backend sends ``content_type`` as the object's ``ContentType``;
    the file system backend ignores it.
    """

    def __init__(self, file: IO[bytes], name: str, content_type: str) -> None:
        super().__init__(file, name=name)
        self.content_type = content_type


@dataclass
class Processed:
    """An upload recognised and cleaned, ready to be stored.

    ``content`` is a new file for an image (re-encoded) and the upload itself for video
    and audio (stored as uploaded); ``owns_content`` says which, for :meth:`close`.
    """

    media: MediaType
    content: IO[bytes]
    owns_content: bool = True
    width: int | None = None
    height: int | None = None
    thumbnail: IO[bytes] | None = None

    def close(self) -> None:
        """Close the files this object made (never the caller's upload)."""
        if self.owns_content:
            self.content.close()
        if self.thumbnail is not None:
            self.thumbnail.close()


def upload_process(fp: IO[bytes]) -> Processed:
    """Recognise ``fp`` by its bytes and clean it; a typed error for anything refused.

    Images are tried first, with Pillow; what Pillow does not take is sniffed for video
    and audio. The caller closes the result.
    """
    fp.seek(0)
    if not fp.read(1):
        raise Invalid("file: empty")
    image = _image_process(fp)
    if image is not None:
        return image
    media = _media_sniff(fp)
    fp.seek(0)
    return Processed(media=media, content=fp, owns_content=False)


def _media_sniff(fp: IO[bytes]) -> MediaType:
    fp.seek(0)
    try:
        matches = puremagic.magic_stream(fp)
    except (puremagic.PureError, ValueError):
        matches = []
    if not matches:
        raise UnsupportedMediaType("file: not an allowed image, video or audio format")
    best = matches[0].confidence
    top = [m for m in matches if m.confidence == best]
    answers = {m.extension for m in top}
    for extension, media in MEDIA_BY_SNIFFED_EXTENSION.items():
        if extension in answers:
            return media
    if any(m.extension in SNIFFED_IMAGE_EXTENSIONS for m in top):
        raise Invalid("file: a damaged or truncated image")
    raise UnsupportedMediaType(f"file: {top[0].name or 'this format'} is not allowed")


def _image_process(fp: IO[bytes]) -> Processed | None:
    """The cleaned image, or None when Pillow recognises no allowed image format."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return _image_reencode(fp)
        except UnidentifiedImageError:
            return None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise TooLarge(_pixels_detail()) from exc
        except ApiError:
            raise
        except Exception as exc:
            # A damaged file can make Pillow raise almost anything (OSError, SyntaxError,
            # ValueError, EOFError, zlib.error, struct.error...): all of it is bad input.
            raise Invalid("file: a damaged or truncated image") from exc


def _pixels_detail() -> str:
    return f"file: at most {dm_setting('IMAGE_MAX_PIXELS'):,} pixels per image"


def _pixels_check(width: int, height: int, frames: int = 1) -> None:
    if width * height * frames > dm_setting("IMAGE_MAX_PIXELS"):
        raise TooLarge(_pixels_detail())


def _image_reencode(fp: IO[bytes]) -> Processed:
    formats = list(IMAGE_FORMATS)
    fp.seek(0)
    with Image.open(fp, formats=formats) as probe:
        _pixels_check(*probe.size)  # from the header: no pixel decoded yet
        probe.verify()
    fp.seek(0)
    with Image.open(fp, formats=formats) as image:
        _pixels_check(*image.size, getattr(image, "n_frames", 1))
        frames, durations = _frames_decode(image)
        icc = image.info.get("icc_profile")
        media = IMAGE_FORMATS[str(image.format)]
        content = _frames_encode(image, frames, durations, icc)
    first = frames[0]
    return Processed(
        media=media,
        content=content,
        width=first.width,
        height=first.height,
        thumbnail=_thumbnail(first, icc),
    )


def _frames_decode(image: Image.Image) -> tuple[list[Image.Image], list[int]]:
    """Every frame decoded, upright, and stripped of all metadata but transparency."""
    frames: list[Image.Image] = []
    durations: list[int] = []
    transpose = None
    for index, frame in enumerate(ImageSequence.Iterator(image)):
        clean = frame.copy()  # decodes: a truncated file fails here
        if index == 0:
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            transpose = ORIENTATION_TRANSPOSE.get(orientation)
        if transpose is not None:
            clean = clean.transpose(transpose)
        clean.info = {k: frame.info[k] for k in ("transparency",) if k in frame.info}
        frames.append(clean)
        durations.append(int(frame.info.get("duration") or 0))
    return frames, durations


def _frames_encode(
    image: Image.Image, frames: list[Image.Image], durations: list[int], icc: bytes | None
) -> IO[bytes]:
    fmt = str(image.format)
    params: dict[str, Any] = {}
    if icc:
        params["icc_profile"] = icc
    if fmt in ("JPEG", "WEBP"):
        params["quality"] = 90
    if len(frames) > 1:
        params.update(
            save_all=True,
            append_images=frames[1:],
            duration=durations,
        )
        if "loop" in image.info:  # absent: the animation plays once
            params["loop"] = int(image.info["loop"])
        if fmt == "GIF" and any(f.has_transparency_data for f in frames):
            # The frames are whole canvases: clear each before drawing the next, or
            # what was opaque in one frame would show through another's transparency.
            params["disposal"] = 2
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_MEMORY)  # noqa: SIM115
    frames[0].save(out, fmt, **params)
    out.seek(0)
    return out  # type: ignore[return-value]


def _thumbnail(frame: Image.Image, icc: bytes | None) -> IO[bytes]:
    """A WebP of ``frame`` whose longest side is at most ``THUMBNAIL_SIZE``."""
    size = int(dm_setting("THUMBNAIL_SIZE"))
    colour_kept = frame.mode in ("RGB", "RGBA")
    thumb = frame.copy()
    if not colour_kept:
        thumb = thumb.convert("RGBA" if thumb.has_transparency_data else "RGB")
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_MEMORY)  # noqa: SIM115
    params: dict[str, Any] = {"quality": 80}
    if icc and colour_kept:
        params["icc_profile"] = icc
    thumb.save(out, "WEBP", **params)
    out.seek(0)
    return out  # type: ignore[return-value]


_UNSAFE_NAME_CHARACTERS = re.compile(r'[\\/:*?"<>|]')


def display_name(client_name: str | None, extension: str) -> str:
    """The client's file name made safe to show and to send in Content-Disposition.

    No directories, no control or invisible characters (a right-to-left override can
    make ``gpj.exe`` look like ``exe.jpg``), no characters a file system refuses, and
    the extension of the detected format rather than the claimed one.
    """
    raw = (client_name or "").replace("\\", "/").rsplit("/", 1)[-1]
    raw = unicodedata.normalize("NFC", raw)
    raw = "".join(ch for ch in raw if unicodedata.category(ch)[0] != "C")
    raw = _UNSAFE_NAME_CHARACTERS.sub("", raw)
    raw = " ".join(raw.split()).strip(" .")
    stem = raw.rsplit(".", 1)[0].strip(" .") if "." in raw else raw
    stem = stem[: DISPLAY_NAME_MAX - len(extension) - 1].strip(" .") or "attachment"
    return f"{stem}.{extension}"


# --- Storing ---------------------------------------------------------------------------


def storage_name(extension: str, suffix: str = "") -> str:
    """A fresh name under ``dm/YYYY/MM/``: a UUID, never anything the client sent."""
    return f"dm/{timezone.now():%Y/%m}/{uuid.uuid4().hex}{suffix}.{extension}"


def _size(fp: IO[bytes]) -> int:
    fp.seek(0, 2)
    size = fp.tell()
    fp.seek(0)
    return size


def _file_store(content: IO[bytes], name: str, content_type: str) -> str:
    return str(default_storage.save(name, TypedFile(content, name, content_type)))


def storage_names_delete(names: Iterable[str]) -> int:
    """Delete stored files by name; returns how many went. Failures are logged, not raised:
    a leftover file is garbage, while an exception here would undo nothing."""
    deleted = 0
    for name in names:
        if not name:
            continue
        try:
            default_storage.delete(name)
            deleted += 1
        except Exception:
            logger.exception("could not delete stored file %s", name)
    return deleted


@dataclass
class StoredUpload:
    """An upload written to storage, with no database row yet."""

    media: MediaType
    file_name: str
    thumbnail_name: str
    size: int
    width: int | None
    height: int | None
    name: str

    def row_create(self, uploader: Any) -> DirectMessageAttachFiles:
        return DirectMessageAttachFiles.objects.create(
            uploader=uploader,
            file=self.file_name,
            thumbnail=self.thumbnail_name,
            kind=self.media.kind,
            content_type=self.media.content_type,
            size=self.size,
            width=self.width,
            height=self.height,
            name=self.name,
        )

    def discard(self) -> None:
        storage_names_delete([self.file_name, self.thumbnail_name])


def upload_store(uploaded_file: UploadedFile) -> StoredUpload:
    """Check, clean and write one upload (and its thumbnail) to storage.

    Either both files are written or neither is left behind.
    """
    if uploaded_file.size is not None and uploaded_file.size > file_max_bytes():
        raise TooLarge(_too_large_detail())
    fp: IO[bytes] = uploaded_file.file  # type: ignore[assignment]
    processed = upload_process(fp)
    media = processed.media
    written: list[str] = []
    try:
        size = _size(processed.content)
        file_name = _file_store(
            processed.content, storage_name(media.extension), media.content_type
        )
        written.append(file_name)
        thumbnail_name = ""
        if processed.thumbnail is not None:
            thumbnail_name = _file_store(
                processed.thumbnail,
                storage_name(THUMBNAIL_TYPE.extension, "_thumb"),
                THUMBNAIL_TYPE.content_type,
            )
            written.append(thumbnail_name)
    except BaseException:
        storage_names_delete(written)
        raise
    finally:
        processed.close()
    return StoredUpload(
        media=media,
        file_name=file_name,
        thumbnail_name=thumbnail_name,
        size=size,
        width=processed.width,
        height=processed.height,
        name=display_name(uploaded_file.name, media.extension),
    )


# --- The actions -----------------------------------------------------------------------


def attachment_create(uploader: Any, uploaded_file: UploadedFile) -> DirectMessageAttachFiles:
    """Store one upload, owned by ``uploader`` and in no message until a send claims it."""
    stored = upload_store(uploaded_file)
    try:
        return stored.row_create(uploader)
    except BaseException:
        stored.discard()
        raise


def attachment_files_delete(attachments: Iterable[DirectMessageAttachFiles]) -> int:
    """Delete the stored file and thumbnail of each attachment row (the rows stay).

    Call it once the rows' fate is committed, e.g. from unsend:
    ``transaction.on_commit(lambda: attachment_files_delete(rows))``; deleting before
    the commit would lose the files of a rolled-back transaction.
    """
    return storage_names_delete(
        name for row in attachments for name in (row.file.name, row.thumbnail.name) if name
    )


def message_send_with_files(
    *,
    sender: Any,
    account: str,
    client_id: Any,
    text: str,
    files: Sequence[UploadedFile],
    reply_to: int | None = None,
) -> services.SendResult:
    """Upload ``files`` and send them as one message: all of it, or nothing.

    The files are checked, cleaned and written first, outside any transaction (Pillow
    and an S3 upload can take seconds, and a transaction open that long would hold
    SQLite's write lock); then their rows and the message are inserted in one
    transaction through :func:`services.message_send`. Any failure deletes the files
    written. A retry of a stored ``client_id`` gets the original message; the copies it
    uploaded again are dropped.
    """
    limit = dm_setting("ATTACHMENTS_PER_MESSAGE")
    if len(files) > limit:
        raise Invalid(f"files: at most {limit} per message")
    check_message_text(text)
    if not text.strip() and not files:
        raise Invalid("message: an empty message needs attachments")
    services.peer_resolve(sender, account)  # refuse before doing any work
    stored: list[StoredUpload] = []
    try:
        for uploaded_file in files:
            stored.append(upload_store(uploaded_file))
        with transaction.atomic():
            rows = [upload.row_create(sender) for upload in stored]
            result = services.message_send(
                sender=sender,
                account=account,
                client_id=client_id,
                text=text,
                attachment_ids=[row.pk for row in rows],
                reply_to=reply_to,
            )
            if not result.created:
                transaction.set_rollback(True)
    except BaseException:
        for upload in stored:
            upload.discard()
        raise
    if not result.created:
        for upload in stored:
            upload.discard()
    return result


def attachments_purge(*, older_than_seconds: int, batch_size: int = 500) -> int:
    """Delete uploads never claimed by a message and older than ``older_than_seconds``,
    rows and files; returns how many.

    Each batch locks its rows (a send claims with ``select_for_update`` too, and
    PostgreSQL re-checks ``message IS NULL`` once the lock is granted; SQLite serialises
    writers), so an upload claimed at the same moment is never deleted under it. Files
    go after the commit.
    """
    cutoff = timezone.now() - dt.timedelta(seconds=older_than_seconds)
    purged = 0
    while True:
        with transaction.atomic():
            rows = list(
                DirectMessageAttachFiles.objects.select_for_update()
                .filter(message__isnull=True, created_at__lt=cutoff)
                .order_by("pk")[:batch_size]
            )
            if not rows:
                return purged
            DirectMessageAttachFiles.objects.filter(pk__in=[row.pk for row in rows]).delete()
            transaction.on_commit(functools.partial(attachment_files_delete, rows))
        purged += len(rows)
