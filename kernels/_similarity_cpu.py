"""All-pairs top-n on the CPU: a tiled Numba kernel, parallel over row blocks, memory bounded.

Memory is O(N * n) for the results plus a tile per thread, never N x N.

Metric codes (the public metric names map onto them in ``similarity.py``):
    DESIGN  sum |a - b| / max(a, b), 0/0 = 0
    L1      sum |a - b|
    CHISQ   sum (a - b)^2 / (a + b), 0/0 = 0
    DOT     1 - sum a * b      (Hellinger on square roots, correlation on standardised rows)
The 0/0 cases need no branch: both numerators are 0 when the denominator is 0, so dividing by
max(denominator, tiny) gives 0 there and the exact quotient everywhere else.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
from numba import prange

from graywave.kernels.similarity import CHISQ, DESIGN, L1  # the metric codes (DOT: the others)

TILE = 512
BLOCK = 64
CHUNK = 32


@numba.njit(nogil=True, cache=True, inline="always")
def _design(a: float, b: float, tiny: float) -> float:
    return abs(a - b) / max(max(a, b), tiny)


@numba.njit(nogil=True, cache=True, inline="always")
def _l1(a: float, b: float, tiny: float) -> float:
    return abs(a - b)


@numba.njit(nogil=True, cache=True, inline="always")
def _chisq(a: float, b: float, tiny: float) -> float:
    d = a - b
    return d * d / max(a + b, tiny)


@numba.njit(nogil=True, cache=True, inline="always")
def _product(a: float, b: float, tiny: float) -> float:
    return a * b


@numba.njit(nogil=True, cache=True, inline="always")
def _accumulate(
    term: Callable[[float, float, float], float], xt: np.ndarray, i: int, j0: int, j1: int, tiny: float, out: np.ndarray
) -> None:
    """out[jj] = sum over bins of term(x[i], x[j0 + jj]); four bins a pass, vectorised along j."""
    m = j1 - j0
    for jj in range(m):
        out[jj] = 0.0
    bins = xt.shape[0]
    k = 0
    while k + 4 <= bins:
        a0, a1, a2, a3 = xt[k, i], xt[k + 1, i], xt[k + 2, i], xt[k + 3, i]
        r0, r1, r2, r3 = xt[k, j0:j1], xt[k + 1, j0:j1], xt[k + 2, j0:j1], xt[k + 3, j0:j1]
        for jj in range(m):
            out[jj] += (term(a0, r0[jj], tiny) + term(a1, r1[jj], tiny)) + (
                term(a2, r2[jj], tiny) + term(a3, r3[jj], tiny)
            )
        k += 4
    while k < bins:
        a, row = xt[k, i], xt[k, j0:j1]
        for jj in range(m):
            out[jj] += term(a, row[jj], tiny)
        k += 1


@numba.njit(nogil=True, cache=True, inline="always")
def _row_to_tile(xt: np.ndarray, i: int, j0: int, j1: int, metric: int, tiny: float, out: np.ndarray) -> None:
    """out[jj] = distance(row i, row j0 + jj) for j0 <= j < j1."""
    if metric == DESIGN:
        _accumulate(_design, xt, i, j0, j1, tiny, out)
    elif metric == L1:
        _accumulate(_l1, xt, i, j0, j1, tiny, out)
    elif metric == CHISQ:
        _accumulate(_chisq, xt, i, j0, j1, tiny, out)
    else:
        _accumulate(_product, xt, i, j0, j1, tiny, out)
        for jj in range(j1 - j0):
            out[jj] = 1.0 - out[jj]


@numba.njit(nogil=True, cache=True, inline="always")
def _worse(d1: float, j1: int, d2: float, j2: int) -> bool:
    """(d1, j1) ranks after (d2, j2): larger distance, or the same distance and a larger index."""
    return d1 > d2 or (d1 == d2 and j1 > j2)


@numba.njit(nogil=True, cache=True)
def _offer(best_d: np.ndarray, best_j: np.ndarray, d: float, j: int) -> float:
    """Put (d, j) in the table if it ranks before the table's worst; return the new worst distance."""
    w = 0
    for s in range(1, best_d.size):
        if _worse(best_d[s], best_j[s], best_d[w], best_j[w]):
            w = s
    if _worse(d, j, best_d[w], best_j[w]):
        return best_d[w]
    best_d[w] = d
    best_j[w] = j
    worst = best_d[0]
    for s in range(1, best_d.size):
        worst = max(worst, best_d[s])
    return worst


@numba.njit(nogil=True, cache=True, fastmath={"nnan", "nsz", "reassoc"})
def _minimum(values: np.ndarray, m: int) -> float:
    """min(values[:m]), vectorised (the values are never NaN)."""
    lowest = np.inf
    for k in range(m):
        lowest = min(lowest, values[k])
    return lowest


@numba.njit(nogil=True, cache=True, parallel=True)
def top_n_all_pairs(xt: np.ndarray, n: int, metric: int, tiny: float) -> tuple[np.ndarray, np.ndarray]:
    """For every row of ``xt.T`` (``xt`` is bins x N, C-contiguous): the ``n`` nearest other rows.

    Rows go in blocks of ``BLOCK``, one block per task; each block sweeps all rows tile by tile
    (a tile stays in cache while the block uses it), keeping a top-n table per row. Chunks of a
    tile that cannot beat a row's current n-th distance are skipped after one vectorised minimum.
    Returns (indices, distances), each N x n, sorted by (distance, index); -1 / inf pad rows that
    have fewer than n others.
    """
    total = xt.shape[1]
    indices = np.full((total, n), -1, dtype=np.int64)
    distances = np.full((total, n), np.inf, dtype=np.float64)
    blocks = (total + BLOCK - 1) // BLOCK
    for block in prange(blocks):
        i0, i1 = block * BLOCK, min(total, (block + 1) * BLOCK)
        out = np.empty(TILE, dtype=xt.dtype)
        best_d = np.full((i1 - i0, n), np.inf, dtype=xt.dtype)
        best_j = np.full((i1 - i0, n), total, dtype=np.int64)
        worst = np.full(i1 - i0, np.inf, dtype=xt.dtype)
        for j0 in range(0, total, TILE):
            j1 = min(total, j0 + TILE)
            for i in range(i0, i1):
                _row_to_tile(xt, i, j0, j1, metric, tiny, out)
                r = i - i0
                w = worst[r]
                for c0 in range(0, j1 - j0, CHUNK):
                    c1 = min(j1 - j0, c0 + CHUNK)
                    if _minimum(out[c0:c1], c1 - c0) > w:
                        continue
                    for jj in range(c0, c1):
                        if out[jj] <= w and j0 + jj != i:
                            w = _offer(best_d[r], best_j[r], out[jj], j0 + jj)
                worst[r] = w
        for r in range(i1 - i0):
            order = np.argsort(best_j[r], kind="mergesort")
            order = order[np.argsort(best_d[r][order], kind="mergesort")]
            for rank in range(n):
                j = best_j[r, order[rank]]
                if j < total:
                    indices[i0 + r, rank] = j
                    distances[i0 + r, rank] = best_d[r, order[rank]]
    return indices, distances
