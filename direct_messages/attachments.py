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
* **Decoding is the expensive part** (a decoded pixel takes 4 bytes whatever the file
  size: a 128 KiB PNG can decode to 160 MB), so each process decodes at most
  ``IMAGE_DECODE_CONCURRENCY`` images at once; an upload that waits longer than
  ``IMAGE_DECODE_WAIT_SECONDS`` for its turn is ``rate_limited`` (429). One image holds
  its decoded pixels once (twice only while an EXIF rotation is applied), and the
  thumbnail is reduced strip by strip rather than from a full-size copy.
* **Video and audio** (MP4, QuickTime, WebM; M4A, MP3, Ogg) are recognised by parsing
  their container, not by their first bytes: an MP4 or QuickTime needs an ``ftyp``
  box, boxes that fit the file and a ``moov`` with a sound or video track (and must
  open in mutagen); a WebM an EBML header of doctype ``webm`` and a segment with its
  info, tracks and a first cluster; an MP3 consecutive MPEG audio frames right after
  its ID3 tags; an Ogg a Vorbis, Opus or FLAC stream, head to end (mutagen). The
  tracks decide the kind: an MP4 or WebM without a video track is ``audio``. The walk
  is bounded (boxes, elements, the bytes an Ogg's headers may span), so a file made of
  millions of empty boxes costs a refusal, not seconds of CPU. They are stored byte for
  byte as uploaded.
* Anything else, and a video or audio container that does not parse, is 415; an
  allowed image format that does not decode is 400; an empty file is 400.
* **Size**: :class:`LimitedUploadHandler` streams each file part to a temporary file
  and refuses it (413) as soon as it passes ``FILE_MAX_BYTES``: nothing is read into
  memory first, and a request whose ``Content-Length`` could not fit is refused before
  its body is parsed.
* **Per user**: at most ``UPLOAD_RATE_LIMIT`` files per ``UPLOAD_RATE_WINDOW_SECONDS``
  (429), and at most ``UNCLAIMED_MAX_FILES`` files and ``UNCLAIMED_MAX_BYTES`` bytes
  uploaded and not yet sent (413). Both are counted from the attachment rows, so they
  hold across processes, and checked before any work and again, exactly, in the
  transaction that stores the rows.
* **Storage** goes through Django's default storage only (``STORAGES["default"]``): a
  local directory or S3, decided in settings and nowhere else. Stored names are UUIDs;
  the client's file name survives only as a sanitised display name. Unclaimed uploads
  older than ``UNCLAIMED_ATTACHMENT_TTL_SECONDS`` are purged by a background thread
  that uploads start at most every ``PURGE_INTERVAL_SECONDS`` (and by the
  ``purge_attachments`` command).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import math
import re
import struct
import tempfile
import threading
import time
import unicodedata
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, NoReturn

import puremagic
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.db import connection, connections, transaction
from django.db.models import Count, Sum
from django.http import HttpRequest
from django.utils import timezone
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from PIL import ExifTags, Image, ImageSequence, UnidentifiedImageError

from direct_messages.conf import dm_setting
from direct_messages.errors import (
    ApiError,
    Invalid,
    NotFound,
    RateLimited,
    TooLarge,
    UnsupportedMediaType,
)
from direct_messages.models import AttachmentKind, DirectMessageAttachFiles

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
# The allow-list of video and audio: what a parsed container is stored and served as.
MP4_VIDEO = MediaType(AttachmentKind.VIDEO, "video/mp4", "mp4")
MP4_AUDIO = MediaType(AttachmentKind.AUDIO, "audio/mp4", "m4a")
QUICKTIME = MediaType(AttachmentKind.VIDEO, "video/quicktime", "mov")
WEBM_VIDEO = MediaType(AttachmentKind.VIDEO, "video/webm", "webm")
WEBM_AUDIO = MediaType(AttachmentKind.AUDIO, "audio/webm", "webm")
MP3_AUDIO = MediaType(AttachmentKind.AUDIO, "audio/mpeg", "mp3")
OGG_AUDIO = MediaType(AttachmentKind.AUDIO, "audio/ogg", "ogg")
MEDIA_TYPES = (MP4_VIDEO, MP4_AUDIO, QUICKTIME, WEBM_VIDEO, WEBM_AUDIO, MP3_AUDIO, OGG_AUDIO)
# Image formats puremagic recognises that Pillow must have opened if they were sound.
SNIFFED_IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jfif", ".png", ".gif", ".webp"}

THUMBNAIL_TYPE = MediaType(AttachmentKind.IMAGE, "image/webp", "webp")
# Every content type a file is stored with: what a download may show in place.
STORED_CONTENT_TYPES = frozenset(
    media.content_type for media in (*IMAGE_FORMATS.values(), *MEDIA_TYPES, THUMBNAIL_TYPE)
)

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


# --- Per user: the upload rate and the quota of unclaimed uploads ------------------------

# pg_advisory_xact_lock(UPLOADER_LOCK_SPACE, user id): one uploader's row inserts and
# their count, one transaction at a time. "dmup" in ASCII, so it names no other lock.
UPLOADER_LOCK_SPACE = 0x646D7570


def upload_allowance_check(
    uploader: Any, *, files: int, size: int = 0, unclaimed: bool = False
) -> None:
    """Refuse ``files`` more uploads (``size`` bytes together) from ``uploader``: over
    the upload rate (429, with the seconds until enough of the window has passed), or,
    for uploads that will wait ``unclaimed`` for a send, over the quota of unclaimed
    uploads (413).

    Counted from the uploader's attachment rows, so the limits hold across processes
    with nothing shared but the database. Called before any work (so a refusal costs
    two counts), and again with ``files=0`` after the new rows are inserted, in their
    transaction, under :func:`uploader_lock`: that second count is the exact one.
    """
    rows = DirectMessageAttachFiles.objects.filter(uploader=uploader)
    limit = int(dm_setting("UPLOAD_RATE_LIMIT"))
    window = int(dm_setting("UPLOAD_RATE_WINDOW_SECONDS"))
    since = timezone.now() - dt.timedelta(seconds=window)
    recent = rows.filter(created_at__gte=since).count()
    if recent + files > limit:
        raise RateLimited(
            f"uploads: at most {limit} files per {window} seconds",
            retry_after=_rate_retry_after(rows, since, recent + files - limit, window),
        )
    if not unclaimed:
        return
    waiting = rows.filter(message__isnull=True).aggregate(count=Count("pk"), size=Sum("size"))
    max_files = int(dm_setting("UNCLAIMED_MAX_FILES"))
    max_bytes = int(dm_setting("UNCLAIMED_MAX_BYTES"))
    if waiting["count"] + files > max_files or (waiting["size"] or 0) + size > max_bytes:
        raise TooLarge(
            f"uploads: at most {max_files} files and {_bytes_text(max_bytes)} uploaded "
            "and not yet sent; send them, or wait until they expire"
        )


def _rate_retry_after(rows: Any, since: dt.datetime, excess: int, window: int) -> int:
    """Seconds until ``excess`` of the uploads in the window have left it."""
    times = list(
        rows.filter(created_at__gte=since)
        .order_by("created_at")
        .values_list("created_at", flat=True)[:excess]
    )
    if len(times) < excess:  # more files in one request than the limit allows
        return window
    left = times[-1] + dt.timedelta(seconds=window) - timezone.now()
    return max(1, math.ceil(left.total_seconds()))


def _bytes_text(count: int) -> str:
    if count % (1024 * 1024) == 0:
        return f"{count // (1024 * 1024)} MiB"
    return f"{count} bytes"


def uploader_lock(uploader_id: int) -> None:
    """Serialise one uploader's inserts and counts until the transaction ends.

    PostgreSQL: a transaction-scoped advisory lock (READ COMMITTED would let two
    transactions each count without the other's row). SQLite needs none: its writers
    are serialised, and the rows are inserted before they are counted. Elsewhere the
    count may let a burst of concurrent requests a few rows past the limit.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)",
                [UPLOADER_LOCK_SPACE, uploader_id % 2**31],
            )


# --- Decoding: a few images at a time per process ---------------------------------------


@functools.cache
def _decode_slots(count: int) -> threading.BoundedSemaphore:
    return threading.BoundedSemaphore(count)


@contextlib.contextmanager
def decode_slot() -> Iterator[None]:
    """Hold one of the process's ``IMAGE_DECODE_CONCURRENCY`` image decoding slots.

    A decoded image can take hundreds of MB, so a burst of uploads must queue rather
    than decode all at once; one that waits more than ``IMAGE_DECODE_WAIT_SECONDS`` is
    refused with 429 (the client retries) instead of holding its memory and a thread.
    """
    slots = _decode_slots(int(dm_setting("IMAGE_DECODE_CONCURRENCY")))
    if not slots.acquire(timeout=float(dm_setting("IMAGE_DECODE_WAIT_SECONDS"))):
        raise RateLimited("file: the server is busy with other images; try again", retry_after=1)
    try:
        yield
    finally:
        slots.release()


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

    Images are tried first, with Pillow; what Pillow does not take is parsed as video
    or audio. The caller closes the result.
    """
    fp.seek(0)
    if not fp.read(1):
        raise Invalid("file: empty")
    image = _image_process(fp)
    if image is not None:
        return image
    media = media_parse(fp)
    fp.seek(0)
    return Processed(media=media, content=fp, owns_content=False)


# --- Images ------------------------------------------------------------------------------


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


# How many times its pixels an image counts against IMAGE_MAX_PIXELS: what processing
# it costs, measured (docs/attachments.md), against about 8 bytes per pixel at the peak
# for a JPEG or PNG rotated by its EXIF orientation. Pillow decodes WebP through
# libwebp's animation decoder, which holds the picture about four times over, and the
# encoder as much again (25 bytes per pixel); Pillow's APNG writer copies every frame
# before it writes them (10 bytes per pixel).
WEBP_COST, ANIMATED_PNG_COST = 4, 2


def _decode_cost(fmt: str | None, frames: int) -> int:
    if fmt == "WEBP":
        return WEBP_COST
    if fmt == "PNG" and frames > 1:
        return ANIMATED_PNG_COST
    return 1


def _pixels_detail() -> str:
    return (
        f"file: at most {dm_setting('IMAGE_MAX_PIXELS'):,} pixels per image, all frames "
        f"together (a WebP counts {WEBP_COST} times, an animated PNG {ANIMATED_PNG_COST})"
    )


def _pixels_check(fmt: str | None, width: int, height: int, frames: int = 1) -> None:
    if width * height * frames * _decode_cost(fmt, frames) > dm_setting("IMAGE_MAX_PIXELS"):
        raise TooLarge(_pixels_detail())


def _image_reencode(fp: IO[bytes]) -> Processed:
    formats = list(IMAGE_FORMATS)
    fp.seek(0)
    with Image.open(fp, formats=formats) as probe:
        _pixels_check(probe.format, *probe.size)  # from the header: nothing decoded yet
    with decode_slot():
        fp.seek(0)
        with Image.open(fp, formats=formats) as probe:
            probe.verify()
        fp.seek(0)
        with Image.open(fp, formats=formats) as image:
            _pixels_check(image.format, *image.size, getattr(image, "n_frames", 1))
            media = IMAGE_FORMATS[str(image.format)]
            icc = image.info.get("icc_profile")
            loop = image.info.get("loop")  # absent: the animation plays once
            frames, durations = _frames_decode(image)
            try:
                content = _frames_encode(str(image.format), frames, durations, icc, loop)
                thumbnail = _thumbnail(frames[0], icc)
                width, height = frames[0].size
            finally:
                for frame in frames:  # free the pixels now, not at garbage collection
                    frame.close()
    return Processed(media=media, content=content, width=width, height=height, thumbnail=thumbnail)


def _frames_decode(image: Image.Image) -> tuple[list[Image.Image], list[int]]:
    """Every frame decoded, upright, and stripped of all metadata but transparency.

    A still is decoded in place rather than copied, and its unrotated pixels are freed
    as soon as the rotated ones exist: one image's pixels are held once, twice only
    while an EXIF rotation is applied.
    """
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    transpose = ORIENTATION_TRANSPOSE.get(orientation)
    if getattr(image, "n_frames", 1) == 1:
        image.load()  # decodes: a truncated file fails here
        frames = [image]
        durations = [int(image.info.get("duration") or 0)]
    else:
        frames, durations = [], []
        for frame in ImageSequence.Iterator(image):
            frames.append(frame.copy())  # decodes: a truncated file fails here
            durations.append(int(frame.info.get("duration") or 0))
    for index, frame in enumerate(frames):
        clean = frame
        if transpose is not None:
            clean = frame.transpose(transpose)
            frame.close()
        clean.info = {k: frame.info[k] for k in ("transparency",) if k in frame.info}
        frames[index] = clean
    return frames, durations


def _frames_encode(
    fmt: str,
    frames: list[Image.Image],
    durations: list[int],
    icc: bytes | None,
    loop: Any,
) -> IO[bytes]:
    params: dict[str, Any] = {}
    if icc:
        params["icc_profile"] = icc
    if fmt in ("JPEG", "WEBP"):
        params["quality"] = 90
    if len(frames) > 1:
        params.update(save_all=True, append_images=frames[1:], duration=durations)
        if loop is not None:
            params["loop"] = int(loop)
        if fmt == "GIF" and any(f.has_transparency_data for f in frames):
            # The frames are whole canvases: clear each before drawing the next, or
            # what was opaque in one frame would show through another's transparency.
            params["disposal"] = 2
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_MEMORY)  # noqa: SIM115
    frames[0].save(out, fmt, **params)
    out.seek(0)
    return out  # type: ignore[return-value]


