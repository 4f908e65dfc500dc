"""Recognising and cleaning uploads: Pillow, puremagic, the streaming size limit.

No database and no storage: these drive ``direct_messages.attachments`` directly. The
sample builders at the top are shared with the integration tests.
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib
from typing import Any

import pytest
from django.test import RequestFactory
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from PIL import ExifTags, Image, ImageCms

from direct_messages.attachments import (
    LimitedUploadHandler,
    display_name,
    upload_process,
)
from direct_messages.errors import Invalid, TooLarge, UnsupportedMediaType

MiB = 1024 * 1024

# --- Sample files (built here, never checked in) ----------------------------------------

RED, BLUE = (255, 0, 0), (0, 0, 255)


def encoded(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def jpeg_with_gps_and_orientation(width: int = 1200, height: int = 800) -> bytes:
    """Left half red, right half blue, stored sideways: EXIF orientation 6 says "rotate
    90° clockwise to view". Carries GPS, a camera make, model, serial number and a
    comment, all of which must be gone from the stored copy."""
    image = Image.new("RGB", (width, height), RED)
    image.paste(BLUE, (width // 2, 0, width, height))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "Canon"
    exif[ExifTags.Base.Model] = "EOS 5D Mark IV"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.BodySerialNumber] = "SERIAL-0123456789"
    exif.get_ifd(ExifTags.IFD.GPSInfo).update(
        {
            ExifTags.GPS.GPSLatitudeRef: "N",
            ExifTags.GPS.GPSLatitude: (51.0, 30.0, 26.0),
            ExifTags.GPS.GPSLongitudeRef: "W",
            ExifTags.GPS.GPSLongitude: (0.0, 7.0, 39.0),
        }
    )
    return encoded(image, "JPEG", exif=exif, comment=b"shot at home", quality=90)


def png_bytes(width: int = 64, height: int = 48, colour: Any = RED, **params: Any) -> bytes:
    return encoded(Image.new("RGB", (width, height), colour), "PNG", **params)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR (with a correct CRC) claims ``width`` x ``height``."""
    data = png_bytes(8, 8)
    ihdr = struct.pack(">II", width, height) + data[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return data[:16] + ihdr + crc + data[33:]


def truncated_jpeg() -> bytes:
    data = encoded(Image.effect_noise((300, 300), 64).convert("RGB"), "JPEG")
    return data[: len(data) // 2]


def eps_bytes() -> bytes:
    return encoded(Image.new("RGB", (16, 16), RED), "EPS")


HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>alert(1)</script></svg>"
)


def png_header_then_html() -> bytes:
    return png_bytes()[:8] + HTML


def animated_gif(frames: int = 3, size: int = 40) -> bytes:
    """``frames`` frames, each with one opaque square on a transparent canvas, at a
    different place; durations 100, 200, 300... ms; loops forever."""
    images = []
    colours = [RED, (0, 255, 0), BLUE, (255, 255, 0)]
    for i in range(frames):
        frame = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        x = (i * 10) % size
        frame.paste(colours[i % len(colours)] + (255,), (x, 0, x + 10, 10))
        images.append(frame)
    return encoded(
        images[0],
        "GIF",
        save_all=True,
        append_images=images[1:],
        duration=[100 * (i + 1) for i in range(frames)],
        loop=0,
        disposal=2,
        comment=b"made by a tracker",
    )


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def iso_media(brand: bytes, compatible: tuple[bytes, ...]) -> bytes:
    """An ISO base media file (MP4 family): ftyp naming the brand, then free and mdat."""
    ftyp = _box(b"ftyp", brand + b"\x00\x00\x02\x00" + b"".join(compatible))
    return ftyp + _box(b"free", b"") + _box(b"mdat", bytes(range(256)) * 8)


def ebml(doctype: bytes) -> bytes:
    """An EBML header as mkvmerge writes it (8-byte size), then a Segment."""
    header = (
        b"\x42\x86\x81\x01"  # EBMLVersion 1
        b"\x42\xf7\x81\x01"  # EBMLReadVersion 1
        b"\x42\xf2\x81\x04"  # EBMLMaxIDLength 4
        b"\x42\xf3\x81\x08"  # EBMLMaxSizeLength 8
        + b"\x42\x82"
        + bytes([0x80 | len(doctype)])
        + doctype
        + b"\x42\x87\x81\x04"  # DocTypeVersion 4
        + b"\x42\x85\x81\x02"  # DocTypeReadVersion 2
    )
    size = b"\x01" + len(header).to_bytes(7, "big")
    return b"\x1a\x45\xdf\xa3" + size + header + b"\x18\x53\x80\x67\x01" + bytes(512)


def mp3_bytes() -> bytes:
    id3 = b"ID3\x04\x00\x00\x00\x00\x00\x00"  # ID3v2.4, no frames
    frame = b"\xff\xfb\x90\x64" + bytes(413)  # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz
    return id3 + frame * 4


def ogg_vorbis() -> bytes:
    page = b"OggS\x00\x02" + bytes(8) + b"\x01\x00\x00\x00" + bytes(8) + b"\x01\x1e"
    return page + b"\x01vorbis" + bytes(23) + b"OggS\x00\x00" + bytes(200)


MEDIA_SAMPLES = {
    "mp4": (iso_media(b"isom", (b"isom", b"iso2", b"avc1", b"mp41")), "video", "video/mp4"),
    "mov": (iso_media(b"qt  ", (b"qt  ",)), "video", "video/quicktime"),
    "webm": (ebml(b"webm"), "video", "video/webm"),
    "m4a": (iso_media(b"M4A ", (b"M4A ", b"mp42", b"isom")), "audio", "audio/mp4"),
    "mp3": (mp3_bytes(), "audio", "audio/mpeg"),
    "ogg": (ogg_vorbis(), "audio", "audio/ogg"),
}

# name -> (bytes, HTTP status, error code): files that must be refused.
BAD_SAMPLES = {
    "html renamed .jpg": (HTML, 415, "unsupported_media_type"),
    "svg renamed .jpg": (SVG, 415, "unsupported_media_type"),
    "png header then html": (png_header_then_html(), 400, "invalid"),
    "truncated jpeg": (truncated_jpeg(), 400, "invalid"),
    "eps": (eps_bytes(), 415, "unsupported_media_type"),
    "empty": (b"", 400, "invalid"),
    "png claiming 30000x30000": (png_claiming(30000, 30000), 413, "too_large"),
    "matroska (not webm)": (ebml(b"matroska"), 415, "unsupported_media_type"),
}
ERROR_CLASS = {400: Invalid, 413: TooLarge, 415: UnsupportedMediaType}


def reopen(fp: Any) -> Image.Image:
    fp.seek(0)
    return Image.open(io.BytesIO(fp.read()))


# --- Images -----------------------------------------------------------------------------


def test_jpeg_is_rotated_by_its_exif_orientation_then_stored_without_any_metadata():
    processed = upload_process(io.BytesIO(jpeg_with_gps_and_orientation(1200, 800)))
    raw = processed.content.read()
    stored = Image.open(io.BytesIO(raw))
    assert stored.format == "JPEG" and processed.media.content_type == "image/jpeg"
    assert stored.size == (800, 1200) and (processed.width, processed.height) == (800, 1200)
    # Rotated 90° clockwise: the red left half is now the top, the blue right half the bottom.
    rgb = stored.convert("RGB")
    assert _close(rgb.getpixel((400, 100)), RED) and _close(rgb.getpixel((400, 1100)), BLUE)
    assert len(stored.getexif()) == 0 and "exif" not in stored.info
    assert b"Exif\x00\x00" not in raw and b"GPS" not in raw
    assert b"Canon" not in raw and b"SERIAL-0123456789" not in raw and b"shot at home" not in raw
    assert "comment" not in stored.info and "xmp" not in stored.info


def test_thumbnail_is_a_webp_whose_longest_side_is_640():
    processed = upload_process(io.BytesIO(jpeg_with_gps_and_orientation(1200, 800)))
    assert processed.thumbnail is not None
    thumbnail = reopen(processed.thumbnail)
    assert thumbnail.format == "WEBP" and thumbnail.size == (427, 640)
    assert len(thumbnail.getexif()) == 0


def test_thumbnail_size_follows_the_setting(settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "THUMBNAIL_SIZE": 100}
    processed = upload_process(io.BytesIO(png_bytes(400, 200)))
    assert processed.thumbnail is not None and reopen(processed.thumbnail).size == (100, 50)


def test_small_image_thumbnail_is_not_enlarged():
    processed = upload_process(io.BytesIO(png_bytes(64, 48)))
    assert processed.thumbnail is not None and reopen(processed.thumbnail).size == (64, 48)


def test_icc_profile_is_kept_because_colour_needs_it():
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encoded(Image.new("RGB", (32, 32), RED), "JPEG", icc_profile=profile)
    processed = upload_process(io.BytesIO(data))
    assert reopen(processed.content).info.get("icc_profile") == profile


def test_png_text_chunks_are_dropped():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "secret author")
    info.add_text("Location", "51.5, -0.1", zip=True)
    processed = upload_process(io.BytesIO(png_bytes(pnginfo=info)))
    raw = processed.content.read()
    assert b"secret author" not in raw and b"tEXt" not in raw and b"zTXt" not in raw
    assert Image.open(io.BytesIO(raw)).format == "PNG"


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("GIF", "image/gif"), ("WEBP", "image/webp")],
)
def test_allowed_image_formats_keep_their_format(fmt, content_type):
    data = encoded(Image.new("RGB", (30, 20), BLUE), fmt)
    processed = upload_process(io.BytesIO(data))
    assert processed.media.kind == "image" and processed.media.content_type == content_type
    assert reopen(processed.content).format == fmt
    assert (processed.width, processed.height) == (30, 20)


