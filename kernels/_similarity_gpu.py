"""All-pairs top-n on the GPU, the twins of ``_similarity_cpu``'s two searches (same names,
signatures and results):

- ``top_n_by_inner_product``: tiles of a matrix multiply (CuPy's matmul, cuBLAS sgemm), each tile
  streamed through every row's table by one numba-cuda kernel (``graywave_top_k_of_products``).
- ``top_n_all_pairs``: one fused numba-cuda kernel, distances and each row's n best in one pass,
  described below.

One thread per row; a block stages tiles of other rows in shared memory; each thread keeps its
row's n best (distance, index) pairs in a table of its own. No N x N matrix exists. Same metric
codes, float32 arithmetic and order of summation as the CPU kernel (four bins a pass, added as
``(t0 + t1) + (t2 + t3)``), so the simulator gives the CPU kernel's distances bit for bit. On a
device, ptxas may contract a product and a sum into one FMA (chi-square's square), which moves the
float32 distances by a few ulps; the candidates that the search keeps are re-scored in float64 by
``similarity.all_pairs_nearest`` either way (rows too close to call are redone one against all), so
its answer does not depend on it.

The kernel is specialised on the number of bins (the row held by each thread, the tile's shape);
``SIGNATURE`` is the one signature every specialisation is launched with, which
``tests/kernels/test_ptx.py`` compiles to PTX for sm_80 and sm_90.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
from numba import cuda, types

from graywave.kernels._gpu import SIMULATED, current_stream, gpu_arrays
from graywave.kernels.similarity import CHISQ, DESIGN, L1, _ranked  # metric codes (MIN: the others), the sort

MAX_K = 128
"""The most neighbours a row's table holds (the analytics' top-n goes up to 100, plus the
re-scoring's extra candidates); the table lives in local memory, and a launch loops over its ``n``."""
THREADS = 128
"""Threads (rows) per block."""
TILE_BYTES = 16384
"""The most shared memory a block's tile takes: 64 rows of up to 64 bins, fewer rows of more bins
(CUDA's static limit is 48 KiB)."""
SUPPORTED_BINS = tuple(2**e for e in range(9))
"""Histogram bins graywave can be configured with (``GRAYWAVE_BINS``): 1, 2, 4 ... 256."""
INF = np.float32(np.inf)


