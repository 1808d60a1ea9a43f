"""Bytes in, luma plane out (and back): the decoding and encoding of photos, with no I/O.

``decode_luma`` takes the fastest exact path for each container:

- JPEG (and MPO, the multi-picture JPEG many phones write) stored as YCbCr or grayscale is decoded by
  libjpeg-turbo straight to its Y plane: chroma is never upsampled or converted. A JPEG stored as RGB
  is converted by libjpeg-turbo with the same integer BT.601 formula as Pillow. CMYK/YCCK goes
  through Pillow's CMYK to RGB conversion, then luma.
- PNG, WebP, HEIC/HEIF and AVIF are decoded by Pillow (pillow-heif for HEIF) and converted:
  RGB by ``luma_from_rgb``; transparency is composited over white; 16-bit grayscale is scaled
  to 8 bits with rounding (``round(v * 255 / 65535)``), never clipped; palettes are expanded.

The EXIF orientation is read but not applied to the plane (histograms do not depend on it);
``upright`` returns the displayed view and ``encode_luma_jpeg`` writes it.
Anything that cannot be decoded raises ``Rejected`` with a stable reason code.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import pillow_heif
import simplejpeg
from PIL import ExifTags, Image, UnidentifiedImageError

from graywave.errors import Rejected, RejectReason
from graywave.kernels import luma_from_rgb

pillow_heif.register_heif_opener()
# graywave checks its own pixel limit from the header, before decoding (see ``decode_luma``).
Image.MAX_IMAGE_PIXELS = None

JPEG_FORMATS = frozenset({"JPEG", "MPO"})
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


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open the container (header only) and check it: an accepted format within the pixel limit."""
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


def read_header(data: bytes, max_pixels: int) -> Header:
    """The format, colour mode and EXIF orientation of an upload; raises ``Rejected`` like ``decode_luma``."""
    with _open_checked(data, max_pixels) as image:
        return Header(format=_format(image), mode=image.mode, orientation=_orientation(image))


def identify(data: bytes, max_pixels: int) -> str:
    """The accepted format of an upload (``JPEG``, ``PNG``, ``WEBP``, ``HEIF``, ``AVIF``), from its header
    alone; raises ``Rejected`` like ``decode_luma`` for what is not one."""
    return read_header(data, max_pixels).format


def decode_luma(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode an uploaded photo to its 8-bit BT.601 luma plane, whatever its file name says."""
    with _open_checked(data, max_pixels) as image:
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
