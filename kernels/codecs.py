"""Bytes in, luma plane out (and back): the decoding and encoding of photos, with no I/O.

``decode_luma`` takes the fastest exact path for each container:

- JPEG (and MPO, the multi-picture JPEG many phones write) stored as YCbCr or grayscale is decoded by
  libjpeg-turbo straight to its Y plane: chroma is never upsampled or converted. A JPEG stored as RGB
  is converted by libjpeg-turbo with the same integer BT.601 formula as Pillow. CMYK/YCCK goes
  through Pillow's CMYK to RGB conversion, then luma.
- PNG, WebP, HEIC/HEIF and AVIF are decoded by Pillow (pillow-heif for HEIF) and converted:
  RGB by ``luma_from_rgb``; transparency is composited over white; 16-bit grayscale is scaled
  to 8 bits with rounding (``round(v * 255 / 65535)``), never clipped; palettes are expanded.

Before any pixel is decoded the header is checked against two limits: the pixel count, and a
memory budget that knows the decoded mode (``decode_bytes``): a 16000x16000 RGBA PNG passes a
256 MP pixel limit but needs about 5.6 GB to decode, a JPEG of the same size about 320 MB.

The EXIF orientation is read but not applied to the plane (histograms do not depend on it);
``upright`` returns the displayed view and ``encode_luma_jpeg`` writes it.
Anything that cannot be decoded raises ``Rejected`` with a stable reason code.

Damaged files are decoded the way viewers decode them, and rejected where pixels would be invented
(docs/data.md, "Damaged photos: processed or rejected"). Before a decoder reads an upload, its container's own
structure is checked (``_check_container``): a file shorter than its structure says (no JPEG end-of-image
marker, a PNG chunk, a RIFF or an ISOBMFF box past the end) is ``truncated``; a file that starts with a
format's signature is that format, damaged (``corrupt`` or ``truncated``), never ``not_an_image``; what
decoders skip anyway is taken out of the bytes they read (stray bytes between JPEG segments, PNG ancillary
chunks whose CRC is wrong). JPEG data is then decoded by libjpeg-turbo with its warnings as errors, and
each warning that loses no pixel (zero padding after the image data, an unknown JFIF revision or Adobe
transform, a bad ICC marker, SOS parameters a sequential JPEG ignores) has its cause taken out of the bytes
and the strict decode goes on (``_strict_jpeg``); a warning that loses or misplaces data (image data left
over after the last block, a data segment that runs into a marker, a lost restart marker) is ``corrupt``.
Once the structure says a file is whole, a decoder's error is ``corrupt``, whatever its words: a
full-length file is not ``truncated``.
"""

from __future__ import annotations

import io
import re
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, Protocol, cast

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, UnidentifiedImageError

from graywave.errors import CodecFailed, Rejected, RejectReason
from graywave.kernels import luma_from_rgb
from graywave.kernels.device import Device

# graywave checks its own pixel limit from the header, before decoding (see ``decode_luma``).
Image.MAX_IMAGE_PIXELS = None

JPEG_FORMATS = frozenset({"JPEG", "MPO"})
DEFAULT_MAX_DECODE_BYTES = 2 * 1024**3
"""The default memory budget of one decode: any JPEG within the pixel limit and a 108 MP HEIC fit, a
16000x16000 RGBA PNG does not."""

# Peak memory of ``decode_luma`` per pixel, by container and the mode its header declares: measured
# (VmHWM in a warm process, 1500x1500 and 3000x3000 images; tests/kernels/test_codecs.py checks
# it) with about 15% of headroom. Pillow holds RGB as 4 bytes a pixel; compositing transparency
# over white takes three more RGBA images; WebP's decoder keeps its own RGB(A) buffer beside Pillow's.
_PEAK_BYTES_PER_PIXEL: dict[str, float] = {
    "1": 3.5,
    "L": 3.5,
    "P": 13,
    "I;16": 18,
    "I;16L": 18,
    "I;16B": 18,
    "I": 18,
    "RGB": 12,
    "YCbCr": 12,
    "CMYK": 16.5,
    "LA": 22,
    "La": 22,
    "PA": 22,
    "RGBA": 22,
    "RGBa": 22,
}
_WORST_BYTES_PER_PIXEL = 22.0
_PLAIN_JPEG_BYTES_PER_PIXEL = 1.25  # libjpeg-turbo writes the Y plane and nothing else
_EXTRA_BYTES_PER_PIXEL = {"WEBP": 11.0, "HEIF": 5.0, "AVIF": 5.0}  # the decoder's own buffer
SUPPORTED_FORMATS = JPEG_FORMATS | {"PNG", "WEBP", "HEIF", "AVIF"}


