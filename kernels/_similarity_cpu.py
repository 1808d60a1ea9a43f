"""All-pairs top-n on the CPU, memory bounded: O(N * n) for the results plus a tile per thread,
never N x N. Two searches:

- ``top_n_by_inner_product`` (the metrics that are an inner product after a per-row transform:
  Hellinger, correlation): tiles of a matrix multiply (NumPy's BLAS sgemm), each tile streamed
  through a top-n selection. The similarity is symmetric, so only the tiles on and above the
  diagonal are multiplied, and each feeds both its rows' and its columns' tables.
- ``top_n_all_pairs`` (every metric): a tiled Numba kernel that computes each pair element by
  element, parallel over row blocks.

Metric codes (the public metric names map onto them in ``similarity.py``):
    DESIGN  sum |a - b| / max(a, b), 0/0 = 0
    L1      sum |a - b|
    CHISQ   sum (a - b)^2 / (a + b), 0/0 = 0
    DOT     1 - sum a * b      (Hellinger on square roots, correlation on standardised rows)
The 0/0 cases need no branch: both numerators are 0 when the denominator is 0, so dividing by
max(denominator, tiny) gives 0 there and the exact quotient everywhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import prange
from threadpoolctl import threadpool_limits

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


TILE_ROWS = 512
"""Rows on each side of an inner-product tile: a 512 x 512 float32 tile (1 MiB) stays in a core's L2."""


