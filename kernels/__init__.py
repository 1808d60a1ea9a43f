"""Pure array functions: the same call on NumPy arrays (CPU, Numba) and CuPy arrays (GPU).

Like scikit-image and cuCIM, each operation is one public function; the input array's type picks
the implementation, and ``select_device`` (driven by ``GRAYWAVE_DEVICE``) decides where arrays go.

>>> import numpy as np
>>> from graywave.kernels import histogram, luma_from_rgb
>>> rgb = np.array([[[255, 0, 0], [0, 0, 255]]], dtype=np.uint8)
>>> luma_from_rgb(rgb)
array([[76, 29]], dtype=uint8)
>>> histogram(luma_from_rgb(rgb), bins=16).tolist()
[0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from graywave.kernels.device import Device, gpu_available, is_gpu_array, select_device

__all__ = [
    "Device",
    "gpu_available",
    "histogram",
    "histogram_batch",
    "luma_from_rgb",
    "select_device",
    "warm_up",
]


def _impl(array: Any) -> ModuleType:
    if is_gpu_array(array):
        from graywave.kernels import _gpu

        return _gpu
    from graywave.kernels import _cpu

    return _cpu


def _check_bins(bins: int) -> int:
    if bins < 1 or bins > 256 or 256 % bins:
        raise ValueError(f"bins must be a power of two between 1 and 256, got {bins}")
    return 256 // bins


def _check_uint8(array: Any, what: str) -> None:
    if str(array.dtype) != "uint8":
        raise TypeError(f"{what} must be uint8, got {array.dtype}")


def luma_from_rgb(rgb: Any) -> Any:
    """ITU-R BT.601 luma of 8-bit RGB (``(..., 3)`` uint8), bit-exact with Pillow's ``convert("L")``.

    ``L = (19595 R + 38470 G + 7471 B + 32768) >> 16``.
    """
    _check_uint8(rgb, "rgb")
    if rgb.shape[-1] != 3:
        raise ValueError(f"rgb must have 3 channels in its last axis, got shape {rgb.shape}")
    return _impl(rgb).luma_from_rgb(rgb)


def histogram(plane: Any, bins: int = 16) -> Any:
    """Counts of a uint8 plane's values in ``bins`` equal bins: bin ``k`` holds ``v // (256 // bins) == k``.

    Returns int64 counts on the plane's device; they sum to ``plane.size``.
    """
    width = _check_bins(bins)
    _check_uint8(plane, "plane")
    return _impl(plane).counts256(plane).reshape(bins, width).sum(axis=1)


def histogram_batch(planes: Any | Sequence[Any], bins: int = 16) -> Any:
    """Histograms of many planes: a ``(n, h, w)`` array or a sequence of planes of any shapes (one
    kernel launch on the GPU either way). Returns ``(n, bins)`` int64 counts on the planes' device.
    """
    width = _check_bins(bins)
    if hasattr(planes, "ndim") and planes.ndim == 3:
        _check_uint8(planes, "planes")
        return _impl(planes).counts256_batch(planes).reshape(-1, bins, width).sum(axis=2)
    planes = list(planes)
    if not planes:
        return np.zeros((0, bins), np.int64)
    for plane in planes:
        _check_uint8(plane, "planes")
    return _impl(planes[0]).counts256_planes(planes).reshape(-1, bins, width).sum(axis=2)  # one launch on a GPU


def warm_up(device: Device) -> None:
    """Load (or compile) the kernels for ``device`` now, so that the first batch does not wait for it:
    on writable arrays and on read-only ones (a decoded image's pixels, Pillow's buffer), each a
    kernel of its own to Numba."""
    for writable in (True, False):
        plane, rgb = np.zeros((2, 2), np.uint8), np.zeros((2, 2, 3), np.uint8)
        plane.flags.writeable = rgb.flags.writeable = writable
        histogram(device.put(plane))
        histogram_batch(device.put(plane[None]))
        luma_from_rgb(device.put(rgb))
