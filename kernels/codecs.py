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
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import cast

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, UnidentifiedImageError

from graywave.errors import Rejected, RejectReason
from graywave.kernels import luma_from_rgb

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


def _open_checked(data: bytes, max_pixels: int, max_decode_bytes: int) -> Image.Image:
    """Open the container (header only) and check it: an accepted format within the pixel limit
    and the memory budget."""
    _register_heif()
    if not data:
        raise Rejected(RejectReason.EMPTY, "the upload has no bytes")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise Rejected(RejectReason.NOT_AN_IMAGE, "no known image format in the file header") from None
    except Exception as error:  # noqa: BLE001 - a recognised header that is broken, however the decoder says it
        raise _as_rejected(error) from None
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
    return image


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
    """The format, colour mode and EXIF orientation of an upload; raises ``Rejected`` like ``decode_luma``."""
    with _open_checked(data, max_pixels, max_decode_bytes) as image:
        return Header(format=_format(image), mode=image.mode, orientation=_orientation(image))


def identify(data: bytes, max_pixels: int, *, max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> str:
    """The accepted format of an upload (``JPEG``, ``PNG``, ``WEBP``, ``HEIF``, ``AVIF``), from its header
    alone; raises ``Rejected`` like ``decode_luma`` for what is not one."""
    return read_header(data, max_pixels, max_decode_bytes=max_decode_bytes).format


def decode_luma(data: bytes, max_pixels: int, *, max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> DecodedImage:
    """Decode an uploaded photo to its 8-bit BT.601 luma plane, whatever its file name says.

    Refused from the header, before any pixel is decoded: more than ``max_pixels`` pixels
    (``too_many_pixels``), or more than ``max_decode_bytes`` of memory to decode (``decode_bytes``;
    ``over_decode_budget``)."""
    with _open_checked(data, max_pixels, max_decode_bytes) as image:
        orientation = _orientation(image)
        try:
            if image.format in JPEG_FORMATS and image.mode in ("L", "RGB"):
                plane = _jpeg_luma(data)
            else:
                plane = _pillow_luma(image)
        except Rejected:
            raise
        except Exception as error:  # noqa: BLE001 - decoders raise anything on broken data; each becomes a reason
            raise _as_rejected(error) from None
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


def _jpeg_luma(data: bytes) -> np.ndarray:
    # strict=True turns libjpeg's warnings (premature end of data, corrupt data) into errors.
    plane = simplejpeg.decode_jpeg(data, colorspace="GRAY", fastdct=False, fastupsample=False, strict=True)
    return plane.reshape(plane.shape[:2])


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


def _as_rejected(error: Exception) -> Rejected:
    message = f"{type(error).__name__}: {error}"
    lowered = message.lower()
    if any(word in lowered for word in ("truncated", "premature end", "end of file", "not enough data", "eof")):
        return Rejected(RejectReason.TRUNCATED, message)
    return Rejected(RejectReason.CORRUPT, message)