def test_format_is_chosen_by_content_not_by_claims():
    # A PNG is a PNG, whatever the name or the client said: nothing here sees them.
    processed = upload_process(io.BytesIO(png_bytes()))
    assert processed.media.content_type == "image/png" and processed.media.extension == "png"


def test_animated_gif_stays_animated_with_its_timing():
    processed = upload_process(io.BytesIO(animated_gif(frames=3)))
    stored = reopen(processed.content)
    assert stored.format == "GIF" and stored.n_frames == 3 and stored.is_animated
    assert stored.info.get("loop") == 0 and "comment" not in stored.info
    seen = []
    for index in range(3):
        stored.seek(index)
        frame = stored.convert("RGBA")
        seen.append((stored.info["duration"], [frame.getpixel((x, 0))[3] > 0 for x in (0, 10, 20)]))
    # Each frame shows only its own square: no frame bleeds into the next.
    assert seen == [
        (100, [True, False, False]),
        (200, [False, True, False]),
        (300, [False, False, True]),
    ]
    assert processed.thumbnail is not None
    thumbnail = reopen(processed.thumbnail)
    assert thumbnail.format == "WEBP" and getattr(thumbnail, "n_frames", 1) == 1


def test_animation_pixels_count_all_frames_against_the_limit(settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "IMAGE_MAX_PIXELS": 40 * 40 * 2}
    with pytest.raises(TooLarge):
        upload_process(io.BytesIO(animated_gif(frames=3, size=40)))
    assert upload_process(io.BytesIO(animated_gif(frames=2, size=40))).media.kind == "image"


