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
from pathlib import Path
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


def _full_box(kind: bytes, payload: bytes, flags: int = 0) -> bytes:
    return _box(kind, struct.pack(">I", flags) + payload)


UNITY_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _descriptor(tag: int, payload: bytes) -> bytes:
    return bytes([tag, len(payload)]) + payload


def _aac_esds() -> bytes:
    """The elementary stream descriptor of AAC-LC, 44.1 kHz, stereo."""
    decoder_specific = _descriptor(5, b"\x12\x10")  # AudioSpecificConfig
    decoder_config = _descriptor(
        4, b"\x40\x15" + bytes(3) + struct.pack(">II", 128000, 128000) + decoder_specific
    )
    return _full_box(
        b"esds", _descriptor(3, struct.pack(">HB", 1, 0) + decoder_config + b"\x06\x01\x02")
    )


def _iso_track(track_id: int, handler: bytes) -> bytes:
    """A track of ``handler`` ``vide`` or ``soun``, one second long, its sample table
    naming avc1 or mp4a (AAC, 44.1 kHz stereo) and no samples."""
    tkhd = _full_box(
        b"tkhd",
        struct.pack(">IIIIII", 0, 0, track_id, 0, 1000, 0)
        + bytes(8)
        + struct.pack(">hhhH", 0, 0, 0x100 if handler == b"soun" else 0, 0)
        + UNITY_MATRIX
        + struct.pack(
            ">II",
            (640 << 16) if handler == b"vide" else 0,
            (480 << 16) if handler == b"vide" else 0,
        ),
        flags=3,
    )
    mdhd = _full_box(b"mdhd", struct.pack(">IIIIHH", 0, 0, 44100, 44100, 0x55C4, 0))
    hdlr = _full_box(b"hdlr", bytes(4) + handler + bytes(12) + b"track\0")
    if handler == b"soun":
        entry = _box(
            b"mp4a",
            bytes(6)
            + struct.pack(">H", 1)
            + bytes(8)
            + struct.pack(">HHHHI", 2, 16, 0, 0, 44100 << 16)
            + _aac_esds(),
        )
    else:
        entry = _box(
            b"avc1",
            bytes(6)
            + struct.pack(">H", 1)
            + bytes(16)
            + struct.pack(">HHIIIH", 640, 480, 0x480000, 0x480000, 0, 1)
            + bytes(32)
            + struct.pack(">Hh", 0x18, -1),
        )
    stbl = _box(b"stbl", _full_box(b"stsd", struct.pack(">I", 1) + entry))
    minf = _box(b"minf", stbl)
    return _box(b"trak", tkhd + _box(b"mdia", mdhd + hdlr + minf))


def iso_media(
    brand: bytes, compatible: tuple[bytes, ...], handlers: tuple[bytes, ...] = (b"vide", b"soun")
) -> bytes:
    """An ISO base media file (the MP4 family): ftyp naming the brand, a moov with a
    movie header and one track per handler, then the media data."""
    ftyp = _box(b"ftyp", brand + b"\x00\x00\x02\x00" + b"".join(compatible))
    mvhd = _full_box(
        b"mvhd",
        struct.pack(">IIII", 0, 0, 1000, 1000)
        + struct.pack(">IH", 0x10000, 0x100)
        + bytes(10)
        + UNITY_MATRIX
        + bytes(24)
        + struct.pack(">I", len(handlers) + 1),
    )
    traks = b"".join(_iso_track(i + 1, h) for i, h in enumerate(handlers))
    return ftyp + _box(b"moov", mvhd + traks) + _box(b"mdat", bytes(range(256)) * 8)


def _ebml_element(element_id: int, payload: bytes, *, unknown_size: bool = False) -> bytes:
    ident = element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")
    size = (
        b"\x01\xff\xff\xff\xff\xff\xff\xff"
        if unknown_size
        else b"\x01" + len(payload).to_bytes(7, "big")
    )
    return ident + size + payload


def _ebml_uint(element_id: int, value: int) -> bytes:
    return _ebml_element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def ebml_header(doctype: bytes) -> bytes:
    """An EBML header as mkvmerge writes it (8-byte sizes)."""
    return _ebml_element(
        0x1A45DFA3,
        _ebml_uint(0x4286, 1)  # EBMLVersion
        + _ebml_uint(0x42F7, 1)  # EBMLReadVersion
        + _ebml_uint(0x42F2, 4)  # EBMLMaxIDLength
        + _ebml_uint(0x42F3, 8)  # EBMLMaxSizeLength
        + _ebml_element(0x4282, doctype)  # DocType
        + _ebml_uint(0x4287, 4)  # DocTypeVersion
        + _ebml_uint(0x4285, 2),  # DocTypeReadVersion
    )


