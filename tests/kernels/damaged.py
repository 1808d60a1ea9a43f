"""Damaged photos, made here from real encoded ones: one ``Case`` per class of damage, with what graywave
does with it and what Pillow (default settings, ``LOAD_TRUNCATED_IMAGES`` off: roughly what browsers
agree on for what can be recovered) does.

The table "Damaged photos: processed or rejected" of docs/data.md is this one (``tests/kernels/
test_damaged.py`` checks every row, and that the table lists every class). ``python -m
tests.kernels.damaged OUT`` writes the files into ``OUT`` for a look with other viewers.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from graywave.service.samples import encode
from tests.helpers import sample_photo

PROCESSED = "processed"


@dataclass(frozen=True)
class Case:
    name: str
    format: str
    damage: str
    """What was done to the file (the words of docs/data.md's table)."""
    data: bytes
    outcome: str
    """``processed``, or the reason of the reject."""
    original: bytes | None = None
    """Processed, with the pixels of this undamaged file, bit for bit; ``None``: with what Pillow decodes of
    the damaged bytes (the damage changed pixels, the way every viewer shows them)."""
    pillow: str = PROCESSED
    """What Pillow does: ``processed`` or ``rejected``."""
    gpu_sees: bool = True
    """False: damage that only an entropy decode shows; the GPU codec (nvImageCodec) decodes it, see docs/data.md."""


@cache
def jpeg(**options: object) -> bytes:
    return encode(sample_photo(), "JPEG", quality=90, **options)


def header_markers(data: bytes) -> list[tuple[int, int]]:
    """(position, code) of a clean JPEG's markers from the first after SOI to its first SOS, by segment lengths."""
    found, pos = [], 2
    while True:
        code = data[pos + 1]
        found.append((pos, code))
        if code == 0xDA:
            return found
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")


def scan_markers(data: bytes, codes: range | tuple[int, ...]) -> list[int]:
    """Positions of the markers with these codes after the first SOS (RSTn, or a progressive JPEG's DHT/SOS)."""
    start = header_markers(data)[-1][0]
    return [i for i in range(start + 2, len(data) - 1) if data[i] == 0xFF and data[i + 1] in codes]


def insert(data: bytes, at: int, extra: bytes) -> bytes:
    return data[:at] + extra + data[at:]


def overwrite(data: bytes, at: int, junk: bytes) -> bytes:
    return data[:at] + junk + data[at + len(junk) :]


def junk(size: int, seed: int) -> bytes:
    """Random bytes with no FF in them (no marker, no fill): damage that decoders read as image data."""
    return np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8).tobytes()


STRAY = b"\x00\x01\x02"