# --- Refusals ---------------------------------------------------------------------------


def test_png_claiming_30000_by_30000_is_refused_fast_with_bounded_memory():
    data = png_claiming(30000, 30000)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(TooLarge):
            upload_process(io.BytesIO(data))
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 5 * MiB  # 900 megapixels would be 2.7 GB decoded


def test_image_over_the_configured_pixel_limit_is_too_large(settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "IMAGE_MAX_PIXELS": 100 * 100}
    with pytest.raises(TooLarge):
        upload_process(io.BytesIO(png_bytes(101, 100)))
    assert upload_process(io.BytesIO(png_bytes(100, 100))).width == 100


def test_pillow_decompression_bomb_warning_is_an_error(settings):
    # With our own limit raised out of the way, Pillow's warning (over ~89 megapixels)
    # still refuses the file instead of decoding 100 megapixels.
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "IMAGE_MAX_PIXELS": 10**12}
    with pytest.raises(TooLarge):
        upload_process(io.BytesIO(png_claiming(10000, 10000)))


@pytest.mark.parametrize("name", list(BAD_SAMPLES))
def test_bad_files_are_refused_with_the_right_error(name):
    data, status, _ = BAD_SAMPLES[name]
    with pytest.raises(ERROR_CLASS[status]):
        upload_process(io.BytesIO(data))