@dataclass(frozen=True)
class DecodedImage:
    """The luma plane as stored in the file (``plane``) and how to show it upright."""

    plane: np.ndarray
    format: str
    orientation: int

    @property
    def width(self) -> int:
        """Width as displayed (after the EXIF orientation)."""
        return self.plane.shape[0] if self.orientation >= 5 else self.plane.shape[1]

    @property
    def height(self) -> int:
        return self.plane.shape[1] if self.orientation >= 5 else self.plane.shape[0]


# EXIF orientation -> the array view that shows the image upright (same as PIL.ImageOps.exif_transpose).
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: np.transpose,
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).T,
    8: lambda a: np.rot90(a, 1),
}


def upright(image: DecodedImage) -> np.ndarray:
    """A view of the plane as the original is displayed."""
    return _UPRIGHT[image.orientation](image.plane)


def decode_bytes(fmt: str, mode: str, width: int, height: int, *, transparent: bool = False) -> int:
    """Upper bound of the memory ``decode_luma`` needs for an image whose header says ``fmt`` (``JPEG``,
    ``PNG``...), ``mode`` (Pillow's) and this size; ``transparent``: a palette with a transparent colour."""
    pixels = width * height
    if fmt in JPEG_FORMATS and mode in ("L", "RGB"):
        return int(pixels * _PLAIN_JPEG_BYTES_PER_PIXEL)
    per_pixel = _PEAK_BYTES_PER_PIXEL.get("PA" if mode == "P" and transparent else mode, _WORST_BYTES_PER_PIXEL)
    return int(pixels * (per_pixel + _EXTRA_BYTES_PER_PIXEL.get(fmt, 0.0)))


@cache
def _register_heif() -> None:
    """Teach Pillow HEIC/HEIF (pillow-heif), at the first image opened: a tenth of a second of
    import that a command which decodes nothing (an empty wave) does not pay."""
    import pillow_heif

    pillow_heif.register_heif_opener()


def _open_checked(
    data: bytes, max_pixels: int, max_decode_bytes: int, *, whole: bool
) -> tuple[Image.Image, _Container]:
    """Check the container (``_check_container``: its whole structure, or its header alone), open it
    (header only) and check it: an accepted format within the pixel limit and the memory budget."""
    _register_heif()
    if not data:
        raise Rejected(RejectReason.EMPTY, "the upload has no bytes")
    container = _check_container(data, whole=whole)
    try:
        image = Image.open(io.BytesIO(container.data))
    except UnidentifiedImageError:
        raise _unrecognised(container) from None
    except Exception as error:  # noqa: BLE001 - a recognised header that is broken, however the decoder says it
        raise _as_rejected(error, container) from None
    if image.format not in SUPPORTED_FORMATS:
        image.close()
        raise Rejected(RejectReason.UNSUPPORTED_FORMAT, f"{image.format} images are not accepted")
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise Rejected(RejectReason.TOO_MANY_PIXELS, f"{width}x{height} is above the limit of {max_pixels} pixels")
    needed = decode_bytes(image.format, image.mode, width, height, transparent="transparency" in image.info)
    if needed > max_decode_bytes:
        image.close()
        raise Rejected(
            RejectReason.OVER_DECODE_BUDGET,
            f"a {width}x{height} {image.mode} {image.format} needs about {needed / 1e6:.0f} MB to decode,"
            f" above the budget of {max_decode_bytes / 1e6:.0f} MB",
        )
    return image, container


@dataclass(frozen=True)
class Header:
    """What the container says, read without decoding pixels."""

    format: str
    mode: str
    orientation: int

    @property
    def plain_jpeg(self) -> bool:
        """A JPEG whose luma is its Y plane (YCbCr or grayscale): what a JPEG decoder can give directly."""
        return self.format == "JPEG" and self.mode in ("L", "RGB")


def _format(image: Image.Image) -> str:
    """The format name of a checked image (``_open_checked``): an MPO is a JPEG."""
    return "JPEG" if image.format == "MPO" else cast(str, image.format)