def ebml(
    doctype: bytes = b"webm", track_types: tuple[int, ...] = (1, 2), *, live: bool = False
) -> bytes:
    """A WebM (or another EBML doctype): header, then a segment with its info, one
    track per type (1 video VP8, 2 audio Opus) and a cluster of one block. ``live``:
    segment and cluster of unknown size, as a browser's MediaRecorder writes them."""
    codecs = {1: b"V_VP8", 2: b"A_OPUS"}
    tracks = b"".join(
        _ebml_element(
            0xAE,  # TrackEntry
            _ebml_uint(0xD7, n + 1)  # TrackNumber
            + _ebml_uint(0x73C5, 1000 + n)  # TrackUID
            + _ebml_uint(0x83, kind)  # TrackType
            + _ebml_element(0x86, codecs[kind]),  # CodecID
        )
        for n, kind in enumerate(track_types)
    )
    info = _ebml_element(0x1549A966, _ebml_uint(0x2AD7B1, 1_000_000))  # TimestampScale
    block = _ebml_element(0xA3, b"\x81\x00\x00\x80" + bytes(64))  # SimpleBlock, track 1
    cluster = _ebml_element(0x1F43B675, _ebml_uint(0xE7, 0) + block, unknown_size=live)
    segment = info + _ebml_element(0x1654AE6B, tracks) + cluster
    return ebml_header(doctype) + _ebml_element(0x18538067, segment, unknown_size=live)


MP3_FRAME = b"\xff\xfb\x90\x64" + bytes(413)  # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz


def mp3_bytes(frames: int = 8) -> bytes:
    id3 = b"ID3\x04\x00\x00\x00\x00\x00\x00"  # ID3v2.4, no frames
    return id3 + MP3_FRAME * frames


def _ogg(packets: list[list[bytes]], granule: int) -> bytes:
    """Ogg pages of one logical stream, ``packets`` per page; the last ends the stream."""
    from mutagen.ogg import OggPage

    pages = []
    for sequence, page_packets in enumerate(packets):
        page = OggPage()
        page.serial, page.sequence, page.packets = 0x1234, sequence, page_packets
        page.first = sequence == 0
        page.last = sequence == len(packets) - 1
        page.position = 0 if sequence < 2 else granule
        pages.append(page.write())
    return b"".join(pages)


def ogg_vorbis() -> bytes:
    """Ogg Vorbis: identification, comment and setup headers, then one audio packet."""
    ident = (
        b"\x01vorbis"
        + struct.pack("<IBIiii", 0, 2, 44100, 0, 128000, 0)
        + b"\xb8\x01"  # block sizes 256 and 2048, framing bit
    )
    comment = b"\x03vorbis" + struct.pack("<I", 6) + b"tester" + struct.pack("<I", 0) + b"\x01"
    setup = b"\x05vorbis" + bytes(32)
    return _ogg([[ident], [comment, setup], [bytes(64)]], granule=44100)


def ogg_opus() -> bytes:
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 312, 48000, 0, 0)
    tags = b"OpusTags" + struct.pack("<I", 6) + b"tester" + struct.pack("<I", 0)
    return _ogg([[head], [tags], [b"\xfc" + bytes(40)]], granule=48000)


MEDIA_SAMPLES = {
    "mp4": (iso_media(b"isom", (b"isom", b"iso2", b"avc1", b"mp41")), "video", "video/mp4"),
    "mov": (iso_media(b"qt  ", (b"qt  ",)), "video", "video/quicktime"),
    "webm": (ebml(), "video", "video/webm"),
    "webm recorded live": (ebml(live=True), "video", "video/webm"),
    "m4a": (iso_media(b"M4A ", (b"M4A ", b"mp42", b"isom"), (b"soun",)), "audio", "audio/mp4"),
    "mp4 with sound only": (iso_media(b"isom", (b"isom",), (b"soun",)), "audio", "audio/mp4"),
    "webm with sound only": (ebml(track_types=(2,)), "audio", "audio/webm"),
    "mp3": (mp3_bytes(), "audio", "audio/mpeg"),
    "mp3 without tags": (MP3_FRAME * 8, "audio", "audio/mpeg"),
    "ogg": (ogg_vorbis(), "audio", "audio/ogg"),
    "opus": (ogg_opus(), "audio", "audio/ogg"),
}

