import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageOps

from graywave.errors import Rejected, RejectReason
from graywave.kernels.codecs import (
    DEFAULT_MAX_DECODE_BYTES,
    decode_bytes,
    decode_luma,
    encode_luma_jpeg,
    read_header,
    upright,
)
from graywave.service.samples import encode
from tests.helpers import png_header, sample_photo

MAX = 10_000_000


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return sample_photo()


def pillow_y_plane(data: bytes) -> np.ndarray:
    """Independent reference for JPEG: Pillow's own libjpeg decode, asked for the Y plane (draft "L")."""
    image = Image.open(io.BytesIO(data))
    image.draft("L", image.size)
    return np.asarray(image.convert("L"))


@pytest.mark.parametrize(
    "options",
    [
        {"quality": 90},
        {"quality": 85, "progressive": True},
        {"quality": 95, "subsampling": 0},
        {"quality": 70, "subsampling": 1},
    ],
    ids=["baseline-420", "progressive", "444", "422"],
)
def test_jpeg_decodes_straight_to_the_y_plane(photo, options):
    data = encode(photo, "JPEG", **options)
    decoded = decode_luma(data, MAX)
    assert decoded.format == "JPEG"
    assert decoded.plane.dtype == np.uint8
    assert np.array_equal(decoded.plane, pillow_y_plane(data))


def test_grayscale_jpeg(photo):
    gray = np.asarray(Image.fromarray(photo).convert("L"))
    data = encode(gray, "JPEG", quality=90)
    assert np.array_equal(decode_luma(data, MAX).plane, np.asarray(Image.open(io.BytesIO(data))))


def test_cmyk_jpeg_goes_through_rgb(photo):
    buffer = io.BytesIO()
    Image.fromarray(photo).convert("CMYK").save(buffer, "JPEG", quality=95)
    decoded = decode_luma(buffer.getvalue(), MAX)
    expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB").convert("L"))
    assert np.array_equal(decoded.plane, expected)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_lossless_rgb_formats_equal_pillow_luma(photo, fmt):
    options = {"lossless": True} if fmt == "WEBP" else {}
    decoded = decode_luma(encode(photo, fmt, **options), MAX)
    assert decoded.format == fmt
    assert np.array_equal(decoded.plane, np.asarray(Image.fromarray(photo).convert("L")))


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_decode_to_a_close_luma(photo, fmt):
    decoded = decode_luma(encode(photo, fmt, quality=90), MAX)
    assert decoded.format == fmt
    assert decoded.plane.shape == (240, 320)
    reference = np.asarray(Image.fromarray(photo).convert("L")).astype(int)
    assert np.abs(decoded.plane.astype(int) - reference).mean() < 4  # lossy codecs


def test_transparency_is_composited_over_white(photo):
    rgba = np.dstack([photo, np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))])
    decoded = decode_luma(encode(rgba, "PNG"), MAX)
    over_white = Image.alpha_composite(Image.new("RGBA", (320, 240), "white"), Image.fromarray(rgba))
    assert np.array_equal(decoded.plane, np.asarray(over_white.convert("L")))
    assert decoded.plane[:, 0].min() == 255  # fully transparent column is white


def test_palette_png(photo):
    palette = Image.fromarray(photo).quantize(64)
    buffer = io.BytesIO()
    palette.save(buffer, "PNG")
    decoded = decode_luma(buffer.getvalue(), MAX)
    assert np.array_equal(decoded.plane, np.asarray(palette.convert("RGB").convert("L")))


