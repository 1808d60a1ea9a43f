"""GPU kernels in CuPy. Imported only when a GPU is asked for or detected (see ``device.py``)."""

from __future__ import annotations

import cupy as cp

_luma = cp.ElementwiseKernel(
    "uint8 r, uint8 g, uint8 b",
    "uint8 y",
    "y = (unsigned char)((19595u * r + 38470u * g + 7471u * b + 0x8000u) >> 16)",
    "graywave_luma",
)

# One block row per image (blockIdx.y); each block counts its share of the image into
# shared-memory bins, then adds them to the image's global bins once.
_counts256_kernel = cp.RawKernel(
    r"""
extern "C" __global__
void graywave_counts256(const unsigned char* planes, long long plane_size, unsigned long long* out) {
    __shared__ unsigned int local[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) local[i] = 0;
    __syncthreads();
    const unsigned char* p = planes + (long long)blockIdx.y * plane_size;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < plane_size; i += stride) {
        atomicAdd(&local[p[i]], 1u);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 256; i += blockDim.x) {
        if (local[i]) atomicAdd(&out[(long long)blockIdx.y * 256 + i], (unsigned long long)local[i]);
    }
}
""",
    "graywave_counts256",
)

_THREADS = 256


def counts256_batch(planes: cp.ndarray) -> cp.ndarray:
    planes = cp.ascontiguousarray(planes, dtype=cp.uint8)
    n = planes.shape[0]
    plane_size = planes[0].size if n else 0
    out = cp.zeros((n, 256), cp.uint64)
    if n and plane_size:
        blocks = min(max(plane_size // (_THREADS * 64), 1), 1024)
        _counts256_kernel((blocks, n), (_THREADS,), (planes, cp.int64(plane_size), out))
    return out.astype(cp.int64)


def counts256(plane: cp.ndarray) -> cp.ndarray:
    return counts256_batch(plane[None])[0]


def luma_from_rgb(rgb: cp.ndarray) -> cp.ndarray:
    return _luma(rgb[..., 0], rgb[..., 1], rgb[..., 2])