ID3_TAG = b"ID3\x04\x00\x00\x00\x00\x00\x00"
# Files that start like an allowed container and are not one: each must be 415.
BAD_MEDIA_SAMPLES = {
    "html behind an id3 tag": ID3_TAG + HTML,
    "html between the id3 tag and mp3 frames": ID3_TAG + HTML + MP3_FRAME * 8,
    "one mp3 frame header then html": MP3_FRAME[:4] + HTML * 20,
    "mp4: ftyp then html": MEDIA_SAMPLES["mp4"][0][:32] + HTML,
    "mp4 truncated": MEDIA_SAMPLES["mp4"][0][:-100],
    "mp4 without a movie box": _box(b"ftyp", b"isom" + bytes(4)) + _box(b"mdat", bytes(64)),
    "mp4 without tracks": iso_media(b"isom", (b"isom",), ()),
    "mov truncated": MEDIA_SAMPLES["mov"][0][:200],
    "m4a: ftyp then html": MEDIA_SAMPLES["m4a"][0][:24] + HTML,
    "webm: header then html": ebml_header(b"webm") + HTML,
    "webm truncated": MEDIA_SAMPLES["webm"][0][:-10],
    "webm without tracks": ebml(track_types=()),
    "ogg: capture pattern then html": b"OggS" + HTML,
    "ogg truncated": MEDIA_SAMPLES["ogg"][0][:60],
}


def mp4_with_a_box_swarm(boxes: int = 60_000) -> bytes:
    """A sound MP4 whose movie box also holds a user-data box of ``boxes`` empty
    boxes: each costs a parser a loop turn, and 25 MiB hold three million."""
    data = iso_media(b"isom", (b"isom",), (b"soun",))
    at = data.index(b"moov") - 4
    (size,) = struct.unpack(">I", data[at : at + 4])
    swarm = _box(b"udta", _box(b"free", b"") * boxes)
    moov = struct.pack(">I", size + len(swarm)) + data[at + 4 : at + size] + swarm
    return data[:at] + moov + data[at + size :]


def webm_with_void_swarm(voids: int = 20_000) -> bytes:
    """A WebM whose segment holds ``voids`` empty Void elements before its tracks."""
    data = ebml()
    at = data.index(b"\x18\x53\x80\x67")  # the segment
    (size,) = struct.unpack(">Q", b"\x00" + data[at + 5 : at + 12])
    payload = b"\xec\x80" * voids + data[at + 12 : at + 12 + size]
    return data[:at] + _ebml_element(0x18538067, payload)


def opus_with_empty_pages(pages: int = 40_000) -> bytes:
    """An Opus file whose header pages are followed by ``pages`` empty pages of another
    stream before its tags: a parser reads them one by one, looking for the tags."""
    from mutagen.ogg import OggPage

    empty = OggPage()
    empty.serial, empty.packets = 0x9999, [b""]
    data = ogg_opus()
    first_page_end = 28 + 19
    return data[:first_page_end] + empty.write() * pages + data[first_page_end:]


BAD_MEDIA_SAMPLES.update(
    {
        "mp4 with 60 000 empty boxes": mp4_with_a_box_swarm(),
        "webm with 20 000 empty elements": webm_with_void_swarm(),
        "opus with 40 000 empty pages before its tags": opus_with_empty_pages(),
    }
)

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
    **{name: (data, 415, "unsupported_media_type") for name, data in BAD_MEDIA_SAMPLES.items()},
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


def test_default_pixel_cap_refuses_what_would_not_fit_in_memory(settings):
    # 6300 x 6300 (39.7 megapixels) passed the old 40 MP cap: a 150 KiB PNG that took
    # over 600 MiB to process. The app's default (not the demo's setting) refuses it.
    settings.DIRECT_MESSAGES = {
        k: v for k, v in settings.DIRECT_MESSAGES.items() if k != "IMAGE_MAX_PIXELS"
    }
    with pytest.raises(TooLarge):
        upload_process(io.BytesIO(png_claiming(6300, 6300)))
    with pytest.raises(TooLarge):
        upload_process(io.BytesIO(png_claiming(5001, 5000)))


def test_webp_pixels_count_four_times_for_what_decoding_them_costs(settings):
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "IMAGE_MAX_PIXELS": 4 * 30 * 20 - 1}
    webp = encoded(Image.new("RGB", (30, 20), BLUE), "WEBP")
    assert upload_process(io.BytesIO(png_bytes(30, 20))).width == 30
    with pytest.raises(TooLarge, match="a WebP counts 4 times"):
        upload_process(io.BytesIO(webp))
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "IMAGE_MAX_PIXELS": 4 * 30 * 20}
    assert upload_process(io.BytesIO(webp)).media.content_type == "image/webp"


def test_an_animated_png_counts_its_pixels_twice(settings):
    frames = [Image.new("RGB", (30, 20), colour) for colour in (RED, BLUE)]
    apng = encoded(frames[0], "PNG", save_all=True, append_images=frames[1:])
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "IMAGE_MAX_PIXELS": 2 * 2 * 600 - 1}
    with pytest.raises(TooLarge):
        upload_process(io.BytesIO(apng))
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "IMAGE_MAX_PIXELS": 2 * 2 * 600}
    assert reopen(upload_process(io.BytesIO(apng)).content).n_frames == 2