def test_16_bit_grayscale_is_scaled_not_clipped():
    values = np.array([[0, 257, 32768, 65535, 1000, 40000]], dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    decoded = decode_luma(buffer.getvalue(), MAX)
    assert decoded.plane.tolist() == [[0, 1, 128, 255, 4, 156]]  # round(v * 255 / 65535)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_the_upright_view_like_pillow(photo, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(photo, "JPEG", quality=90, exif=exif)
    decoded = decode_luma(data, MAX)
    assert decoded.orientation == orientation
    reference = Image.open(io.BytesIO(data))
    reference.draft("L", reference.size)
    expected = np.asarray(ImageOps.exif_transpose(reference.convert("L")))
    assert np.array_equal(upright(decoded), expected)
    assert (decoded.height, decoded.width) == expected.shape


def test_encoded_output_is_a_grayscale_jpeg_close_to_the_plane(photo):
    plane = np.asarray(Image.fromarray(photo).convert("L"))
    data = encode_luma_jpeg(plane[:, ::-1], quality=90)  # any strides
    back = Image.open(io.BytesIO(data))
    assert (back.format, back.mode, back.size) == ("JPEG", "L", (320, 240))
    error = np.abs(np.asarray(back).astype(int) - plane[:, ::-1]).mean()
    assert error < 3  # quality 90 on a noisy photo
    assert np.abs(np.asarray(back).astype(int) - plane).mean() > 4 * error  # the flipped view was encoded


def reason_of(data: bytes, max_pixels: int = MAX) -> RejectReason:
    with pytest.raises(Rejected) as caught:
        decode_luma(data, max_pixels)
    assert caught.value.detail
    return caught.value.reason


def test_bad_inputs_get_stable_reasons(photo):
    jpeg = encode(photo, "JPEG", quality=90)
    png = encode(photo, "PNG")
    assert reason_of(b"") == RejectReason.EMPTY
    assert reason_of(b"hello, this is not an image") == RejectReason.NOT_AN_IMAGE
    assert reason_of(jpeg[: len(jpeg) // 2]) == RejectReason.TRUNCATED
    assert reason_of(png[: len(png) // 2]) == RejectReason.TRUNCATED
    assert reason_of(encode(photo, "GIF")) == RejectReason.UNSUPPORTED_FORMAT
    assert reason_of(encode(photo, "BMP")) == RejectReason.UNSUPPORTED_FORMAT
    corrupt = bytearray(jpeg)
    start = corrupt.index(b"\xff\xda") + 20  # scrambled entropy-coded data after start of scan
    corrupt[start : start + 2000] = bytes(range(256)) * 7 + bytes(208)
    assert reason_of(bytes(corrupt)) == RejectReason.CORRUPT  # full length: damaged, not truncated
    assert reason_of(jpeg[:200]) == RejectReason.TRUNCATED  # cut in its header


def test_decompression_bombs_are_rejected_from_the_header():
    bomb = encode(np.zeros((3000, 4000), np.uint8), "PNG")  # small file, 12 MP
    assert len(bomb) < 100_000
    assert reason_of(bomb, max_pixels=11_999_999) == RejectReason.TOO_MANY_PIXELS
    assert decode_luma(bomb, max_pixels=12_000_000).plane.shape == (3000, 4000)


def test_the_memory_budget_knows_the_decoded_mode():
    # The worst case: 16000x16000 RGBA passes the pixel limit, and needs gigabytes to decode.
    rgba, gray = png_header(16000, 16000, "RGBA"), png_header(16000, 16000, "L")
    with pytest.raises(Rejected) as caught:
        read_header(rgba, 256_000_000)
    assert caught.value.reason == RejectReason.OVER_DECODE_BUDGET
    assert "RGBA" in caught.value.detail and "MB" in caught.value.detail
    assert read_header(gray, 256_000_000).mode == "L"  # the same size in grayscale fits the budget
    assert decode_bytes("PNG", "RGBA", 16000, 16000) > 4 * 10**9 > DEFAULT_MAX_DECODE_BYTES
    # A plain JPEG decodes straight to its Y plane: the largest accepted one fits the budget easily.
    assert decode_bytes("JPEG", "RGB", 16000, 16000) < 0.2 * DEFAULT_MAX_DECODE_BYTES
    assert decode_bytes("JPEG", "CMYK", 1000, 1000) > 10 * decode_bytes("JPEG", "RGB", 1000, 1000)


def test_a_budget_refuses_before_decoding_and_admits_what_fits(photo):
    png = encode(photo, "PNG")  # 320x240 RGB
    needed = decode_bytes("PNG", "RGB", 320, 240)
    with pytest.raises(Rejected) as caught:
        decode_luma(png, MAX, max_decode_bytes=needed - 1)
    assert caught.value.reason == RejectReason.OVER_DECODE_BUDGET
    assert decode_luma(png, MAX, max_decode_bytes=needed).plane.shape == (240, 320)


_PEAK_SCRIPT = r"""
import ctypes, io, json, sys
import numpy as np
import pillow_heif
from PIL import Image
from graywave.kernels.codecs import decode_bytes, decode_luma

pillow_heif.register_heif_opener()
side = int(sys.argv[1])
rng = np.random.default_rng(1)
def noise(channels, dtype=np.uint8, top=256):
    return rng.integers(0, top, (side, side, channels)[: 2 if channels == 1 else 3], dtype=dtype)
images = {
    "L": Image.fromarray(noise(1), "L"), "RGB": Image.fromarray(noise(3), "RGB"),
    "RGBA": Image.fromarray(noise(4), "RGBA"), "LA": Image.fromarray(noise(2), "LA"),
    "I;16": Image.fromarray(noise(1, np.uint16, 65536)), "P": Image.fromarray(noise(3), "RGB").quantize(256),
    "CMYK": Image.fromarray(noise(4), "CMYK"),
}
cases = [("PNG", m) for m in ("L", "RGB", "RGBA", "LA", "I;16", "P")]
cases += [("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK"), ("WEBP", "RGB"), ("WEBP", "RGBA")]
cases += [("HEIF", "RGB"), ("HEIF", "L")]
files = {}
for fmt, mode in cases:
    out = io.BytesIO()
    images[mode].save(out, fmt, **({"compress_level": 1} if fmt == "PNG" else {"quality": 80}))
    files[fmt, mode] = out.getvalue()
del images
for data in files.values():  # warm: compiled kernels, decoder libraries, allocator arenas
    decode_luma(data, 10**9)
def status(field):
    return int(next(l for l in open("/proc/self/status") if l.startswith(field)).split()[1]) * 1024
libc = ctypes.CDLL("libc.so.6")
found = []
for (fmt, mode), data in files.items():
    libc.malloc_trim(0)  # freed memory goes back: the next decode's pages count again
    with open("/proc/self/clear_refs", "w") as reset:
        reset.write("5")  # VmHWM := VmRSS
    before = status("VmRSS")
    decode_luma(data, 10**9)
    header = Image.open(io.BytesIO(data))
    estimate = decode_bytes(header.format, header.mode, side, side, transparent="transparency" in header.info)
    found.append([fmt, header.mode, status("VmHWM") - before, estimate])
print(json.dumps(found))
"""


def test_the_budget_is_an_upper_bound_of_the_measured_peak():
    """Each mode's estimate holds the peak resident memory of a real decode (in a process of its own,
    measured with Linux's VmHWM), and is not wildly above it."""
    side = 1500
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(side)], capture_output=True, text=True, timeout=240, check=True
    )
    slack = 6 * 2**20  # allocator granularity and the decoders' fixed buffers
    for fmt, mode, peak, estimate in json.loads(done.stdout):
        assert peak <= estimate + slack, f"{fmt} {mode}: measured {peak / side**2:.1f} B/px"
        assert estimate <= 2 * peak + slack, f"{fmt} {mode}: estimate {estimate / side**2:.1f} B/px, too cautious"