# --- Video and audio --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MEDIA_SAMPLES))
def test_video_and_audio_are_recognised_by_their_bytes_and_kept_as_uploaded(name):
    data, kind, content_type = MEDIA_SAMPLES[name]
    upload = io.BytesIO(data)
    processed = upload_process(upload)
    assert (processed.media.kind, processed.media.content_type) == (kind, content_type)
    assert processed.content is upload and not processed.owns_content
    assert processed.content.read() == data
    assert processed.thumbnail is None and processed.width is None


# --- Display names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_name", "extension", "expected"),
    [
        ("holiday.jpg", "jpg", "holiday.jpg"),
        ("../../etc/passwd", "png", "passwd.png"),
        ("C:\\Users\\me\\cat.JPG", "jpg", "cat.jpg"),
        ("invoice\u202egpj.exe", "png", "invoicegpj.png"),  # right-to-left override removed
        ('a"b<c>\x00d\r\n.png', "png", "abcd.png"),
        ("photo.png", "jpg", "photo.jpg"),  # the detected format wins over the claim
        ("", "webm", "attachment.webm"),
        (None, "mp3", "attachment.mp3"),
        ("...", "gif", "attachment.gif"),
        ("été à Zürich.jpeg", "jpg", "été à Zürich.jpg"),
    ],
)
def test_display_name_is_sanitised(client_name, extension, expected):
    assert display_name(client_name, extension) == expected


def test_display_name_is_capped():
    name = display_name("x" * 500 + ".jpg", "jpg")
    assert len(name) <= 120 and name.endswith(".jpg")


# --- The size limit while streaming -----------------------------------------------------


class CountingStream(io.BytesIO):
    """The request body, counting what the parser actually read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def multipart_request(files: list[tuple[str, bytes]], content_length: int | None = None) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    fields: dict[str, Any] = {"client_id": "x"}
    for field, data in files:
        fields.setdefault(field, []).append(SimpleUploadedFile("f.bin", data))
    body = encode_multipart(BOUNDARY, fields)
    request = RequestFactory().generic("POST", "/upload", body, content_type=MULTIPART_CONTENT)
    stream = CountingStream(body)
    request._stream = stream
    request.META["CONTENT_LENGTH"] = str(content_length if content_length else len(body))
    return request, stream


def test_file_over_the_limit_is_refused_while_it_streams_in(settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "FILE_MAX_BYTES": 128 * 1024}
    # 1 MiB: small enough that Content-Length alone does not give it away.
    request, stream = multipart_request([("files", bytes(MiB))])
    handler = LimitedUploadHandler(request, max_files=1)
    request.upload_handlers = [handler]
    with pytest.raises(TooLarge):
        request.FILES  # noqa: B018
    # The parser stopped within a few 64 KiB chunks of the limit, far from the 1 MiB.
    assert stream.bytes_read < 512 * 1024
    assert handler.opened == []  # its temporary file is closed, so deleted


def test_file_of_exactly_the_limit_passes_the_handler(settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "FILE_MAX_BYTES": 128 * 1024}
    request, _ = multipart_request([("files", bytes(128 * 1024))])
    request.upload_handlers = [LimitedUploadHandler(request, max_files=1)]
    upload = request.FILES["files"]
    assert upload.size == 128 * 1024
    assert hasattr(upload, "temporary_file_path")  # streamed to disk, not held in memory


def test_body_too_long_for_the_files_allowed_is_refused_before_reading(settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "FILE_MAX_BYTES": 128 * 1024}
    request, stream = multipart_request([("files", b"x")], content_length=64 * MiB)
    request.upload_handlers = [LimitedUploadHandler(request, max_files=2)]
    with pytest.raises(TooLarge):
        request.FILES  # noqa: B018
    assert stream.bytes_read == 0


def test_more_file_parts_than_allowed_are_refused():
    request, _ = multipart_request([("files", b"a"), ("files", b"b"), ("files", b"c")])
    handler = LimitedUploadHandler(request, max_files=2)
    request.upload_handlers = [handler]
    with pytest.raises(Invalid):
        request.FILES  # noqa: B018
    assert handler.opened == []


def _close(pixel: Any, expected: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], expected, strict=True))