def top_n_by_inner_product(features: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For every row i of ``features`` (N x bins), the ``n`` other rows j nearest by the distance
    ``offsets[i] + offsets[j] - features[i] . features[j]``: (indices, distances), each N x n,
    sorted by (distance, index); -1 / inf pad rows that have fewer than n others. (Hellinger's
    squared distance is this on square roots, with offsets half the rows' sums; 1 - Pearson's r on
    standardised rows, with offsets of one half.)

    The rows go in blocks of ``TILE_ROWS``. A tile is the float32 product of two blocks (one BLAS
    sgemm); ``_take_tile`` streams it through the rows' tables (the n best so far) and, off the
    diagonal, through the columns' tables too, since the product is symmetric: N^2 / 2 products in
    all. The tiles go in rounds (``tile_rounds``) in which no two share a block, so the threads that
    run a round's tiles never touch the same table: no lock, and the result does not depend on
    which thread ran what. BLAS runs one thread per tile; the tiles of a round run in parallel.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    half = np.ascontiguousarray(offsets, dtype=np.float32)
    total = len(x)
    # Row i's table holds its n best scores ``product - offsets[j]`` (its own offset, the same for
    # all its candidates, left out), so larger is nearer.
    best_s = np.full((total, n), -np.inf, dtype=np.float32)
    best_j = np.full((total, n), total, dtype=np.int64)
    floor = np.full(total, -np.inf, dtype=np.float32)  # per row: the table's least score

    def run(tiles: list[tuple[int, int]]) -> None:
        for a, b in tiles:
            a0, b0 = a * TILE_ROWS, b * TILE_ROWS
            rows, columns = x[a0 : a0 + TILE_ROWS], x[b0 : b0 + TILE_ROWS]
            _take_tile(rows @ columns.T, a0, b0, half, best_s, best_j, floor, a == b)

    threads = numba.get_num_threads()
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
        for tiles in tile_rounds(-(-total // TILE_ROWS)):
            # A round's tiles in one task per thread; the round ends before the next one starts.
            list(pool.map(run, [tiles[t::threads] for t in range(threads)]))
    return _sorted_tables(best_s, best_j, half)


def tile_rounds(blocks: int) -> Iterator[list[tuple[int, int]]]:
    """The tiles (a, b), a <= b, of ``blocks`` blocks in rounds where no two tiles share a block:
    the diagonal first, then the circle method's round-robin over the pairs (each once)."""
    yield [(b, b) for b in range(blocks)]
    seats = blocks + blocks % 2  # an odd count gets a bye: pairs with the extra seat are skipped
    for turn in range(seats - 1):
        ring = seats - 1  # every seat but the last turns; the last stays and meets seat ``turn``
        pairs = [(ring, turn)] + [((turn + k) % ring, (turn - k) % ring) for k in range(1, seats // 2)]
        tiles = [(min(a, b), max(a, b)) for a, b in pairs if a < blocks and b < blocks]
        if tiles:
            yield tiles


@numba.njit(nogil=True, cache=True, inline="always")
def _offer_product(best_s: np.ndarray, best_j: np.ndarray, i: int, s: float, j: int) -> float:
    """Put (s, j) in row i's table if it ranks before the table's worst (a smaller product, or the
    same product and a larger index); return the table's new least product."""
    w = 0
    for t in range(1, best_s.shape[1]):
        if best_s[i, t] < best_s[i, w] or (best_s[i, t] == best_s[i, w] and best_j[i, t] > best_j[i, w]):
            w = t
    if s < best_s[i, w] or (s == best_s[i, w] and j > best_j[i, w]):
        return best_s[i, w]
    best_s[i, w] = s
    best_j[i, w] = j
    least = best_s[i, 0]
    for t in range(1, best_s.shape[1]):
        least = min(least, best_s[i, t])
    return least


@numba.njit(nogil=True, cache=True)
def _take_tile(
    tile: np.ndarray,
    i0: int,
    j0: int,
    offsets: np.ndarray,
    best_s: np.ndarray,
    best_j: np.ndarray,
    floor: np.ndarray,
    diagonal: bool,
) -> None:
    """Offer the products ``tile[r, c]`` of rows ``i0 + r`` and ``j0 + c`` to row ``i0 + r``'s table
    (as ``tile[r, c] - offsets[j0 + c]``) and, off the diagonal, to row ``j0 + c``'s (as
    ``tile[r, c] - offsets[i0 + r]``).

    Each tile row is compared with the floors in vectorised passes: one that only says whether any
    product reaches a floor (most rows, once the tables have filled, have none), then, where one
    does, one that marks them in a byte mask, read eight bytes at a time; only the marked products
    reach the scalar ``_offer_product``."""
    rows, columns = tile.shape
    mask = np.zeros(-(-columns // 8) * 8, dtype=np.uint8)
    words = mask.view(np.uint64)
    for r in range(rows):
        i = i0 + r
        products = tile[r]
        others = offsets[j0 : j0 + columns]
        w = floor[i]
        hit = False
        for c in range(columns):
            hit |= products[c] - others[c] >= w
        if hit:
            for c in range(columns):
                mask[c] = products[c] - others[c] >= w
            for q in range(words.size):
                if words[q]:
                    for c in range(8 * q, min(columns, 8 * q + 8)):
                        if products[c] - others[c] >= w and j0 + c != i:
                            w = _offer_product(best_s, best_j, i, products[c] - others[c], j0 + c)
            floor[i] = w
        if diagonal:
            continue
        own = offsets[i]
        floors = floor[j0 : j0 + columns]
        hit = False
        for c in range(columns):
            hit |= products[c] - own >= floors[c]
        if hit:
            for c in range(columns):
                mask[c] = products[c] - own >= floors[c]
            for q in range(words.size):
                if words[q]:
                    for c in range(8 * q, min(columns, 8 * q + 8)):
                        if products[c] - own >= floors[c]:
                            floors[c] = _offer_product(best_s, best_j, j0 + c, products[c] - own, i)


@numba.njit(nogil=True, cache=True, parallel=True)
def _sorted_tables(best_s: np.ndarray, best_j: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tables as (indices, distances ``offsets[i] - score``), each row sorted by (distance,
    index); -1 / inf where a table has no candidate."""
    total, n = best_s.shape
    indices = np.full((total, n), -1, dtype=np.int64)
    distances = np.full((total, n), np.inf, dtype=np.float64)
    for i in prange(total):
        order = np.argsort(best_j[i], kind="mergesort")
        order = order[np.argsort(-best_s[i][order], kind="mergesort")]
        for rank in range(n):
            j = best_j[i, order[rank]]
            if j < total:
                indices[i, rank] = j
                distances[i, rank] = np.float64(offsets[i]) - np.float64(best_s[i, order[rank]])
    return indices, distances
