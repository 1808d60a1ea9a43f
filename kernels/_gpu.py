"""GPU kernels: numba-cuda kernels over CuPy arrays, launched on CuPy's current stream.

The GPU twins of ``_cpu``, with the same names and signatures (``counts256``, ``counts256_batch``,
``counts256_planes``, ``luma_from_rgb``). Imported only when a GPU is asked for or detected
(``device.py``), or by the tests.

CuPy stays the array library: numba-cuda takes CuPy arrays through ``__cuda_array_interface__``
(no copy), and every launch goes on ``cupy.cuda.get_current_stream()``, so kernels and CuPy's own
operations stay in order without a synchronisation. Under numba-cuda's simulator
(``NUMBA_ENABLE_CUDASIM=1``, set before numba is imported: what CI does) the same kernels run on the
CPU, thread by thread, with NumPy arrays in CuPy's place (``gpu_arrays``). ``tests/kernels/gpu_sim``
runs them there against the CPU kernels; ``tests/kernels/test_ptx.py`` compiles them to PTX for
sm_80 and sm_90 with each signature in ``SIGNATURES``, the one specialisation each launch uses.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
from numba import config, cuda, types

SIMULATED = bool(config.ENABLE_CUDASIM)
"""True under numba-cuda's simulator: NumPy arrays stand for device arrays."""
THREADS = 256
"""Threads per block of the histogram and luma kernels."""
PIXELS_PER_THREAD = 64
"""A histogram block is sized so that each thread counts about this many pixels of its plane."""
MAX_BLOCKS_PER_PLANE = 1024
MAX_PLANES_PER_LAUNCH = 65535
"""CUDA's limit on a grid's y dimension: one block row per plane."""


def gpu_arrays() -> ModuleType:
    """The array module of device arrays: CuPy, or NumPy under the simulator."""
    if SIMULATED:
        return np
    import cupy

    return cupy


def current_stream() -> Any:
    """CuPy's current stream as a numba-cuda stream (the simulator's default stream when simulated)."""
    if SIMULATED:
        return cuda.default_stream()
    import cupy

    return cuda.external_stream(cupy.cuda.get_current_stream().ptr)


def _counts256(pixels: Any, offsets: Any, out: Any) -> None:
    """256-bin counts of planes laid end to end in ``pixels``: plane ``p`` is
    ``pixels[offsets[p]:offsets[p + 1]]`` and its counts go to ``out[p]``. Block row ``blockIdx.y``
    is one plane; its blocks stride over the plane, count into shared memory, then add their counts
    to the plane's row once."""
    local = cuda.shared.array(256, dtype=np.uint32)
    for b in range(cuda.threadIdx.x, 256, cuda.blockDim.x):
        local[b] = 0
    cuda.syncthreads()
    plane = cuda.blockIdx.y
    end = offsets[plane + 1]
    stride = cuda.gridDim.x * cuda.blockDim.x
    i = offsets[plane] + cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    while i < end:
        cuda.atomic.add(local, pixels[i], np.uint32(1))
        i += stride
    cuda.syncthreads()
    for b in range(cuda.threadIdx.x, 256, cuda.blockDim.x):
        if local[b]:
            cuda.atomic.add(out, (plane, b), np.uint64(local[b]))


def _luma(rgb: Any, out: Any) -> None:
    """ITU-R BT.601 luma of interleaved 8-bit RGB, ``(19595 R + 38470 G + 7471 B + 32768) >> 16``."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < out.size:
        r = np.uint32(rgb[3 * i])
        g = np.uint32(rgb[3 * i + 1])
        b = np.uint32(rgb[3 * i + 2])
        out[i] = np.uint8((r * np.uint32(19595) + g * np.uint32(38470) + b * np.uint32(7471) + np.uint32(0x8000)) >> 16)
        i += stride


SIGNATURES = {
    _counts256: (types.uint8[::1], types.int64[::1], types.uint64[:, ::1]),
    _luma: (types.uint8[::1], types.uint8[::1]),
}
"""Each kernel's one signature: the types its launcher passes (C-contiguous arrays, CuPy's or NumPy's)."""
counts256_kernel = cuda.jit(_counts256)
luma_kernel = cuda.jit(_luma)


def _counts_of_flat(pixels: Any, offsets: np.ndarray) -> Any:
    """(n, 256) int64 counts of the planes ``pixels[offsets[p]:offsets[p + 1]]``, on the device."""
    xp = gpu_arrays()
    planes = len(offsets) - 1
    out = xp.zeros((planes, 256), dtype=xp.uint64)
    largest = int(np.diff(offsets).max(initial=0))
    if largest:
        blocks = min(max(largest // (THREADS * PIXELS_PER_THREAD), 1), MAX_BLOCKS_PER_PLANE)
        stream = current_stream()
        for first in range(0, planes, MAX_PLANES_PER_LAUNCH):
            last = min(first + MAX_PLANES_PER_LAUNCH, planes)
            counts256_kernel[(blocks, last - first), THREADS, stream](
                pixels, xp.asarray(offsets[first : last + 1]), out[first:last]
            )
    return out.astype(xp.int64)


def counts256_planes(planes: list[Any]) -> Any:
    """256-bin counts of each plane (any shapes, a ragged batch), in one kernel launch: (n, 256) int64.
    The planes are copied end to end into one buffer first (a device-to-device copy)."""
    xp = gpu_arrays()
    if not planes:
        return xp.zeros((0, 256), dtype=xp.int64)
    offsets = np.cumsum([0] + [plane.size for plane in planes], dtype=np.int64)
    pixels = xp.concatenate([xp.ascontiguousarray(plane, dtype=xp.uint8).reshape(-1) for plane in planes])
    return _counts_of_flat(pixels, offsets)


def counts256_batch(planes: Any) -> Any:
    """256-bin counts of each plane of an ``(n, h, w)`` array, in one launch, without a copy."""
    xp = gpu_arrays()
    stacked = xp.ascontiguousarray(planes, dtype=xp.uint8)
    size = int(np.prod(stacked.shape[1:]))
    offsets = np.arange(stacked.shape[0] + 1, dtype=np.int64) * size
    return _counts_of_flat(stacked.reshape(-1), offsets)


def counts256(plane: Any) -> Any:
    return counts256_batch(plane[None])[0]


def luma_from_rgb(rgb: Any) -> Any:
    xp = gpu_arrays()
    flat = xp.ascontiguousarray(rgb, dtype=xp.uint8).reshape(-1)
    out = xp.empty(rgb.shape[:-1], dtype=xp.uint8)
    if out.size:
        blocks = min((out.size + THREADS - 1) // THREADS, 4096)
        luma_kernel[blocks, THREADS, current_stream()](flat, out.reshape(-1))
    return out
