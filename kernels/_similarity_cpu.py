"""All-pairs top-n on the CPU, memory bounded: O(N * n) for the tables plus a tile per thread,
never N x N.

One search for every metric, in blocks of ``TILE_ROWS`` rows. A tile holds the scores
of two blocks' rows against each other (larger is nearer), and ``_take_tile`` streams it through
the rows' tables (each row's n best so far) and, off the diagonal, through the columns' tables
too: every metric here is symmetric, so only the tiles on and above the diagonal are computed,
N^2 / 2 pairs in all. The tiles go in rounds (``tile_rounds``) in which no two share a block, and a
round's tiles run in parallel (Numba's ``prange``): the threads never touch the same table, with no
lock, and the result does not depend on which thread ran what. Two kinds of tile:

- ``top_n_by_inner_product`` (the metrics ordered like an inner product after a per-row transform:
  Hellinger, correlation): one BLAS sgemm of the two blocks (Numba's ``np.dot``, through SciPy's
  BLAS, one BLAS thread per tile while the tiles run in parallel);
- ``top_n_all_pairs`` (the other metrics): ``_distance_tile``, a Numba kernel that computes each
  pair element by element (the same float32 sums as the GPU twin's fused kernel), negated.

Metric codes of the element-wise tiles (the public metric names map onto them in ``similarity.py``):
    DESIGN  sum |a - b| / max(a, b), 0/0 = 0
    L1      sum |a - b|
    CHISQ   sum (a - b)^2 / (a + b), 0/0 = 0
    MIN     1 - sum min(a, b)  (intersection)
The 0/0 cases need no branch: both numerators are 0 when the denominator is 0, so dividing by
max(denominator, tiny) gives 0 there and the exact quotient everywhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numba
import numpy as np
from numba import prange
from threadpoolctl import threadpool_limits

from graywave.kernels.similarity import CHISQ, DESIGN, L1  # the metric codes (MIN: the others)


@numba.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _design(a: float, b: float, tiny: float) -> float:
    return abs(a - b) / max(max(a, b), tiny)


@numba.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _l1(a: float, b: float, tiny: float) -> float:
    return abs(a - b)


@numba.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _chisq(a: float, b: float, tiny: float) -> float:
    d = a - b
    return d * d / max(a + b, tiny)


@numba.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _min(a: float, b: float, tiny: float) -> float:
    return min(a, b)


@numba.njit(nogil=True, cache=True, inline="always", error_model="numpy")
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


@numba.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _row_to_tile(xt: np.ndarray, i: int, j0: int, j1: int, metric: int, tiny: float, out: np.ndarray) -> None:
    """out[jj] = distance(row i, row j0 + jj) for j0 <= j < j1."""
    if metric == DESIGN:
        _accumulate(_design, xt, i, j0, j1, tiny, out)
    elif metric == L1:
        _accumulate(_l1, xt, i, j0, j1, tiny, out)
    elif metric == CHISQ:
        _accumulate(_chisq, xt, i, j0, j1, tiny, out)
    else:
        _accumulate(_min, xt, i, j0, j1, tiny, out)
        for jj in range(j1 - j0):
            out[jj] = 1.0 - out[jj]


TILE_ROWS = 512
"""Rows on each side of a tile: a 512 x 512 float32 tile (1 MiB) stays in a core's L2."""


def top_n_all_pairs(xt: np.ndarray, n: int, metric: int, tiny: float) -> tuple[np.ndarray, np.ndarray]:
    """For every row of ``xt.T`` (``xt`` is bins x N, C-contiguous): the ``n`` nearest other rows by
    the metric ``metric`` (a code above), in float32. Returns (indices, distances), each N x n,
    sorted by (distance, index); -1 / inf pad rows that have fewer than n others."""
    tables = _Tables(xt.shape[1], n, np.zeros(xt.shape[1], dtype=np.float32))
    _search_distances(xt, metric, tiny, *tables.arrays, *_rounds(tables.total), TILE_ROWS)
    return tables.sorted()


