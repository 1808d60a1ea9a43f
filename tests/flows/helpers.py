from __future__ import annotations

import io
from datetime import date

import numpy as np
from PIL import Image

from graywave.flows.samples import encode, synthetic_photo
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.layout import upload_key

DAY = date(2026, 11, 25)


def rotated_jpeg(rgb: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(rgb, "JPEG", quality=90, exif=exif)


EXPECTED_REJECTS = {
    "dan/half.jpg": "truncated",
    "eve/readme.jpg": "not_an_image",
    "eve/empty.jpg": "empty",
    "eve/anim.gif": "unsupported_format",
}


def put_uploads(root, day: date, files: dict[str, bytes]) -> list[str]:
    store = LocalBlobStore(root)
    keys = []
    for path, data in files.items():
        user, name = path.split("/", 1)
        key = upload_key(day, user, name)
        store.write(key, data, "application/octet-stream")
        keys.append(key)
    return keys


def decode_processed(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
