"""CPU kernels, compiled with Numba. Single-threaded and GIL-free: the wave runs one per core.

The CPU twins of ``_gpu``: the same names and signatures, NumPy arrays in and out."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def _counts256(flat: np.ndarray) -> np.ndarray:
    # Four private tables break the store-to-load dependency between neighbouring equal pixels.
    tables = np.zeros((4, 256), np.int64)
    n = flat.size
    body = n - n % 4
    for i in range(0, body, 4):
        tables[0, flat[i]] += 1
        tables[1, flat[i + 1]] += 1
        tables[2, flat[i + 2]] += 1
        tables[3, flat[i + 3]] += 1
    for i in range(body, n):
        tables[0, flat[i]] += 1
    return tables.sum(axis=0)


@numba.njit(nogil=True, cache=True)
def _luma(flat_rgb: np.ndarray, out: np.ndarray) -> None:
    for i in range(out.size):
        r = np.uint32(flat_rgb[3 * i])
        g = np.uint32(flat_rgb[3 * i + 1])
        b = np.uint32(flat_rgb[3 * i + 2])
        out[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def counts256(plane: np.ndarray) -> np.ndarray:
    return _counts256(np.ascontiguousarray(plane).reshape(-1))


def counts256_batch(planes: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(planes).reshape(planes.shape[0], -1)
    return np.stack([_counts256(row) for row in flat]) if len(flat) else np.zeros((0, 256), np.int64)


def counts256_planes(planes: list[np.ndarray]) -> np.ndarray:
    """256-bin counts of each plane (any shapes): (n, 256) int64."""
    return np.stack([counts256(plane) for plane in planes]) if planes else np.zeros((0, 256), np.int64)


def luma_from_rgb(rgb: np.ndarray) -> np.ndarray:
    out = np.empty(rgb.shape[:-1], np.uint8)
    _luma(np.ascontiguousarray(rgb).reshape(-1), out.reshape(-1))
    return out