def top_n_by_inner_product(features: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For every row i of ``features`` (N x bins), the ``n`` other rows j nearest by the distance
    ``offsets[i] + offsets[j] - features[i] . features[j]``: (indices, distances), each N x n,
    sorted by (distance, index); -1 / inf pad rows that have fewer than n others. (Hellinger's
    squared distance is this on square roots, with offsets half the rows' sums; 1 - Pearson's r on
    standardised rows, with offsets of one half.) A tile is one BLAS sgemm of two blocks."""
    # The BLAS that Numba's np.dot calls is SciPy's, loaded by this import: threadpool_limits limits
    # only the libraries loaded when it starts.
    import scipy.linalg.cython_blas  # noqa: F401

    x = np.ascontiguousarray(features, dtype=np.float32)
    tables = _Tables(len(x), n, np.ascontiguousarray(offsets, dtype=np.float32))
    with threadpool_limits(1, user_api="blas"):  # the tiles run in parallel, each on one BLAS thread
        _search_products(x, *tables.arrays, *_rounds(tables.total), TILE_ROWS)
    return tables.sorted()


class _Tables:
    """Every row's table: its n best scores ``tile[i, j] - offsets[j]`` (its own offset, the same
    for all its candidates, left out; larger is nearer) and their candidates, and its floor (the
    table's least score)."""

    def __init__(self, total: int, n: int, offsets: np.ndarray) -> None:
        self.total = total
        self.arrays = (
            offsets,
            np.full((total, n), -np.inf, dtype=np.float32),
            np.full((total, n), total, dtype=np.int64),
            np.full(total, -np.inf, dtype=np.float32),
        )

    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        offsets, best_s, best_j, _ = self.arrays
        return _sorted_tables(best_s, best_j, offsets)


def _rounds(total: int) -> tuple[np.ndarray, np.ndarray]:
    """``tile_rounds`` of ``total`` rows as arrays for the compiled search: the tiles (T x 2), and
    where each round starts among them (rounds + 1)."""
    rounds = list(tile_rounds(-(-total // TILE_ROWS)))
    tiles = np.array([tile for tiles in rounds for tile in tiles], dtype=np.int64).reshape(-1, 2)
    return tiles, np.cumsum([0] + [len(tiles) for tiles in rounds]).astype(np.int64)


@numba.njit(nogil=True, cache=True, parallel=True)
def _search_products(
    x: np.ndarray,
    offsets: np.ndarray,
    best_s: np.ndarray,
    best_j: np.ndarray,
    floor: np.ndarray,
    tiles: np.ndarray,
    starts: np.ndarray,
    size: int,
) -> None:
    """The rounds of tiles, each round's tiles in parallel: a tile is the product of two blocks of
    ``size`` rows of ``x`` (Numba's ``np.dot``: BLAS sgemm), streamed through the tables."""
    total = x.shape[0]
    for r in range(starts.size - 1):
        for t in prange(starts[r], starts[r + 1]):
            a0, b0 = tiles[t, 0] * size, tiles[t, 1] * size
            rows, columns = x[a0 : min(total, a0 + size)], x[b0 : min(total, b0 + size)]
            _take_tile(np.dot(rows, columns.T), a0, b0, offsets, best_s, best_j, floor, a0 == b0)


@numba.njit(nogil=True, cache=True, parallel=True, error_model="numpy")
def _search_distances(
    xt: np.ndarray,
    metric: int,
    tiny: float,
    offsets: np.ndarray,
    best_s: np.ndarray,
    best_j: np.ndarray,
    floor: np.ndarray,
    tiles: np.ndarray,
    starts: np.ndarray,
    size: int,
) -> None:
    """The rounds of tiles, each round's tiles in parallel: a tile is ``_distance_tile`` of two
    blocks of ``size`` rows, streamed through the tables."""
    total = xt.shape[1]
    for r in range(starts.size - 1):
        for t in prange(starts[r], starts[r + 1]):
            a0, b0 = tiles[t, 0] * size, tiles[t, 1] * size
            out = np.empty((min(total, a0 + size) - a0, min(total, b0 + size) - b0), dtype=np.float32)
            _distance_tile(xt, a0, b0, metric, tiny, out)
            _take_tile(out, a0, b0, offsets, best_s, best_j, floor, a0 == b0)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _distance_tile(xt: np.ndarray, i0: int, j0: int, metric: int, tiny: float, out: np.ndarray) -> None:
    """out[r, c] = -distance(row i0 + r, row j0 + c), in float32.

    Compiled with NumPy's error model, as are the functions it inlines: with Python's (Numba's
    default outside parallel code) every division checks for a zero divisor to raise
    ``ZeroDivisionError``, which kept LLVM from vectorising the design and chi-square quotients
    (4.6 times slower; the divisors are never zero here, see ``tiny``)."""
    for r in range(out.shape[0]):
        row = out[r]
        _row_to_tile(xt, i0 + r, j0, j0 + out.shape[1], metric, tiny, row)
        for c in range(row.size):
            row[c] = -row[c]


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
    """Put (s, j) in row i's table if it ranks before the table's worst; return the table's new
    least score (its floor).

    The table is a binary heap whose root is its worst entry (the smallest score, and of equal
    scores the largest index): a rejection is one comparison, an entry log2(n) steps down the heap.
    Unused entries are (-inf, N), worse than any candidate."""
    if s < best_s[i, 0] or (s == best_s[i, 0] and j > best_j[i, 0]):
        return best_s[i, 0]
    size = best_s.shape[1]
    parent = 0
    while True:
        child = 2 * parent + 1
        if child >= size:
            break
        right = child + 1
        if right < size and (
            best_s[i, right] < best_s[i, child]
            or (best_s[i, right] == best_s[i, child] and best_j[i, right] > best_j[i, child])
        ):
            child = right
        if not (best_s[i, child] < s or (best_s[i, child] == s and best_j[i, child] > j)):
            break
        best_s[i, parent] = best_s[i, child]
        best_j[i, parent] = best_j[i, child]
        parent = child
    best_s[i, parent] = s
    best_j[i, parent] = j
    return best_s[i, 0]


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
    ``tile[r, c] - offsets[i0 + r]``)."""
    columns = tile.shape[1]
    mask = np.zeros(-(-columns // 8) * 8, dtype=np.uint8)
    others = offsets[j0 : j0 + columns]
    floors = floor[j0 : j0 + columns]
    for r in range(tile.shape[0]):
        i = i0 + r
        floor[i] = _to_row(tile[r], others, floor[i], i, j0, mask, best_s, best_j)
        if not diagonal:
            _to_columns(tile[r], offsets[i], floors, i, j0, mask, best_s, best_j)


@numba.njit(nogil=True, cache=True, inline="always")
def _to_row(
    products: np.ndarray,
    others: np.ndarray,
    w: float,
    i: int,
    j0: int,
    mask: np.ndarray,
    best_s: np.ndarray,
    best_j: np.ndarray,
) -> float:
    """Offer ``products[c] - others[c]`` (candidate ``j0 + c``) to row i's table, whose floor is
    ``w``; return the new floor.

    Vectorised passes first: one that only says whether any score reaches the floor (for most tile
    rows, once the tables have filled, none does), then, where one does, one that marks them in a
    byte mask, read eight bytes at a time; only the marked scores reach the scalar
    ``_offer_product``."""
    columns = products.size
    hit = False
    for c in range(columns):
        hit |= products[c] - others[c] >= w
    if not hit:
        return w
    for c in range(columns):
        mask[c] = products[c] - others[c] >= w
    words = mask.view(np.uint64)
    for q in range(words.size):
        if words[q]:
            for c in range(8 * q, min(columns, 8 * q + 8)):
                if products[c] - others[c] >= w and j0 + c != i:
                    w = _offer_product(best_s, best_j, i, products[c] - others[c], j0 + c)
    return w


@numba.njit(nogil=True, cache=True, inline="always")
def _to_columns(
    products: np.ndarray,
    own: float,
    floors: np.ndarray,
    i: int,
    j0: int,
    mask: np.ndarray,
    best_s: np.ndarray,
    best_j: np.ndarray,
) -> None:
    """Offer ``products[c] - own`` (candidate i) to the table of each row ``j0 + c``, whose floor
    is ``floors[c]``; the same passes as ``_to_row``."""
    columns = products.size
    hit = False
    for c in range(columns):
        hit |= products[c] - own >= floors[c]
    if not hit:
        return
    for c in range(columns):
        mask[c] = products[c] - own >= floors[c]
    words = mask.view(np.uint64)
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
