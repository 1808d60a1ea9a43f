from __future__ import annotations

import numpy as np
import pytest

from graywave.flows.samples import encode, synthetic_photo

from .helpers import rotated_jpeg


@pytest.fixture(scope="session")
def phone_files() -> dict[str, bytes]:
    """One upload per kind that the wave must handle, keyed by ``user/file name``; names may lie."""
    rgb = synthetic_photo(400, 300, seed=3)
    jpeg = encode(rgb, "JPEG", quality=90)
    return {
        "ann/plain.jpg": jpeg,
        "ann/progressive.jpg": encode(rgb, "JPEG", quality=90, progressive=True),
        "bob/rotated.jpg": rotated_jpeg(rgb),
        "bob/photo.heic": encode(rgb, "HEIF", quality=80),
        "cat/screenshot.png": encode(rgb, "PNG"),
        "cat/sticker.webp": encode(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "WEBP"),
        "dan/actually-a-png.jpg": encode(rgb, "PNG"),
        "dan/half.jpg": jpeg[: len(jpeg) // 2],
        "eve/readme.jpg": b"not an image at all",
        "eve/empty.jpg": b"",
        "eve/anim.gif": encode(rgb, "GIF"),
    }
