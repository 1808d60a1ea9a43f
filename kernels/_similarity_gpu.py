"""All-pairs top-k on the GPU: one fused CUDA kernel (distances and per-row top-k in one pass).

One thread per row; a block stages tiles of other rows in shared memory; each thread keeps its
row's k best (distance, index) pairs in registers. No N x N matrix exists. Same metric codes and
float32 arithmetic as the CPU kernel (``_similarity_cpu``); ``similarity.all_pairs_nearest``
re-scores the candidates in float64 either way.
"""

from __future__ import annotations

from functools import cache

import cupy as cp
import numpy as np

MAX_K = 32
THREADS = 128
TILE_ROWS = 64

_SOURCE = r"""
#define BINS {bins}
#define K {k}
#define TILE_ROWS {tile_rows}
extern "C" __global__
void graywave_top_k(const float* __restrict__ x, const int rows, const int metric,
                    long long* __restrict__ out_index, float* __restrict__ out_distance) {{
    __shared__ float tile[TILE_ROWS * BINS];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    float a[BINS];
    for (int b = 0; b < BINS; ++b) a[b] = (i < rows) ? x[(long long)i * BINS + b] : 0.0f;
    float best_d[K];
    int best_j[K];
    for (int s = 0; s < K; ++s) {{ best_d[s] = INFINITY; best_j[s] = 0x7fffffff; }}
    int worst = 0;
    for (int j0 = 0; j0 < rows; j0 += TILE_ROWS) {{
        for (int t = threadIdx.x; t < TILE_ROWS * BINS; t += blockDim.x) {{
            const long long j = j0 + t / BINS;
            tile[t] = (j < rows) ? x[j * BINS + t % BINS] : 0.0f;
        }}
        __syncthreads();
        const int count = min(TILE_ROWS, rows - j0);
        if (i < rows) {{
            for (int jj = 0; jj < count; ++jj) {{
                const int j = j0 + jj;
                if (j == i) continue;
                const float* q = &tile[jj * BINS];
                float d = 0.0f;
                if (metric == 0) {{
                    for (int b = 0; b < BINS; ++b) d += fabsf(a[b] - q[b]) / fmaxf(fmaxf(a[b], q[b]), FLT_MIN);
                }} else if (metric == 1) {{
                    for (int b = 0; b < BINS; ++b) d += fabsf(a[b] - q[b]);
                }} else if (metric == 2) {{
                    for (int b = 0; b < BINS; ++b) {{ const float e = a[b] - q[b]; d += e * e / fmaxf(a[b] + q[b], FLT_MIN); }}
                }} else {{
                    for (int b = 0; b < BINS; ++b) d += a[b] * q[b];
                    d = 1.0f - d;
                }}
                if (d < best_d[worst] || (d == best_d[worst] && j < best_j[worst])) {{
                    best_d[worst] = d;
                    best_j[worst] = j;
                    for (int s = 0; s < K; ++s) {{
                        if (best_d[s] > best_d[worst] || (best_d[s] == best_d[worst] && best_j[s] > best_j[worst])) worst = s;
                    }}
                }}
            }}
        }}
        __syncthreads();
    }}
    if (i < rows) {{
        for (int s = 0; s < K; ++s) {{
            out_index[(long long)i * K + s] = (best_j[s] == 0x7fffffff) ? -1 : best_j[s];
            out_distance[(long long)i * K + s] = best_d[s];
        }}
    }}
}}
"""


@cache
def _kernel(bins: int, k: int) -> cp.RawKernel:
    source = "#include <cfloat>\n" + _SOURCE.format(bins=bins, k=k, tile_rows=TILE_ROWS)
    return cp.RawKernel(source, "graywave_top_k", options=("--std=c++11",))


def top_k_all_pairs(features: np.ndarray, k: int, metric: int) -> tuple[np.ndarray, np.ndarray]:
    """(candidates, float32 distances as float64), each N x k on the host, sorted by (distance, index)."""
    if k > MAX_K:
        raise ValueError(f"the GPU kernel keeps at most {MAX_K} neighbours per row")
    rows, bins = features.shape
    x = cp.asarray(features, dtype=cp.float32)
    index = cp.empty((rows, k), dtype=cp.int64)
    distance = cp.empty((rows, k), dtype=cp.float32)
    blocks = (rows + THREADS - 1) // THREADS
    _kernel(bins, k)((blocks,), (THREADS,), (x, np.int32(rows), np.int32(metric), index, distance))
    index, distance = cp.asnumpy(index), cp.asnumpy(distance).astype(np.float64)
    order = np.lexsort((np.where(index < 0, np.iinfo(np.int64).max, index), distance), axis=-1)
    return np.take_along_axis(index, order, axis=-1), np.take_along_axis(distance, order, axis=-1)
