"""GPU kernels in CuPy. Imported only when a GPU is asked for or detected (see ``device.py``)."""

from __future__ import annotations

import cupy as cp

_luma = cp.ElementwiseKernel(
    "uint8 r, uint8 g, uint8 b",
    "uint8 y",
    "y = (unsigned char)((19595u * r + 38470u * g + 7471u * b + 0x8000u) >> 16)",
    "graywave_luma",
)

# One block row per image (blockIdx.y), whatever the images' sizes: each block counts its share of
# an image into shared-memory bins, then adds them to the image's global bins once.
_counts256_kernel = cp.RawKernel(
    r"""
extern "C" __global__
void graywave_counts256(const unsigned long long* planes, const long long* sizes, unsigned long long* out) {
    __shared__ unsigned int local[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) local[i] = 0;
    __syncthreads();
    const unsigned char* p = (const unsigned char*)planes[blockIdx.y];
    const long long plane_size = sizes[blockIdx.y];
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


def counts256_planes(planes: list[cp.ndarray]) -> cp.ndarray:
    """256-bin counts of each plane (any shapes), in one kernel launch: (n, 256) int64."""
    contiguous = [cp.ascontiguousarray(plane) for plane in planes]
    out = cp.zeros((len(contiguous), 256), cp.uint64)
    largest = max((plane.size for plane in contiguous), default=0)
    if largest:
        pointers = cp.asarray([plane.data.ptr for plane in contiguous], dtype=cp.uint64)
        sizes = cp.asarray([plane.size for plane in contiguous], dtype=cp.int64)
        blocks = min(max(largest // (_THREADS * 64), 1), 1024)
        _counts256_kernel((blocks, len(contiguous)), (_THREADS,), (pointers, sizes, out))
    return out.astype(cp.int64)


def counts256_batch(planes: cp.ndarray) -> cp.ndarray:
    return counts256_planes(list(cp.ascontiguousarray(planes)))


def counts256(plane: cp.ndarray) -> cp.ndarray:
    return counts256_planes([plane])[0]


def luma_from_rgb(rgb: cp.ndarray) -> cp.ndarray:
    return _luma(rgb[..., 0], rgb[..., 1], rgb[..., 2])