# Rows of the full-size frame converted at a time while the thumbnail is reduced.
THUMBNAIL_STRIP_ROWS = 64


def _thumbnail(frame: Image.Image, icc: bytes | None) -> IO[bytes]:
    """A WebP of ``frame`` whose longest side is at most ``THUMBNAIL_SIZE``."""
    size = int(dm_setting("THUMBNAIL_SIZE"))
    colour_kept = frame.mode in ("RGB", "RGBA")
    mode = frame.mode if colour_kept else ("RGBA" if frame.has_transparency_data else "RGB")
    # Box-reduce to between 2x and 4x the thumbnail, then resample that with Lanczos
    # (what Image.thumbnail's reducing_gap does, without a full-size copy first).
    thumb = _reduced(frame, max(1, max(frame.size) // (size * 2)), mode)
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_MEMORY)  # noqa: SIM115
    params: dict[str, Any] = {"quality": 80}
    if icc and colour_kept:
        params["icc_profile"] = icc
    thumb.save(out, "WEBP", **params)
    thumb.close()
    out.seek(0)
    return out  # type: ignore[return-value]


def _reduced(frame: Image.Image, factor: int, mode: str) -> Image.Image:
    """``frame`` in ``mode``, ``factor`` times smaller, converted a strip at a time (a
    palette image converted whole to RGBA would take four times its own memory)."""
    if factor == 1:
        return frame.convert(mode) if frame.mode != mode else frame.copy()
    width, height = frame.size
    out = Image.new(mode, (-(-width // factor), -(-height // factor)))
    rows = factor * THUMBNAIL_STRIP_ROWS
    for top in range(0, height, rows):
        strip = frame.crop((0, top, width, min(height, top + rows)))
        if strip.mode != mode:
            strip = strip.convert(mode)
        out.paste(strip.reduce(factor), (0, top // factor))
    return out


# --- Video and audio: their containers, parsed -------------------------------------------


class _Unparsable(Exception):
    """A video or audio container that does not parse (reported as 415)."""


class _Budget:
    """How many boxes or elements one file's walk may read in all: each costs a loop
    turn, and 25 MiB hold millions of empty ones."""

    def __init__(self, count: int) -> None:
        self.left = count

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _Unparsable("too many boxes or elements")


def media_parse(fp: IO[bytes]) -> MediaType:
    """What ``fp`` is, by parsing its container; 415 for anything else.

    The first bytes only choose which parser to try: a file is accepted only if that
    parser reads it through (an ``ID3`` tag followed by HTML is not an MP3).
    """
    fp.seek(0)
    head = fp.read(16)
    parser, name = _container_parser(head)
    if parser is None:
        _media_unknown(fp)
    try:
        return parser(fp)
    except _Unparsable as exc:
        raise UnsupportedMediaType(f"file: not a valid {name} file ({exc})") from exc
    except ApiError:
        raise
    except Exception as exc:
        # mutagen, like Pillow, can raise nearly anything on a damaged file.
        raise UnsupportedMediaType(f"file: not a valid {name} file") from exc
    finally:
        fp.seek(0)


def _container_parser(head: bytes) -> tuple[Callable[[IO[bytes]], MediaType] | None, str]:
    if head[4:8] == b"ftyp":
        return _iso_media_parse, "MP4 or QuickTime"
    if head[:4] == EBML_MAGIC:
        return _webm_parse, "WebM"
    if head[:4] == b"OggS":
        return _ogg_parse, "Ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return _mp3_parse, "MP3"
    return None, ""


def _media_unknown(fp: IO[bytes]) -> NoReturn:
    """No allowed container: a damaged image (400) or a format that is not allowed."""
    fp.seek(0)
    try:
        matches = puremagic.magic_stream(fp)
    except (puremagic.PureError, ValueError):
        matches = []
    if not matches:
        raise UnsupportedMediaType("file: not an allowed image, video or audio format")
    best = matches[0].confidence
    top = [m for m in matches if m.confidence == best]
    if any(m.extension in SNIFFED_IMAGE_EXTENSIONS for m in top):
        raise Invalid("file: a damaged or truncated image")
    raise UnsupportedMediaType(f"file: {top[0].name or 'this format'} is not allowed")


# MP3: MPEG audio frames, after ID3v2 tags if any.


def _mp3_parse(fp: IO[bytes]) -> MediaType:
    """An MP3: mutagen must find consecutive MPEG-1/2 layer III frames (a run of
    frames, or one with a Xing/Info header) starting right after the ID3v2 tags, with
    nothing between them but zero padding. mutagen alone would look for frames
    anywhere in the first MiB, so a tag, a page of HTML and two frames would pass."""
    info: Any = MP3(fp).info
    if info.sketchy:
        raise _Unparsable("no run of MPEG audio frames")
    if info.layer != 3:
        raise _Unparsable(f"MPEG layer {info.layer}, not layer III")
    start = _id3_end(fp)
    if info.frame_offset < start:
        raise _Unparsable("audio frames inside the ID3 tag")
    fp.seek(start)
    if fp.read(info.frame_offset - start).strip(b"\0"):
        raise _Unparsable("other data between the tags and the audio")
    return MP3_AUDIO


def _id3_end(fp: IO[bytes]) -> int:
    """Where the ID3v2 tags at the start of ``fp`` end (several may follow each other)."""
    offset = 0
    while True:
        fp.seek(offset)
        header = fp.read(10)
        if len(header) < 10 or header[:3] != b"ID3":
            return offset
        size = 0
        for byte in header[6:10]:  # "syncsafe": 7 bits per byte
            size = (size << 7) | (byte & 0x7F)
        footer = 10 if header[5] & 0x10 else 0
        offset += 10 + size + footer


# Ogg: a Vorbis, Opus or FLAC stream, read by mutagen from its first page to its last.

# The codec named by the first packet of the first page (its identification header).
OGG_AUDIO_PARSERS = {b"\x01vorbis": OggVorbis, b"OpusHead": OggOpus, b"\x7fFLAC": OggFLAC}
# mutagen reads an Ogg's headers from its start and its last page from its end; what it
# may read of the start is bounded, or a file of 25 MiB of empty 28-byte pages would
# cost seconds of CPU while mutagen looked for the end of a header.
OGG_HEAD_BYTES = 1024 * 1024
OGG_TAIL_BYTES = 256 * 256 + 1024


def _ogg_parse(fp: IO[bytes]) -> MediaType:
    fp.seek(0)
    first_page = fp.read(27 + 255 + 16)
    if len(first_page) < 28 or first_page[5] & 0x02 == 0:  # "beginning of stream"
        raise _Unparsable("no first page")
    packet = first_page[27 + first_page[26] :]
    parser = next((p for head, p in OGG_AUDIO_PARSERS.items() if packet.startswith(head)), None)
    if parser is None:
        raise _Unparsable("not a Vorbis, Opus or FLAC stream")
    try:
        parser(_HeadAndTail(fp, OGG_HEAD_BYTES, OGG_TAIL_BYTES))
    except _Unparsable:
        raise
    except Exception as exc:
        raise _Unparsable("not a complete Vorbis, Opus or FLAC stream") from exc
    return OGG_AUDIO


class _HeadAndTail:
    """A read-only view of a file in which only its first ``head`` and last ``tail``
    bytes can be read: reading the middle raises, which bounds what a parser that
    walks a file page by page can be made to do."""

    def __init__(self, fp: IO[bytes], head: int, tail: int) -> None:
        self.fp = fp
        self.size = _size(fp)
        self.head, self.tail_start = head, max(head, self.size - tail)
        fp.seek(0)

    def read(self, size: int = -1) -> bytes:
        start = self.fp.tell()
        end = self.size if size is None or size < 0 else min(self.size, start + size)
        if end > self.head and start < self.tail_start and end > start:
            raise _Unparsable("its headers do not end near its start")
        return self.fp.read(end - start)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.fp.seek(offset, whence)

    def tell(self) -> int:
        return self.fp.tell()


# MP4 and QuickTime (ISO base media): boxes.

# Boxes one file's walk may read (a fragmented MP4 has six or so per fragment).
ISO_MAX_BOXES = 50_000
ISO_HANDLERS = {b"vide": AttachmentKind.VIDEO, b"soun": AttachmentKind.AUDIO}


def _iso_boxes(
    fp: IO[bytes], start: int, end: int, budget: _Budget, *, top: bool = False
) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload offset, end offset)`` of each box from ``start`` to ``end``;
    a box that does not fit, or a size that makes no sense, is refused."""
    offset = start
    while offset < end:
        budget.spend()
        fp.seek(offset)
        header = fp.read(8)
        if len(header) < 8 or offset + 8 > end:
            raise _Unparsable("a box is cut short")
        size, kind = struct.unpack(">I4s", header)
        header_size = 8
        if size == 1:
            large = fp.read(8)
            if len(large) < 8:
                raise _Unparsable("a box is cut short")
            (size,) = struct.unpack(">Q", large)
            header_size = 16
        elif size == 0 and top:  # the last box runs to the end of the file
            size = end - offset
        if size < header_size or offset + size > end:
            raise _Unparsable(f"box {kind!r} does not fit")
        yield kind, offset + header_size, offset + size
        offset += size


def _iso_media_parse(fp: IO[bytes]) -> MediaType:
    """An MP4, M4A or QuickTime file: an ``ftyp`` box first, top-level boxes that fill
    the file exactly (a truncated upload does not), one ``moov`` whose tracks include
    sound or video, and mutagen able to read it. QuickTime stays QuickTime; otherwise
    a file with a video track is ``video/mp4`` and one with sound only ``audio/mp4``."""
    budget = _Budget(ISO_MAX_BOXES)
    boxes = list(_iso_boxes(fp, 0, _size(fp), budget, top=True))
    _iso_tree_walk(fp, boxes, budget)
    if not boxes or boxes[0][0] != b"ftyp" or boxes[0][2] - boxes[0][1] < 8:
        raise _Unparsable("no ftyp box first")
    fp.seek(boxes[0][1])
    brand = fp.read(4)
    movies = [box for box in boxes if box[0] == b"moov"]
    if len(movies) != 1:
        raise _Unparsable("no movie box" if not movies else "several movie boxes")
    kinds = _iso_track_kinds(fp, movies[0], budget)
    if not kinds:
        raise _Unparsable("no sound or video track")
    fp.seek(0)
    MP4(fp)  # mutagen's reading of the movie header and the sound track
    if brand == b"qt  ":
        return QUICKTIME
    return MP4_VIDEO if AttachmentKind.VIDEO in kinds else MP4_AUDIO


# The boxes mutagen descends into (and how many bytes of a header to skip first).
ISO_CONTAINERS = {
    b"moov": 0,
    b"udta": 0,
    b"trak": 0,
    b"mdia": 0,
    b"meta": 4,
    b"ilst": 0,
    b"stbl": 0,
    b"minf": 0,
    b"moof": 0,
    b"traf": 0,
}


def _iso_tree_walk(fp: IO[bytes], top: list[tuple[bytes, int, int]], budget: _Budget) -> None:
    """Walk the box tree as mutagen will read it, within the budget: millions of 8-byte
    boxes in a ``udta`` would cost mutagen seconds of CPU; here they cost a refusal."""
    pending = [box for box in top if box[0] in ISO_CONTAINERS]
    while pending:
        kind, start, end = pending.pop()
        for child in _iso_boxes(fp, start + ISO_CONTAINERS[kind], end, budget):
            if child[0] in ISO_CONTAINERS:
                pending.append(child)


def _iso_track_kinds(fp: IO[bytes], movie: tuple[bytes, int, int], budget: _Budget) -> set[str]:
    """The kinds of the movie's tracks, from each ``trak/mdia/hdlr`` handler type."""
    kinds: set[str] = set()
    for kind, start, end in _iso_boxes(fp, movie[1], movie[2], budget):
        if kind != b"trak":
            continue
        for media in _iso_children(fp, start, end, b"mdia", budget):
            for handler in _iso_children(fp, media[1], media[2], b"hdlr", budget):
                fp.seek(handler[1] + 8)  # version and flags, pre_defined
                found = ISO_HANDLERS.get(fp.read(4))
                if found is not None:
                    kinds.add(found)
    return kinds


def _iso_children(
    fp: IO[bytes], start: int, end: int, wanted: bytes, budget: _Budget
) -> list[tuple[bytes, int, int]]:
    return [box for box in _iso_boxes(fp, start, end, budget) if box[0] == wanted]


# WebM (EBML, the Matroska family): a header, then one segment.

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
EBML_DOCTYPE, EBML_READ_VERSION, DOCTYPE_READ_VERSION = 0x4282, 0x42F7, 0x4285
SEGMENT, INFO, TRACKS, CLUSTER = 0x18538067, 0x1549A966, 0x1654AE6B, 0x1F43B675
TRACK_ENTRY, TRACK_TYPE = 0xAE, 0x83
# The elements a segment may hold (Void and CRC-32 may be anywhere).
SEGMENT_CHILDREN = {
    0x114D9B74,  # SeekHead
    INFO,
    TRACKS,
    CLUSTER,
    0x1C53BB6B,  # Cues
    0x1254C367,  # Tags
    0x1043A770,  # Chapters
    0x1941A469,  # Attachments
    0xEC,  # Void
    0xBF,  # CRC-32
}
WEBM_TRACK_TYPES = {1: AttachmentKind.VIDEO, 2: AttachmentKind.AUDIO}
# Elements one file's walk may read (it stops at the first cluster).
WEBM_MAX_ELEMENTS = 10_000


def _ebml_vint(fp: IO[bytes]) -> tuple[int, int]:
    """An EBML variable-length integer as read, its length marker included, and its
    length in bytes (element ids are written that way; sizes drop the marker)."""
    first = fp.read(1)
    if not first or first[0] == 0:
        raise _Unparsable("an element is cut short or malformed")
    length = 9 - first[0].bit_length()
    rest = fp.read(length - 1)
    if len(rest) < length - 1:
        raise _Unparsable("an element is cut short")
    return int.from_bytes(first + rest, "big"), length


def _ebml_size(fp: IO[bytes]) -> tuple[int | None, int]:
    """An element's data size and the length of the field; ``None`` for "unknown" (all
    value bits set)."""
    raw, length = _ebml_vint(fp)
    value_bits = (1 << (7 * length)) - 1
    value = raw & value_bits
    return (None if value == value_bits else value), length


def _ebml_elements(
    fp: IO[bytes], start: int, end: int, budget: _Budget
) -> Iterator[tuple[int, int, int | None]]:
    """``(id, data offset, size)`` of each element from ``start`` to ``end``; the last
    may have an unknown size (``None``: it runs to ``end``, as when a browser records)."""
    offset = start
    while offset < end:
        budget.spend()
        fp.seek(offset)
        element, id_length = _ebml_vint(fp)
        size, size_length = _ebml_size(fp)
        data = offset + id_length + size_length
        if size is not None and data + size > end:
            raise _Unparsable(f"element {element:#x} does not fit")
        yield element, data, size
        if size is None:
            return
        offset = data + size


def _ebml_read(fp: IO[bytes], data: int, size: int | None, limit: int = 64) -> bytes:
    if size is None or size > limit:
        raise _Unparsable("a header field is too long")
    fp.seek(data)
    return fp.read(size)


def _webm_parse(fp: IO[bytes]) -> MediaType:
    """A WebM file: an EBML header of doctype ``webm``, then a segment holding only
    segment elements, with its info, its tracks (at least one of sound or video) and
    a first cluster of media. Browsers record WebM with unknown sizes: a segment or a
    cluster that runs to the end of the file is fine. Matroska is not allowed."""
    end = _size(fp)
    budget = _Budget(WEBM_MAX_ELEMENTS)
    elements = _ebml_elements(fp, 0, end, budget)
    header = next(elements, None)
    if header is None or header[0] != int.from_bytes(EBML_MAGIC, "big") or header[2] is None:
        raise _Unparsable("no EBML header")
    doctype = b""
    for element, data, size in _ebml_elements(fp, header[1], header[1] + header[2], budget):
        if element == EBML_DOCTYPE:
            doctype = _ebml_read(fp, data, size).rstrip(b"\0")
        elif element in (EBML_READ_VERSION, DOCTYPE_READ_VERSION):
            version = int.from_bytes(_ebml_read(fp, data, size, 8), "big")
            if version > (1 if element == EBML_READ_VERSION else 4):
                raise _Unparsable("a reader version this parser does not know")
    if doctype != b"webm":
        raise _Unparsable(f"doctype {doctype.decode('ascii', 'replace')!r}, not 'webm'")
    segment = next(elements, None)
    if segment is None or segment[0] != SEGMENT:
        raise _Unparsable("no segment after the header")
    segment_end = end if segment[2] is None else segment[1] + segment[2]
    kinds = _webm_segment_kinds(fp, segment[1], segment_end, budget)
    return WEBM_VIDEO if AttachmentKind.VIDEO in kinds else WEBM_AUDIO


def _webm_segment_kinds(fp: IO[bytes], start: int, end: int, budget: _Budget) -> set[str]:
    """The kinds of the segment's tracks, once its info, tracks and first cluster are
    found; what comes after the first cluster is media data, not read."""
    seen: set[int] = set()
    kinds: set[str] = set()
    for element, data, size in _ebml_elements(fp, start, end, budget):
        if element not in SEGMENT_CHILDREN:
            raise _Unparsable(f"element {element:#x} is not a segment element")
        seen.add(element)
        if element == TRACKS:
            kinds |= _webm_track_kinds(fp, data, end if size is None else data + size, budget)
        if element == CLUSTER:
            break
    if INFO not in seen or TRACKS not in seen or CLUSTER not in seen:
        raise _Unparsable("a segment needs its info, tracks and a cluster")
    if not kinds:
        raise _Unparsable("no sound or video track")
    return kinds


def _webm_track_kinds(fp: IO[bytes], start: int, end: int, budget: _Budget) -> set[str]:
    kinds: set[str] = set()
    for element, data, size in _ebml_elements(fp, start, end, budget):
        if element != TRACK_ENTRY or size is None:
            continue
        for field, field_data, field_size in _ebml_elements(fp, data, data + size, budget):
            if field == TRACK_TYPE:
                track_type = int.from_bytes(_ebml_read(fp, field_data, field_size, 8), "big")
                if track_type in WEBM_TRACK_TYPES:
                    kinds.add(WEBM_TRACK_TYPES[track_type])
    return kinds


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


def storage_open(name: str, storage: Any = None) -> IO[bytes]:
    """``name`` opened for reading, its first bytes already fetched, or NotFound.

    S3's files are lazy: opening one asks nothing, and a file deleted after the open
    (an unsend racing a download) would fail later, inside the response, as a 500.
    Touching the handle here makes the fetch happen now, where a file gone is a 404; a
    failure of a file that still exists is an error of the storage, and raises."""
    storage = storage if storage is not None else default_storage
    try:
        handle: IO[bytes] = storage.open(name, "rb")
        handle.seek(0)
    except Exception as exc:
        if isinstance(exc, FileNotFoundError) or not storage.exists(name):
            raise NotFound("no such file") from exc
        raise
    return handle


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
    """Store one upload, owned by ``uploader`` and in no message until a send claims it.

    Over the upload rate or the unclaimed quota it is refused before any decoding, and
    once more, exactly, when its row is inserted (then its files are deleted again).
    """
    upload_allowance_check(uploader, files=1, size=uploaded_file.size or 0, unclaimed=True)
    stored = upload_store(uploaded_file)
    try:
        with transaction.atomic():
            uploader_lock(uploader.pk)
            row = stored.row_create(uploader)
            upload_allowance_check(uploader, files=0, unclaimed=True)
    except BaseException:
        stored.discard()
        raise
    purge_schedule.poke()
    return row


def attachment_files_delete(attachments: Iterable[DirectMessageAttachFiles]) -> int:
    """Delete the stored file and thumbnail of each attachment row (the rows stay).

    Call it once the rows' fate is committed, e.g. from unsend:
    ``transaction.on_commit(lambda: attachment_files_delete(rows))``; deleting before
    the commit would lose the files of a rolled-back transaction.
    """
    return storage_names_delete(
        name for row in attachments for name in (row.file.name, row.thumbnail.name) if name
    )


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


class PurgeSchedule:
    """Purges expired unclaimed uploads by itself: an upload calls :meth:`poke`, which
    starts :func:`attachments_purge` in a background thread at most once every
    ``PURGE_INTERVAL_SECONDS`` in this process (0: never). Uploads are what make
    unclaimed files, so a server that receives none has nothing new to purge.

    The thread is off the request's path; it first looks for expired rows with one
    indexed read, so that it takes no write lock when there is nothing to do, and
    closes its own database connection when it is done.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_at = 0.0
        self._thread: threading.Thread | None = None

    def poke(self) -> threading.Thread | None:
        """Start a purge if one is due and none is running; returns its thread."""
        interval = float(dm_setting("PURGE_INTERVAL_SECONDS"))
        if interval <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            if now < self._next_at or (self._thread is not None and self._thread.is_alive()):
                return None
            self._next_at = now + interval
            self._thread = threading.Thread(target=_purge_expired, name="dm-purge", daemon=True)
            self._thread.start()
            return self._thread

    def reset(self) -> None:
        """Make the next :meth:`poke` start a purge (the interval starts again)."""
        with self._lock:
            self._next_at = 0.0

    def join(self, timeout: float | None = None) -> None:
        """Wait for a running purge to finish."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


purge_schedule = PurgeSchedule()

# Rows per transaction in the background purge: short locks beside live sends.
PURGE_BATCH_SIZE = 100


def _purge_expired() -> None:
    ttl = int(dm_setting("UNCLAIMED_ATTACHMENT_TTL_SECONDS"))
    cutoff = timezone.now() - dt.timedelta(seconds=ttl)
    try:
        if DirectMessageAttachFiles.objects.filter(
            message__isnull=True, created_at__lt=cutoff
        ).exists():
            purged = attachments_purge(older_than_seconds=ttl, batch_size=PURGE_BATCH_SIZE)
            logger.info("purged %d unclaimed attachment(s)", purged)
    except Exception:
        logger.exception("purging unclaimed attachments failed; the next upload retries")
    finally:
        connections.close_all()  # this thread's connections only