def tile_rows(bins: int) -> int:
    """Rows of other users a block stages in shared memory at a time."""
    return max(1, min(64, TILE_BYTES // (4 * bins)))


def _source(bins: int) -> Callable[..., None]:  # noqa: C901 - the kernel's own complexity (graywave_top_k)
    """The kernel for rows of ``bins`` bins, as a Python function (``cuda.jit`` it, or compile it).

    Long, and one function, because it is one CUDA kernel: its loops share one thread's registers
    and its block's shared tile, and numba-cuda compiles no call between them into a kernel."""
    tile_size = tile_rows(bins) * bins
    rows_per_tile = tile_rows(bins)
    body = bins - bins % 4

    # One CUDA kernel: its loops and branches run in one thread's registers and its block's shared tile.
    def graywave_top_k(xt: Any, rows: int, k: int, metric: int, tiny: float, out_index: Any, out_distance: Any) -> None:  # noqa: C901
        tile = cuda.shared.array(tile_size, dtype=np.float32)
        a = cuda.local.array(bins, dtype=np.float32)
        best_d = cuda.local.array(MAX_K, dtype=np.float32)
        best_j = cuda.local.array(MAX_K, dtype=np.int32)
        i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        for b in range(bins):
            a[b] = xt[b, i] if i < rows else np.float32(0)
        for s in range(k):
            best_d[s] = INF
            best_j[s] = rows  # no candidate: ranks after every real one
        worst = 0
        for j0 in range(0, rows, rows_per_tile):
            # The tile, column by column of xt (bins x N): consecutive threads read consecutive rows.
            for t in range(cuda.threadIdx.x, tile_size, cuda.blockDim.x):
                b = t // rows_per_tile
                jj = t % rows_per_tile
                tile[jj * bins + b] = xt[b, j0 + jj] if j0 + jj < rows else np.float32(0)
            cuda.syncthreads()
            if i < rows:
                for jj in range(min(rows_per_tile, rows - j0)):
                    j = j0 + jj
                    if j == i:
                        continue
                    d = np.float32(0)
                    for k4 in range(0, body, 4):
                        q = jj * bins + k4
                        d += (_term(metric, a[k4], tile[q], tiny) + _term(metric, a[k4 + 1], tile[q + 1], tiny)) + (
                            _term(metric, a[k4 + 2], tile[q + 2], tiny) + _term(metric, a[k4 + 3], tile[q + 3], tiny)
                        )
                    for b in range(body, bins):
                        d += _term(metric, a[b], tile[jj * bins + b], tiny)
                    if metric != DESIGN and metric != L1 and metric != CHISQ:
                        d = np.float32(1) - d
                    if d < best_d[worst] or (d == best_d[worst] and j < best_j[worst]):
                        best_d[worst] = d
                        best_j[worst] = j
                        for s in range(k):  # the new worst of the table
                            if best_d[s] > best_d[worst] or (best_d[s] == best_d[worst] and best_j[s] > best_j[worst]):
                                worst = s
            cuda.syncthreads()
        if i < rows:
            for s in range(k):
                out_index[i, s] = best_j[s] if best_j[s] < rows else -1
                out_distance[i, s] = best_d[s]

    return graywave_top_k


def _term_source(metric: int, a: Any, b: Any, tiny: Any) -> Any:
    """One bin's term of a distance, in float32 (the CPU kernel's ``_design``, ``_l1``, ``_chisq``,
    ``_min``)."""
    if metric == DESIGN:
        return abs(a - b) / max(max(a, b), tiny)
    if metric == L1:
        return abs(a - b)
    if metric == CHISQ:
        e = a - b
        return e * e / max(a + b, tiny)
    return min(a, b)


_term = _term_source if SIMULATED else cuda.jit(device=True, inline="always")(_term_source)


SIGNATURE = (
    types.float32[:, ::1],
    types.int32,
    types.int32,
    types.int32,
    types.float32,
    types.int64[:, ::1],
    types.float32[:, ::1],
)
"""The types ``top_n_all_pairs`` launches every specialisation with (the bins are in the kernel's
constants, not its arguments)."""


@cache
def kernel(bins: int) -> Any:
    if bins not in SUPPORTED_BINS:
        raise ValueError(f"the GPU kernel handles {SUPPORTED_BINS} bins, not {bins}")
    return cuda.jit(_source(bins))


def top_n_all_pairs(xt: Any, n: int, metric: int, tiny: float) -> tuple[np.ndarray, np.ndarray]:
    """For every row of ``xt.T`` (``xt`` is bins x N; a CuPy array, or NumPy, copied to the device):
    the ``n`` nearest other rows. Returns (indices, distances) on the host, each N x n, sorted by
    (distance, index); -1 / inf pad rows that have fewer than n others."""
    if not 1 <= n <= MAX_K:
        raise ValueError(f"the GPU kernel keeps between 1 and {MAX_K} neighbours per row, not {n}")
    xp = gpu_arrays()
    bins, rows = xt.shape
    x = xp.ascontiguousarray(xp.asarray(xt, dtype=xp.float32))
    index = xp.full((rows, n), -1, dtype=xp.int64)
    distance = xp.full((rows, n), np.inf, dtype=xp.float32)
    if rows:
        blocks = (rows + THREADS - 1) // THREADS
        kernel(bins)[blocks, THREADS, current_stream()](
            x, np.int32(rows), np.int32(n), np.int32(metric), np.float32(tiny), index, distance
        )
    if not SIMULATED:
        index, distance = index.get(), distance.get()
    return _ranked(index, distance.astype(np.float64), n)


PRODUCT_TILE_BYTES = 1 << 28
"""The most device memory a tile of products takes (256 MiB): ``tile_columns`` candidate rows
against every row."""


def tile_columns(rows: int) -> int:
    """Candidate rows per tile of products, so that a tile (candidates x rows, float32) stays within
    ``PRODUCT_TILE_BYTES``."""
    return max(1, min(rows, PRODUCT_TILE_BYTES // (4 * max(rows, 1))))


def graywave_top_k_of_products(
    products: Any, j0: int, offsets: Any, rows: int, k: int, best_s: Any, best_j: Any
) -> None:
    """One thread per row ``i``: offer the scores ``products[jj, i] - offsets[j0 + jj]`` of row
    ``i`` with the candidates ``j0 + jj`` to row ``i``'s table (``best_s``/``best_j``, its ``k`` best
    so far, larger scores first, ties to the lower index), kept in local memory while the tile
    streams by.
    Consecutive threads read consecutive products: each tile row is read coalesced."""
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if i >= rows:
        return
    table_s = cuda.local.array(MAX_K, dtype=np.float32)
    table_j = cuda.local.array(MAX_K, dtype=np.int64)
    worst = 0
    for t in range(k):
        table_s[t] = best_s[i, t]
        table_j[t] = best_j[i, t]
        if table_s[t] < table_s[worst] or (table_s[t] == table_s[worst] and table_j[t] > table_j[worst]):
            worst = t
    for jj in range(products.shape[0]):
        j = j0 + jj
        s = products[jj, i] - offsets[j]
        if j != i and (s > table_s[worst] or (s == table_s[worst] and j < table_j[worst])):
            table_s[worst] = s
            table_j[worst] = j
            for t in range(k):  # the new worst of the table
                if table_s[t] < table_s[worst] or (table_s[t] == table_s[worst] and table_j[t] > table_j[worst]):
                    worst = t
    for t in range(k):
        best_s[i, t] = table_s[t]
        best_j[i, t] = table_j[t]


PRODUCTS_SIGNATURE = (
    types.float32[:, ::1],
    types.int64,
    types.float32[::1],
    types.int32,
    types.int32,
    types.float32[:, ::1],
    types.int64[:, ::1],
)
"""The types ``top_n_by_inner_product`` launches its selection kernel with."""


@cache
def products_kernel() -> Any:
    return cuda.jit(graywave_top_k_of_products)


def top_n_by_inner_product(features: Any, offsets: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For every row i of ``features`` (N x bins; a CuPy array, or NumPy, copied to the device),
    the ``n`` other rows j nearest by the distance ``offsets[i] + offsets[j] - features[i] .
    features[j]``: (indices, distances) on the host, each N x n, sorted by (distance, index); -1 /
    inf pad rows that have fewer than n others.

    The products come in tiles of ``tile_columns`` candidate rows against all rows (one cuBLAS
    sgemm each, on CuPy's current stream); the selection kernel streams each tile through the
    rows' tables, which stay on the device between tiles. Memory: the tables and one tile."""
    if not 1 <= n <= MAX_K:
        raise ValueError(f"the GPU kernel keeps between 1 and {MAX_K} neighbours per row, not {n}")
    xp = gpu_arrays()
    x = xp.ascontiguousarray(xp.asarray(features, dtype=xp.float32))
    half = xp.ascontiguousarray(xp.asarray(offsets, dtype=xp.float32))
    rows = len(x)
    best_s = xp.full((rows, n), -np.inf, dtype=xp.float32)
    best_j = xp.full((rows, n), rows, dtype=xp.int64)
    step = tile_columns(rows)
    blocks = (rows + THREADS - 1) // THREADS
    for j0 in range(0, rows, step):
        products = xp.ascontiguousarray(x[j0 : j0 + step] @ x.T)
        products_kernel()[blocks, THREADS, current_stream()](
            products, np.int64(j0), half, np.int32(rows), np.int32(n), best_s, best_j
        )
    if not SIMULATED:
        best_s, best_j, half = best_s.get(), best_j.get(), half.get()
    indices = np.where(best_j < rows, best_j, -1)
    distances = np.where(best_j < rows, half[:, None].astype(np.float64) - best_s.astype(np.float64), np.inf)
    return _ranked(indices, distances, n)