def jpeg_cases() -> list[Case]:
    clean = jpeg()
    markers = header_markers(clean)
    by_code = {code: pos for pos, code in reversed(markers)}  # the first of each
    sos = by_code[0xDA]
    scan = len(clean) - sos
    restarts = jpeg(restart_marker_rows=1)
    rst = scan_markers(restarts, range(0xD0, 0xD8))
    progressive = jpeg(progressive=True)
    between_scans = scan_markers(progressive, (0xC4, 0xDA))
    app0 = bytearray(clean)
    assert app0[6:11] == b"JFIF\x00"
    app0[11] = 3  # JFIF 3.01
    icc = _icc_jpeg()
    bad_icc = bytearray(icc)
    bad_icc[icc.index(b"ICC_PROFILE\x00") + 12] = 5  # chunk 5 of 1
    last_sos = clean.rindex(b"\xff\xda")
    sos_end = last_sos + 2 + int.from_bytes(clean[last_sos + 2 : last_sos + 4], "big")
    adobe = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x07"  # transform 7: unknown
    swapped = bytearray(restarts)
    swapped[rst[3] + 1] = 0xD5  # RST3 -> RST5
    c = Case
    cases = [
        c("jpeg-clean", "JPEG", "none", clean, PROCESSED, clean),
        c("jpeg-stray-before-dht", "JPEG", "3 stray bytes before a DHT marker (0xc4), as some phones write",
          insert(clean, by_code[0xC4], STRAY), PROCESSED, clean),
        *[
            c(f"jpeg-stray-before-{name}", "JPEG", f"stray bytes before the {name.upper()} marker",
              insert(clean, by_code[code], STRAY * 3), PROCESSED, clean)
            for name, code in (("dqt", 0xDB), ("sof", 0xC0), ("sos", 0xDA))
        ],
        c("jpeg-stray-before-every-segment", "JPEG", "stray bytes before every header segment",
          _insert_all(clean, [pos for pos, _ in markers[1:]], STRAY), PROCESSED, clean),
        c("jpeg-stray-after-soi", "JPEG", "stray bytes right after the start-of-image marker (FF D8 00)",
          insert(clean, 2, STRAY), "corrupt", pillow="rejected"),
        c("jpeg-padding-before-eoi", "JPEG", "zero padding (60 bytes) between the image data and the EOI marker",
          insert(clean, len(clean) - 2, bytes(60)), PROCESSED, clean),
        c("jpeg-junk-before-eoi", "JPEG", "60 bytes (not padding) between the image data and the EOI marker",
          insert(clean, len(clean) - 2, junk(60, 1)), "corrupt", gpu_sees=False),
        c("jpeg-padding-before-rsts", "JPEG", "zero padding before two restart markers",
          _insert_all(restarts, [rst[1], rst[9]], bytes(5)), PROCESSED, restarts),
        c("jpeg-junk-before-rst", "JPEG", "3 bytes (not padding) before a restart marker (RST2)",
          insert(restarts, rst[2], STRAY), "corrupt", gpu_sees=False),
        c("jpeg-padding-between-scans", "JPEG", "zero padding between the scans of a progressive JPEG",
          _insert_all(progressive, [between_scans[2], between_scans[-3]], bytes(4)), PROCESSED, progressive),
        c("jpeg-junk-between-scans", "JPEG", "12 bytes (not padding) between the scans of a progressive JPEG",
          insert(progressive, between_scans[2], junk(12, 8)), "corrupt", gpu_sees=False),
        c("jpeg-appended", "JPEG", "bytes appended after the end-of-image marker", clean + b"trailing " * 40,
          PROCESSED, clean),
        c("jpeg-jfif-revision", "JPEG", "an unknown JFIF revision (3.01)", bytes(app0), PROCESSED, clean),
        c("jpeg-bad-icc", "JPEG", "a broken ICC profile segment (chunk 5 of 1)", bytes(bad_icc), PROCESSED, icc),
        c("jpeg-adobe-transform", "JPEG", "an unknown Adobe colour transform code (7)", insert(clean, 2, adobe),
          PROCESSED, clean),
        c("jpeg-sos-parameters", "JPEG", "spectral selection 0-5 in the SOS of a sequential JPEG (ignored by it)",
          overwrite(clean, sos_end - 2, b"\x05"), PROCESSED, clean),
        c("jpeg-no-eoi", "JPEG", "the end-of-image marker missing (the last 2 bytes)", clean[:-2], "truncated",
          pillow="rejected"),
        *[
            c(f"jpeg-cut-{where}", "JPEG", f"cut {words}", clean[:at], "truncated", pillow="rejected")
            for where, words, at in (
                ("in-dqt", "in a quantisation table", by_code[0xDB] + 30),
                ("in-dht", "in a Huffman table", by_code[0xC4] + 10),
                ("after-sof", "after the frame header", by_code[0xC4]),
                ("after-sos-header", "right after the scan header", sos + 14),
                ("mid-scan", "half-way through the image data", sos + scan // 2),
                ("near-end", "10 bytes before the end", len(clean) - 10),
            )
        ],
        c("jpeg-header-only", "JPEG", "the header alone (cut before the first scan)", clean[:sos], "truncated",
          pillow="rejected"),
        c("jpeg-soi-only", "JPEG", "the start-of-image marker alone (FF D8)", clean[:2], "truncated",
          pillow="rejected"),
        c("jpeg-soi-then-junk", "JPEG", "FF D8, then random bytes", clean[:2] + junk(4000, 2), "corrupt",
          pillow="rejected"),
        c("jpeg-unknown-marker", "JPEG", "FF D8 FF, then an unknown marker (0x02) and random bytes",
          clean[:2] + b"\xff\x02" + junk(4000, 3), "corrupt", pillow="rejected"),
        c("jpeg-junk-little", "JPEG",
          "a little of the image data overwritten with random bytes (16 bytes), which libjpeg decodes without a word",
          overwrite(clean, sos + scan * 6 // 10, junk(16, 4)), PROCESSED),
        c("jpeg-junk-invalid-codes", "JPEG",
          "16 bytes of the image data overwritten with invalid Huffman codes (FF 00, one bits)",
          overwrite(clean, sos + scan // 2, b"\xff\x00" * 8), "corrupt", gpu_sees=False),
        c("jpeg-junk-lot", "JPEG", "2000 bytes of the image data overwritten (a data segment cut short)",
          overwrite(clean, sos + 20, bytes(range(256)) * 7 + bytes(208)), "corrupt", gpu_sees=False),
        c("jpeg-rst-out-of-order", "JPEG", "a restart marker out of order (RST5 where RST3 belongs)",
          bytes(swapped), "corrupt"),
        c("jpeg-rst-missing", "JPEG", "a restart marker missing (RST3 and its data cut out)",
          restarts[: rst[3]] + restarts[rst[4] :], "corrupt"),
    ]  # fmt: skip
    return cases


def _insert_all(data: bytes, positions: list[int], extra: bytes) -> bytes:
    for at in sorted(positions, reverse=True):
        data = insert(data, at, extra)
    return data


def _icc_jpeg() -> bytes:
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return jpeg(icc_profile=profile)


def png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(position, type, data length) of each chunk."""
    found, pos = [], 8
    while pos < len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        found.append((pos, data[pos + 4 : pos + 8], length))
        pos += 12 + length
    return found


def png_with(data: bytes, kind: bytes, *, crc: bool = True, body: bytes | None = None) -> bytes:
    """``data`` with its first ``kind`` chunk's CRC flipped (``crc``) or its data replaced by ``body``
    (the CRC recomputed, so that only the data is wrong)."""
    pos, _, length = next(chunk for chunk in png_chunks(data) if chunk[1] == kind)
    out = bytearray(data)
    if body is not None:
        out[pos + 8 : pos + 8 + len(body)] = body
        out[pos + 8 + length : pos + 12 + length] = struct.pack(">I", zlib.crc32(out[pos + 4 : pos + 8 + length]))
    if crc:
        out[pos + 8 + length] ^= 0xFF
    return bytes(out)


def png_cases() -> list[Case]:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "taken on a phone")
    clean = encode(sample_photo(), "PNG", pnginfo=info)
    chunks = png_chunks(clean)
    idats = [(pos, length) for pos, kind, length in chunks if kind == b"IDAT"]
    assert len(idats) >= 2, "the tests need a PNG of several IDAT chunks"
    first, _ = idats[0]
    c = Case
    return [
        c("png-clean", "PNG", "none", clean, PROCESSED, clean),
        c("png-bad-crc-text", "PNG", "a wrong CRC in an ancillary chunk (tEXt)", png_with(clean, b"tEXt"),
          PROCESSED, clean, pillow="rejected"),
        c("png-bad-crc-idat", "PNG", "a wrong CRC in an IDAT chunk, its data intact", png_with(clean, b"IDAT"),
          "corrupt", pillow=PROCESSED),
        c("png-bad-crc-ihdr", "PNG", "a wrong CRC in the IHDR chunk", png_with(clean, b"IHDR"), "corrupt",
          pillow="rejected"),
        c("png-junk-in-idat", "PNG", "IDAT data overwritten (its CRC no longer matches)",
          overwrite(clean, first + 8 + 2000, junk(64, 5)), "corrupt", pillow="rejected"),
        c("png-junk-in-idat-crc-fixed", "PNG", "IDAT data overwritten and its CRC recomputed (zlib's check fails)",
          png_with(clean, b"IDAT", crc=False, body=b"\x78\x01" + junk(2000, 6)), "corrupt", pillow="rejected"),
        c("png-no-iend", "PNG", "the IEND chunk missing (the image data complete)", clean[:-12], PROCESSED,
          clean),
        c("png-cut-between-idats", "PNG", "cut between two IDAT chunks", clean[: idats[1][0]], "truncated",
          pillow="rejected"),
        c("png-cut-mid-idat", "PNG", "cut inside an IDAT chunk", clean[: idats[1][0] + 5000], "truncated",
          pillow="rejected"),
        c("png-cut-in-header", "PNG", "cut inside the IHDR chunk", clean[:20], "truncated", pillow="rejected"),
        c("png-cut-in-signature", "PNG", "cut inside the signature", clean[:6], "truncated", pillow="rejected"),
        c("png-appended", "PNG", "bytes appended after IEND", clean + b"trailing " * 40, PROCESSED, clean),
    ]  # fmt: skip


def container_cases(fmt: str) -> list[Case]:
    """WebP (lossy and lossless), HEIC, AVIF: cut at several points, damaged inside, bytes appended."""
    options = {"WEBP": {"quality": 80}, "WEBP-lossless": {"lossless": True}, "HEIF": {"quality": 80}}
    name = fmt.lower()
    clean = encode(sample_photo(), fmt.split("-")[0], **options.get(fmt, {"quality": 80}))
    middle = len(clean) // 2
    c = Case
    label = fmt.split("-")[0]
    cases = [
        c(f"{name}-clean", label, "none", clean, PROCESSED, clean),
        c(f"{name}-appended", label, "bytes appended at the end", clean + b"trailing " * 40, PROCESSED, clean),
        *[
            c(f"{name}-cut-{where}", label, f"cut {words}", clean[:at], "truncated", pillow="rejected")
            for where, words, at in (
                ("in-header", "in its header (40 bytes)", 40),
                ("mid-data", "half-way", middle),
                ("last-byte", "by its last byte", len(clean) - 1),
            )
        ],
    ]
    if fmt == "WEBP":
        cases.append(
            c(f"{name}-junk", label, "64 bytes of the VP8 data overwritten (libwebp reports a bitstream error)",
              overwrite(clean, middle, junk(64, 7)), "corrupt", pillow="rejected")
        )  # fmt: skip
    else:
        cases.append(
            c(f"{name}-junk", label, "64 bytes of the compressed data overwritten, which the decoder decodes",
              overwrite(clean, middle, junk(64, 7)), PROCESSED)
        )  # fmt: skip
    return cases


@cache
def all_cases() -> tuple[Case, ...]:
    cases = [*jpeg_cases(), *png_cases()]
    for fmt in ("WEBP", "WEBP-lossless", "HEIF", "AVIF"):
        cases += container_cases(fmt)
    return tuple(cases)


def pillow_outcome(data: bytes) -> str:
    """What Pillow with its default settings does with a file: opens and decodes it, or not."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:  # noqa: BLE001 - any failure is a file Pillow does not show
        return "rejected"
    return PROCESSED


if __name__ == "__main__":  # pragma: no cover - a look with other viewers
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    extensions = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "HEIF": "heic", "AVIF": "avif"}
    for case in all_cases():
        (out / f"{case.name}.{extensions[case.format]}").write_bytes(case.data)