def read_header(data: bytes, max_pixels: int, *, max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> Header:
    """The format, colour mode and EXIF orientation of an upload; raises ``Rejected`` like ``decode_luma``
    for what its header shows (the image data after it is checked by the decode: a JPEG cut in its image
    data passes here)."""
    image, _ = _open_checked(data, max_pixels, max_decode_bytes, whole=False)
    with image:
        return Header(format=_format(image), mode=image.mode, orientation=_orientation(image))


def identify(data: bytes, max_pixels: int, *, max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> str:
    """The accepted format of an upload (``JPEG``, ``PNG``, ``WEBP``, ``HEIF``, ``AVIF``), from its header
    alone; raises ``Rejected`` like ``decode_luma`` for what is not one."""
    return read_header(data, max_pixels, max_decode_bytes=max_decode_bytes).format


def decode_luma(data: bytes, max_pixels: int, *, max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> DecodedImage:
    """Decode an uploaded photo to its 8-bit BT.601 luma plane, whatever its file name says.

    Refused from the header, before any pixel is decoded: more than ``max_pixels`` pixels
    (``too_many_pixels``), or more than ``max_decode_bytes`` of memory to decode (``decode_bytes``;
    ``over_decode_budget``). Damaged files: see the module's docstring."""
    image, container = _open_checked(data, max_pixels, max_decode_bytes, whole=True)
    with image:
        try:
            if image.format in JPEG_FORMATS and image.mode in ("L", "RGB"):
                plane = _strict_jpeg(container, "GRAY")
                plane = plane.reshape(plane.shape[:2])
            else:
                if image.format in JPEG_FORMATS:  # CMYK, YCCK: Pillow converts; libjpeg-turbo checks the data
                    _strict_jpeg(container, "CMYK")
                plane = _pillow_luma(image)
        except Rejected:
            raise
        except Exception as error:  # noqa: BLE001 - decoders raise anything on broken data; each becomes a reason
            raise _as_rejected(error, container) from None
        # After the pixels: a PNG's EXIF may follow them, and reading it loads the image, whose errors
        # must not be swallowed (a second load of a failed one returns its pixels so far, silently).
        orientation = _orientation(image)
        fmt = _format(image)
    return DecodedImage(plane=plane, format=fmt, orientation=orientation)


def encode_luma_jpeg(plane: np.ndarray, quality: int) -> bytes:
    """Encode a luma plane (any strides) as a baseline grayscale JPEG."""
    return simplejpeg.encode_jpeg(np.ascontiguousarray(plane)[..., None], quality=quality, colorspace="GRAY")


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF does not make the photo unreadable
        return 1
    return value if value in _UPRIGHT else 1


def _pillow_luma(image: Image.Image) -> np.ndarray:
    image.load()
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I"):
        wide = np.asarray(image).astype(np.uint32)
        return ((np.minimum(wide, 65535) * 255 + 32767) // 65535).astype(np.uint8)
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
        mode = "RGBA"
    if mode == "L":
        return np.asarray(image)
    if mode == "1":
        return np.asarray(image.convert("L"))
    if image.mode != "RGB":
        image = image.convert("RGB")  # composited RGBA, CMYK, YCbCr, LAB, HSV
    return luma_from_rgb(np.asarray(image))


def _as_rejected(error: Exception, container: _Container) -> Rejected:
    """A decoder's error as a reason: ``corrupt`` where the container's structure says the file is whole
    (the bytes are all there: they are damaged), else by the decoder's words."""
    message = f"{type(error).__name__}: {error}"
    if container.whole:
        return Rejected(RejectReason.CORRUPT, message)
    lowered = message.lower()
    words = ("truncated", "premature end of jpeg file", "end of file", "not enough data", "eof", "outside of file")
    if any(word in lowered for word in words):
        return Rejected(RejectReason.TRUNCATED, message)
    return Rejected(RejectReason.CORRUPT, message)


# --- The container's own structure, checked before a decoder reads it ----------------------------------


@dataclass(frozen=True)
class _Container:
    """An upload as its container's structure describes it (``_check_container``)."""

    kind: str | None
    """``JPEG``, ``PNG``, ``WEBP`` or ``ISOBMFF`` (HEIF, AVIF) by the file's signature; ``None``: no signature
    of an accepted format (Pillow may still know it: GIF, BMP...)."""
    data: bytes
    """What decoders read: the upload less what they skip anyway (``_check_jpeg``, ``_check_png``)."""
    whole: bool = False
    """Checked whole, every byte its structure refers to is there: a decoder's error is damage (``corrupt``)."""
    scan_ends: tuple[int, ...] = ()
    """JPEG checked whole: where each run of entropy-coded data ends in ``data`` (its marker's first byte)."""
    segments: tuple[tuple[int, int, int], ...] = ()
    """JPEG: the marker segments outside entropy-coded data, as (start, marker code, end) in ``data``."""
    end: int = 0
    """JPEG checked whole: where its end-of-image marker starts in ``data``."""


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"mif2", b"miaf", b"avif", b"avis"}
)


def _sniff(data: bytes) -> str | None:
    """The accepted format whose signature ``data`` starts with (see ``_Container.kind``)."""
    if data[:2] == b"\xff\xd8":
        return "JPEG"
    if data[:4] == _PNG_SIGNATURE[:4]:
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        box = data[: max(16, min(int.from_bytes(data[:4], "big"), 4096))]
        brands = {box[8:12]} | {box[i : i + 4] for i in range(16, len(box) - 3, 4)}
        if brands & _HEIF_BRANDS:
            return "ISOBMFF"
    return None


def _check_container(data: bytes, *, whole: bool) -> _Container:
    """Check what the bytes say about themselves, before any decoder reads them: the whole file
    (``whole``, before a decode) or its header alone (``read_header``). Raises ``Rejected``:
    ``truncated`` for a file shorter than its structure says, ``corrupt`` for a structure that is broken."""
    kind = _sniff(data)
    if kind == "JPEG":
        return _check_jpeg(data, whole=whole)
    if kind == "PNG":
        return _check_png(data, whole=whole)
    if kind == "WEBP":
        declared = 8 + int.from_bytes(data[4:8], "little")
        if len(data) < declared:
            raise Rejected(
                RejectReason.TRUNCATED,
                f"the WebP ends after {len(data)} of the {declared} bytes its RIFF header declares",
            )
        return _Container(kind, data, whole=True)
    return _Container(kind, data)  # ISOBMFF: its boxes are walked only if Pillow cannot open it (_unrecognised)


def _unrecognised(container: _Container) -> Rejected:
    """Why Pillow cannot identify a file: ``not_an_image`` only for what has no signature it knows."""
    if container.kind is None:
        return Rejected(RejectReason.NOT_AN_IMAGE, "no known image format in the file header")
    if container.kind == "ISOBMFF":
        _check_boxes(container.data)  # raises truncated when a box runs past the end
    name = "HEIF/AVIF" if container.kind == "ISOBMFF" else container.kind
    return Rejected(RejectReason.CORRUPT, f"the file starts as a {name} but its header cannot be read")


def _check_boxes(data: bytes) -> None:
    """ISOBMFF (HEIF, AVIF): each top-level box within the file, else ``truncated``."""
    pos, size = 0, len(data)
    while pos < size:
        if pos + 8 > size:
            raise Rejected(RejectReason.TRUNCATED, f"the file ends after {size} bytes, inside a box's header")
        header = 8
        length = int.from_bytes(data[pos : pos + 4], "big")
        box = data[pos + 4 : pos + 8].decode("latin-1")
        if length == 1:
            header = 16
            length = int.from_bytes(data[pos + 8 : pos + 16], "big")
        elif length == 0:
            length = size - pos  # to the end of the file
        if pos + header > size or pos + length > size:
            raise Rejected(
                RejectReason.TRUNCATED,
                f"the file ends after {size} bytes, inside its {box!r} box at byte {pos} ({length} bytes declared)",
            )
        if length < header:
            raise Rejected(RejectReason.CORRUPT, f"its {box!r} box at byte {pos} declares {length} bytes")
        pos += length


# PNG: a chunk whose CRC is wrong is damaged. A critical one (upper-case first letter: IHDR, PLTE,
# IDAT...) is the image: corrupt, as the PNG specification and libpng have it. An ancillary one (text,
# EXIF, gamma, colour profile, transparency...) is skipped, as libpng skips it; Pillow refuses the
# whole file at a bad text chunk's CRC, and never checks IDAT's. IEND has no data: it is not read.
def _check_png(data: bytes, *, whole: bool) -> _Container:
    size = len(data)
    if size < len(_PNG_SIGNATURE) and _PNG_SIGNATURE.startswith(data):
        raise Rejected(RejectReason.TRUNCATED, f"the PNG ends after {size} bytes, inside its signature")
    if data[: len(_PNG_SIGNATURE)] != _PNG_SIGNATURE:
        raise Rejected(RejectReason.CORRUPT, "the PNG signature is damaged (a transfer in text mode?)")
    pos, kept, start = len(_PNG_SIGNATURE), [], 0
    while pos < size:
        if pos + 8 > size:
            raise Rejected(RejectReason.TRUNCATED, f"the PNG ends after {size} bytes, inside a chunk's header")
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunk = data[pos + 4 : pos + 8]
        name = chunk.decode("latin-1")
        if length >= 2**31:
            raise Rejected(RejectReason.CORRUPT, f"its {name!r} chunk at byte {pos} declares {length} bytes")
        end = pos + 12 + length
        if end > size:
            raise Rejected(
                RejectReason.TRUNCATED,
                f"the PNG ends after {size} bytes, inside its {name!r} chunk at byte {pos} ({length} bytes declared)",
            )
        if chunk == b"IEND" or (chunk == b"IDAT" and not whole):
            break
        if zlib.crc32(memoryview(data)[pos + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big"):
            if not chunk[0] & 0x20:  # critical
                raise Rejected(RejectReason.CORRUPT, f"the CRC of its {name!r} chunk at byte {pos} does not match")
            kept.append(data[start:pos])  # ancillary: dropped, as libpng does
            start = end
        pos = end
    repaired = b"".join([*kept, data[start:]]) if kept else data
    return _Container("PNG", repaired, whole=whole and pos < size)  # whole: its IEND is there


# --- JPEG ----------------------------------------------------------------------------------------------

_MARKER = re.compile(rb"\xff[^\x00\xff]")
"""A marker's last fill byte (FF) and its code; in entropy-coded data FF 00 is a data byte."""
_SOI, _EOI, _SOS, _TEM = 0xD8, 0xD9, 0xDA, 0x01
_RST = range(0xD0, 0xD8)
_KNOWN_MARKERS = frozenset([*range(0xC0, 0xD0), 0xDA, 0xDB, 0xDC, 0xDD, *range(0xE0, 0xF0), 0xFE])
"""The markers with a length that libjpeg reads (frames, tables, scans, restart interval, APPn, comment);
any other (DHP, EXP, JPGn, reserved) is "Unsupported marker type" to it."""


def _marker_start(data: bytes, found: re.Match[bytes], floor: int) -> int:
    """Where the marker ``found`` starts: at its first fill byte (FF FF ... FF code)."""
    start = found.start()
    while start > floor and data[start - 1] == 0xFF:
        start -= 1
    return start


def _jpeg_truncated(data: bytes, where: str) -> Rejected:
    return Rejected(RejectReason.TRUNCATED, f"the JPEG ends after {len(data)} bytes, {where}: no end-of-image marker")


def _check_jpeg(data: bytes, *, whole: bool) -> _Container:
    """Walk a JPEG's markers as libjpeg reads them: marker segments by their lengths, entropy-coded data
    up to the marker that ends it; ``whole``: to the end-of-image marker, else up to the first scan.

    ``truncated``: the file ends before its end-of-image marker (in a segment, in image data, or after the
    header). ``corrupt``: no marker right after the start-of-image one (FF D8 FF is what Pillow, browsers
    and phones recognise a JPEG by; they do not open such a file), a second start-of-image marker, a
    segment length under 2, no image data before the end-of-image marker, restart markers out of order
    (libjpeg-turbo loses the image data between them). Stray bytes between segments, which libjpeg skips
    ("Corrupt JPEG data: 3 extraneous bytes before marker 0xc4"), are left out of ``data``; what follows
    the end-of-image marker (an MPO's other pictures, anything) is kept, and not read.
    """
    _check_jpeg_start(data)
    stray = _StrayBytes(data)
    scan_ends: list[int] = []
    segments: list[tuple[int, int, int]] = []
    scans = 0
    pos = 2
    while True:
        found = _MARKER.search(data, pos)
        if found is None:
            raise _jpeg_truncated(data, "after its last marker segment" if scans else "in its header")
        start, code, after = _marker_start(data, found, pos), data[found.end() - 1], found.end()
        stray.leave_out(pos, start)
        if code == _EOI:
            if scans == 0:
                raise Rejected(RejectReason.CORRUPT, f"the end-of-image marker at byte {start} follows no image data")
            break
        if code == _SOI:
            raise Rejected(RejectReason.CORRUPT, f"a second start-of-image marker at byte {start}")
        if code in _RST or code == _TEM:  # no length; outside a scan, libjpeg passes over them
            pos = after
            continue
        pos = _segment_end(data, code, start, after)
        segments.append((start - stray.removed, code, pos - stray.removed))
        if code != _SOS:
            continue
        scans += 1
        if not whole:
            break
        pos = _entropy_coded_data(data, pos, scans, stray.removed, scan_ends)
    return _Container(
        "JPEG",
        stray.repaired(),
        whole=whole,
        scan_ends=tuple(scan_ends),
        segments=tuple(segments),
        end=start - stray.removed,
    )


def _check_jpeg_start(data: bytes) -> None:
    """What follows a JPEG's start-of-image marker: another marker (``_check_jpeg``)."""
    if len(data) < 4:
        raise _jpeg_truncated(data, "after its start-of-image marker")
    if data[2] != 0xFF:
        raise Rejected(
            RejectReason.CORRUPT,
            f"no marker follows the start-of-image marker (FF D8 {data[2]:02X}): viewers do not open it as a JPEG",
        )


class _StrayBytes:
    """The bytes between a JPEG's segments that libjpeg skips, left out of its data as the walk finds them."""

    def __init__(self, data: bytes):
        self.data = data
        self.kept: list[bytes] = []
        self.copied = 0
        """Where the part still to copy starts."""
        self.removed = 0
        """Bytes left out so far."""

    def leave_out(self, pos: int, start: int) -> None:
        """The bytes from ``pos`` (the end of a segment) to ``start`` (the next marker's), if any."""
        if start > pos:
            self.kept.append(self.data[self.copied : pos])
            self.copied, self.removed = start, self.removed + start - pos

    def repaired(self) -> bytes:
        return b"".join([*self.kept, self.data[self.copied :]]) if self.kept else self.data


def _segment_end(data: bytes, code: int, start: int, after: int) -> int:
    """Where the marker segment ``code`` at ``start`` (its length at ``after``) ends; ``Rejected`` for an
    unknown marker, a length under 2, or a segment past the end of the file."""
    if code not in _KNOWN_MARKERS:
        raise Rejected(RejectReason.CORRUPT, f"an unknown marker 0x{code:02x} at byte {start}")
    if after + 2 > len(data):
        raise _jpeg_truncated(data, f"in the marker 0x{code:02x} at byte {start}")
    length = int.from_bytes(data[after : after + 2], "big")
    if length < 2:
        raise Rejected(RejectReason.CORRUPT, f"the marker 0x{code:02x} at byte {start} declares a length of {length}")
    end = after + length
    if end > len(data):
        raise _jpeg_truncated(data, f"in the marker segment 0x{code:02x} at byte {start}")
    return end


def _entropy_coded_data(data: bytes, pos: int, scans: int, removed: int, scan_ends: list[int]) -> int:
    """Walk the image data of scan ``scans`` from ``pos`` to the marker that ends it (returned), through
    its restart markers, each appended to ``scan_ends`` (less ``removed``); ``Rejected`` when the file ends
    in it, or for restart markers out of order."""
    expected = 0  # restart markers count 0 to 7 from each scan's start, libjpeg checks each
    while True:
        found = _MARKER.search(data, pos)
        if found is None:
            raise _jpeg_truncated(data, f"in the image data of scan {scans}")
        start, code = _marker_start(data, found, pos), data[found.end() - 1]
        scan_ends.append(start - removed)
        if code not in _RST:
            return start
        if code - _RST.start != expected:
            raise Rejected(
                RejectReason.CORRUPT,
                f"the restart marker RST{code - _RST.start} at byte {start} where RST{expected} belongs:"
                " image data between them is lost",
            )
        expected = (expected + 1) % 8
        pos = found.end()


def checked_jpeg(data: bytes) -> bytes:
    """The bytes of a JPEG that a decoder should read, for the GPU codec: ``data`` less the stray bytes
    between its segments, after the checks of its structure that ``decode_luma`` makes (``truncated``
    when it ends early, ``corrupt`` for restart markers out of order...): raises ``Rejected`` as it does."""
    if data[:2] != b"\xff\xd8":
        raise Rejected(RejectReason.NOT_AN_IMAGE, "not a JPEG: no start-of-image marker")
    return _check_jpeg(data, whole=True).data


def _libjpeg(data: bytes, colorspace: str, *, strict: bool) -> np.ndarray:
    return simplejpeg.decode_jpeg(data, colorspace=colorspace, fastdct=False, fastupsample=False, strict=strict)


_EXTRANEOUS = re.compile(r"(\d+) extraneous bytes before marker 0x([0-9a-f]{2})", re.IGNORECASE)
_MAX_REPAIRS = 8


def _strict_jpeg(container: _Container, colorspace: str) -> np.ndarray:
    """libjpeg-turbo's decode with its warnings as errors (``strict``: it stops at the first one), where
    each warning that loses no pixel is a repair of the bytes, and the strict decode goes on:

    - "unknown JFIF revision number", "unknown Adobe color transform code", "bad ICC marker", "invalid SOS
      parameters for sequential JPEG": the values libjpeg assumes in their place are written in, or the
      ICC segments (which the decode does not use) left out;
    - "N extraneous bytes before marker 0xXX" (those between segments are gone already, ``_check_jpeg``):
      image data left over after the last block of a scan or restart interval. Filler (one byte value,
      repeated: the zero padding some encoders write) is left out (its place found by ``_skipped_at``;
      before the end-of-image marker libjpeg reads nothing more, and its lenient decode is the answer).
      Anything else is ``corrupt``: the decoder finished its blocks before the data ended, which is how
      libjpeg-turbo shows data that was overwritten or inserted (its fast path decodes an invalid Huffman
      code as a zero, silently, and rarely says "bad Huffman code").

    Any other warning is ``corrupt`` (premature end of a data segment, a marker where a restart marker
    belongs, a bad Huffman or arithmetic code, an inconsistent progression), but "premature end of JPEG
    file" ``truncated``. Returns what libjpeg-turbo decodes: the pixels of the upload, whose skipped bytes
    it skips as well (its lenient decode's, and Pillow's, bit for bit).
    """
    for _ in range(_MAX_REPAIRS + 1):
        data = container.data
        try:
            return _libjpeg(data, colorspace, strict=True)
        except ValueError as error:
            message = str(error)
        extraneous = _EXTRANEOUS.search(message)
        if extraneous is not None:
            count, last = int(extraneous[1]), extraneous[2].lower() == "d9"
            at = container.end if last else _skipped_at(container, count, colorspace)
            if at is None or at < count or len(set(data[at - count : at])) > 1:
                where = "its last scan" if last else "a scan or restart interval"
                raise Rejected(
                    RejectReason.CORRUPT,
                    f"{message}: image data left over after the last block of {where}, not padding:"
                    " the data is damaged",
                )
            if last:
                return _libjpeg(data, colorspace, strict=False)
            repaired = data[: at - count] + data[at:]
        else:
            repaired = _repaired_header(container, message)
        if repaired == data:
            raise Rejected(RejectReason.CORRUPT, message)
        container = _check_jpeg(repaired, whole=True)
    raise Rejected(
        RejectReason.CORRUPT, f"libjpeg-turbo warned in more than {_MAX_REPAIRS} places; the last: {message}"
    )


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _repaired_header(container: _Container, message: str) -> bytes:
    """``container``'s data with the cause of libjpeg-turbo's warning ``message`` taken out, for the
    warnings about a header that lose no pixel (``_strict_jpeg``); ``Rejected`` for any other warning."""
    lowered = message.lower()
    if "unknown jfif revision" in lowered:
        return _patched(container, 0xE0, b"JFIF\x00", 5, 1)
    if "unknown adobe color transform" in lowered:
        components = next((container.data[s + 9] for s, code, _ in container.segments if code in _SOF), 3)
        return _patched(container, 0xEE, b"Adobe", 11, 1 if components == 3 else 2)
    if "bad icc marker" in lowered:
        return _without(container, 0xE2, b"ICC_PROFILE\x00")
    if "invalid sos parameters for sequential" in lowered:
        return _sequential_sos(container)
    reason = RejectReason.TRUNCATED if "premature end of jpeg file" in lowered else RejectReason.CORRUPT
    raise Rejected(reason, message)


def _skipped_at(container: _Container, count: int, colorspace: str) -> int | None:
    """The first end of entropy-coded data where libjpeg-turbo skips ``count`` stray bytes. The file cut
    there and closed by an end-of-image marker makes it warn of those bytes first; cut before, it warns of
    something else or nothing (the bytes up to the cut decode as in the whole file), cut after, of them
    too: the answer is monotonic along the ends, which are bisected (a few partial decodes, and only for
    a damaged file)."""
    data, ends = container.data, container.scan_ends
    low, high = 0, len(ends)
    while low < high:
        middle = (low + high) // 2
        try:
            _libjpeg(data[: ends[middle]] + b"\xff\xd9", colorspace, strict=True)
            warned = False
        except ValueError as error:
            found = _EXTRANEOUS.search(str(error))
            warned = found is not None and int(found[1]) == count
        if warned:
            high = middle
        else:
            low = middle + 1
    if low == len(ends) or ends[low] < count:
        return None
    return ends[low]


def _patched(container: _Container, code: int, tag: bytes, offset: int, value: int) -> bytes:
    """``data`` with the byte at ``offset`` of each ``code`` segment's payload that starts with ``tag``
    set to ``value``."""
    data = bytearray(container.data)
    for start, found, end in container.segments:
        payload = start + 4
        if found == code and data[payload : payload + len(tag)] == tag and payload + offset < end:
            data[payload + offset] = value
    return bytes(data)


def _without(container: _Container, code: int, tag: bytes) -> bytes:
    """``data`` less the ``code`` segments whose payload starts with ``tag``."""
    data, parts, copied = container.data, [], 0
    for start, found, end in container.segments:
        if found == code and data[start + 4 : start + 4 + len(tag)] == tag:
            parts.append(data[copied:start])
            copied = end
    return b"".join([*parts, data[copied:]])


def _sequential_sos(container: _Container) -> bytes:
    """``data`` with the spectral selection and successive approximation of each scan of a sequential
    JPEG set to what libjpeg uses in their place (0, 63, 0)."""
    data = bytearray(container.data)
    if not any(code in (0xC0, 0xC1, 0xC9) for _, code, _ in container.segments):
        return container.data
    for _, code, end in container.segments:
        if code == _SOS:
            data[end - 3 : end] = b"\x00\x3f\x00"
    return bytes(data)


# The batch codecs: the CPU's and the GPU's twins, one interface (cuCIM's style), chosen from the device.

Decoded = DecodedImage | Rejected | str
"""What a batch codec gives for one upload: its image; why it is refused (bad input, ``Rejected``); or
why this codec did not decode it (``str``): the caller then decodes it on the CPU and counts it."""


class LumaBatchCodec(Protocol):
    """Decodes uploads to luma planes and encodes planes to grayscale JPEGs, ``batch_size`` uploads a
    call, on its device: ``CpuLumaCodec`` (libjpeg-turbo and Pillow) and ``gpu_codecs.NvImageCodecLuma``
    (nvImageCodec). ``luma_batch_codec`` picks the device's. ``encode`` gives ``None`` for a plane it
    could not encode; ``CodecFailed`` is a call that failed as a whole."""

    @property
    def name(self) -> str: ...

    @property
    def batch_size(self) -> int | None:
        """Uploads per call: ``None``, a whole batch (held in memory together)."""

    def decode_images(self, datas: Sequence[bytes], max_pixels: int, *, max_decode_bytes: int) -> list[Decoded]: ...

    def encode(self, planes: Sequence[Any], quality: int) -> list[bytes | None]: ...


class CpuLumaCodec:
    """The CPU's batch codec: ``decode_luma`` and ``encode_luma_jpeg``, one upload a call, so that a
    batch streams through memory.

    With ``instead_of`` (a reason), it stands in for a device's codec that is missing or cannot start:
    it decodes nothing itself, so that the caller decodes each upload on the CPU and counts it as a
    fallback with that reason (never silent), and it encodes ``device``'s planes on the CPU (counted
    with the decode: the reason says both)."""

    batch_size: ClassVar[int] = 1

    def __init__(self, device: Device | None = None, *, instead_of: str | None = None) -> None:
        self.device = device or Device("cpu")
        self.instead_of = instead_of

    @property
    def name(self) -> str:
        return "libjpeg-turbo and Pillow (CPU)"

    def decode_images(self, datas: Sequence[bytes], max_pixels: int, *, max_decode_bytes: int) -> list[Decoded]:
        if self.instead_of is not None:
            return [self.instead_of for _ in datas]
        images: list[Decoded] = []
        for data in datas:
            try:
                images.append(decode_luma(data, max_pixels, max_decode_bytes=max_decode_bytes))
            except Rejected as rejected:
                images.append(rejected)
        return images

    def encode(self, planes: Sequence[Any], quality: int) -> list[bytes | None]:
        return [encode_luma_jpeg(self.device.get(plane), quality) for plane in planes]


class PlainJpegBatchCodec(ABC):
    """A batch codec of plain JPEGs (``Header.plain_jpeg``) whose ``decode`` gives planes, ``None`` for
    an image it could not decode (``gpu_codecs.NvImageCodecLuma``). ``decode_images`` reads each
    header (rejecting what it shows, like ``decode_luma``), decodes the plain JPEGs together, and says
    why it left each of the others to the CPU."""

    batch_size: ClassVar[int | None] = None

    @property
    @abstractmethod
    def name(self) -> str: ...

    @abstractmethod
    def decode(self, datas: Sequence[bytes]) -> list[Any | None]:
        """The plane of each plain JPEG, ``None`` where it could not decode it; ``CodecFailed`` for a
        call that failed as a whole."""

    @abstractmethod
    def encode(self, planes: Sequence[Any], quality: int) -> list[bytes | None]: ...

    def decode_images(self, datas: Sequence[bytes], max_pixels: int, *, max_decode_bytes: int) -> list[Decoded]:
        images: list[Decoded] = []
        plain: dict[int, int] = {}  # index -> EXIF orientation, applied by graywave as on the CPU
        for data in datas:
            try:
                header = read_header(data, max_pixels, max_decode_bytes=max_decode_bytes)
            except Rejected as rejected:
                images.append(rejected)
                continue
            if header.plain_jpeg:
                plain[len(images)] = header.orientation
            images.append(f"{self.name} decodes plain JPEGs, not {header.format} ({header.mode})")
        if not plain:
            return images
        try:
            planes, missing = self.decode([datas[i] for i in plain]), f"{self.name} could not decode it"
        except CodecFailed as error:
            planes, missing = [None] * len(plain), str(error)
        for (i, orientation), plane in zip(plain.items(), planes, strict=True):
            images[i] = missing if plane is None else DecodedImage(plane, "JPEG", orientation)
        return images


NO_BATCH_CODEC = "nvImageCodec is not installed (the gpu extra): decoded and encoded on the CPU"

_codecs = threading.local()


def luma_batch_codec(device: Device) -> LumaBatchCodec:
    """The batch codec of ``device`` for this thread: the CPU's on a CPU; nvImageCodec on a GPU where it
    is installed and starts, else the CPU's standing in for it, each upload counted with the reason.
    nvImageCodec's is one per thread: a decoder or encoder used by two batches at once fails their
    images (the wave test with two workers showed it)."""
    if device.name == "cpu":
        return CpuLumaCodec(device)
    from graywave.kernels.gpu_codecs import NvImageCodecLuma, nvimgcodec_available

    if not nvimgcodec_available():
        return CpuLumaCodec(device, instead_of=NO_BATCH_CODEC)
    codecs: dict[Device, LumaBatchCodec] = _codecs.__dict__.setdefault("by_device", {})
    if device not in codecs:
        try:
            codecs[device] = NvImageCodecLuma(device)
        except CodecFailed as error:  # not kept: the next batch tries again
            return CpuLumaCodec(device, instead_of=str(error))
    return codecs[device]