# A child process: its peak resident memory while processing the image on stdin, beyond
# what it had once Django, Pillow and mutagen were loaded and warmed up. VmHWM, not
# getrusage: Linux carries ru_maxrss across exec, so a child of a big test process
# would start from its parent's peak.
MEASURE_PEAK = """
import io, sys
import django
django.setup()
from PIL import Image
from direct_messages.attachments import upload_process


def high_water_mark():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


data = sys.stdin.buffer.read()
for fmt in ("PNG", "WEBP"):
    warm = io.BytesIO()
    Image.new("RGB", (8, 8)).save(warm, fmt)
    upload_process(warm)
before = high_water_mark()
upload_process(io.BytesIO(data))
print(high_water_mark() - before)
"""


@pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="needs Linux's /proc/self/status"
)
def test_worst_image_at_the_default_cap_stays_within_its_memory_budget():
    """25 megapixels, RGBA, rotated by EXIF: the costliest still the defaults accept
    (docs/attachments.md). One decoded copy takes 95 MiB; before the decoding was
    changed, this took about 400 MiB, now about 190 (the rotation needs two copies)."""
    import os
    import subprocess
    import sys

    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    data = encoded(Image.new("RGBA", (5000, 5000)), "PNG", exif=exif)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "instamg.settings", "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-c", MEASURE_PEAK],
        input=data,
        capture_output=True,
        cwd=root,
        env=env,
        timeout=120,
        check=True,
    )
    peak = int(result.stdout.split()[-1])
    assert peak < 260 * MiB, f"{peak / MiB:.0f} MiB"


def test_no_more_images_decode_at_once_than_the_setting(settings, monkeypatch):
    import threading

    from direct_messages import attachments

    settings.DIRECT_MESSAGES = {
        **settings.DIRECT_MESSAGES,
        "IMAGE_DECODE_CONCURRENCY": 2,
        "IMAGE_DECODE_WAIT_SECONDS": 30.0,
    }
    lock = threading.Lock()
    active, peak = [0], [0]
    real = attachments._frames_decode

    def slow_decode(image: Any) -> Any:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.1)
            return real(image)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(attachments, "_frames_decode", slow_decode)
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(upload_process(io.BytesIO(png_bytes()))))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 6 and peak[0] == 2


def test_a_large_palette_image_gets_a_true_colour_thumbnail():
    # 2600 px wide: reduced by 2 a strip at a time, then resampled to 640.
    picture = Image.new("RGB", (2600, 1300), RED)
    picture.paste(BLUE, (0, 650, 2600, 1300))
    data = encoded(picture.convert("P", palette=Image.Palette.ADAPTIVE, colors=2), "GIF")
    processed = upload_process(io.BytesIO(data))
    assert processed.thumbnail is not None
    thumbnail = reopen(processed.thumbnail).convert("RGB")
    assert thumbnail.size == (640, 320)
    assert _close(thumbnail.getpixel((320, 40)), RED)
    assert _close(thumbnail.getpixel((320, 280)), BLUE)


def test_a_large_transparent_image_keeps_its_transparency_in_the_thumbnail():
    picture = Image.new("RGBA", (2600, 1300), (*RED, 255))
    picture.paste((0, 0, 0, 0), (0, 0, 1300, 1300))
    processed = upload_process(io.BytesIO(encoded(picture, "PNG")))
    assert processed.thumbnail is not None
    thumbnail = reopen(processed.thumbnail).convert("RGBA")
    assert thumbnail.getpixel((100, 160))[3] == 0
    opaque = thumbnail.getpixel((540, 160))
    assert opaque[3] == 255 and _close(opaque, RED)


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


def test_a_container_built_to_cost_parser_time_is_refused_at_once():
    """25 MiB of such boxes or pages cost mutagen 2 to 5 s of CPU; the walk is
    bounded instead (a number of boxes, the bytes an Ogg's headers may span)."""
    swarm = mp4_with_a_box_swarm(3_000_000)
    pages = opus_with_empty_pages(900_000)
    voids = webm_with_void_swarm(12_000_000)
    assert min(len(swarm), len(pages), len(voids)) > 20 * MiB
    for data in (swarm, pages, voids):
        started = time.process_time()
        with pytest.raises(UnsupportedMediaType):
            upload_process(io.BytesIO(data))
        elapsed = time.process_time() - started
        assert elapsed < 0.5, f"{elapsed:.2f} s of CPU"


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
