"""Photo-like sample images made by the project (no downloads), for the demo, tests and benchmarks.

A "photo" here is a smooth scene (sky gradient, horizon, a sun, soft shapes) plus sensor-like
noise: it compresses like a real photo, which flat test patterns do not.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

PHONE_12MP = (4032, 3024)


def synthetic_photo(width: int, height: int, seed: int, brightness: float = 0.0, noise: float = 5.0) -> np.ndarray:
    """An ``(height, width, 3)`` uint8 photo-like RGB image; ``brightness`` shifts it (-1 dark .. 1 bright)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    horizon = 0.45 + 0.1 * rng.random()
    sky = np.stack([90 + 80 * y, 140 + 70 * y, 230 - 30 * y], axis=-1) * np.ones_like(x)[..., None]
    ground_shade = 0.6 + 0.4 * np.sin(6.0 * x + 3.0 * y + rng.random() * 6.0)
    ground = np.stack([70 + 60 * ground_shade, 110 + 50 * ground_shade, 50 + 20 * ground_shade], axis=-1)
    image = np.where((y < horizon)[..., None], sky, ground)
    sun_x, sun_y = rng.random() * 0.8 + 0.1, horizon * rng.random() * 0.8
    sun = np.exp(-(((x - sun_x) * width / height) ** 2 + (y - sun_y) ** 2) / 0.004)
    image = image + 120 * sun[..., None]
    blocks = rng.normal(0.0, 18.0, (height // 48 + 1, width // 48 + 1, 3)).astype(np.float32)
    image = image + np.repeat(np.repeat(blocks, 48, axis=0), 48, axis=1)[:height, :width]
    image = image * (1.0 + 0.6 * brightness) + 60 * brightness
    if noise:
        image = image + rng.normal(0.0, noise, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, fmt: str = "JPEG", **options: object) -> bytes:
    """Encode an RGB(A) array with Pillow (``fmt`` JPEG, PNG, WEBP, HEIF, AVIF...)."""
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg_near_size(rgb: np.ndarray, target_bytes: int) -> bytes:
    """The JPEG of ``rgb`` whose size is closest to ``target_bytes`` (quality searched from 40 to 100)."""
    low, high = 40, 100
    best = encode(rgb, quality=low)
    while low <= high:
        quality = (low + high) // 2
        data = encode(rgb, quality=quality)
        if abs(len(data) - target_bytes) < abs(len(best) - target_bytes):
            best = data
        if len(data) < target_bytes:
            low = quality + 1
        else:
            high = quality - 1
    return best
