"""Histogram similarity: the distances, one user against all, every user's n nearest, the median.

All functions take normalised histograms (rows of fractions summing to 1, ``normalize``) and use
distances where smaller means closer. The definitions (``pair_distances``) are exact float64
NumPy; ``all_pairs_nearest`` searches candidates in float32 on tiles (matrix-multiply tiles for
the inner-product metrics, BLAS on the CPU and cuBLAS on the GPU; compiled element-wise kernels for
the others: Numba on the CPU, numba-cuda over CuPy arrays on the GPU), then re-scores them with
those exact definitions, so its results are the float64 answer: neighbours sorted by (distance,
index), ties broken by index.

>>> import numpy as np
>>> from graywave.kernels.similarity import all_pairs_nearest, normalize
>>> fractions = normalize(np.array([[8, 0], [6, 2], [0, 8]]))
>>> indices, distances = all_pairs_nearest(fractions, n=1, metric="l1")
>>> indices.ravel().tolist(), distances.ravel().round(2).tolist()
([1, 0, 1], [0.5, 0.5, 1.5])
"""

from __future__ import annotations

from typing import Any, Literal, cast

import numpy as np

from graywave.errors import InvalidInput
from graywave.kernels.device import is_gpu_array

Metric = Literal["design", "l1", "chisquare", "intersection", "hellinger", "correlation"]
METRICS: tuple[str, ...] = ("design", "l1", "chisquare", "intersection", "hellinger", "correlation")
DEFAULT_METRIC: Metric = "design"

DESIGN, L1, CHISQ, MIN = 0, 1, 2, 3
"""The all-pairs kernels' metric codes (the same in ``_similarity_cpu`` and ``_similarity_gpu``)."""
_KERNEL_CODE = {
    "design": DESIGN,
    "l1": L1,
    "intersection": MIN,  # not L1 (L1 / 2 on normalised rows): an all-zero row is at 1 from every row
    "chisquare": CHISQ,
}
INNER_PRODUCT_METRICS = frozenset({"hellinger", "correlation"})
"""The metrics ordered like an inner product of rows after a per-row transform (``_kernel_features``,
``_offsets``): their candidates come from matrix-multiply tiles (``top_n_by_inner_product``), the
others' from the element-wise kernel (``top_n_all_pairs``)."""
EXTRA_CANDIDATES = 6
"""Candidates kept beyond n by the float32 search, re-scored in float64."""
RESCORE_ROWS = 2048


def check_metric(metric: str) -> Metric:
    """``metric`` as a ``Metric``; ``InvalidInput`` naming the metrics when it is not one of them."""
    if metric not in METRICS:
        raise InvalidInput(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    return cast(Metric, metric)


def normalize(counts: Any) -> np.ndarray:
    """Rows of counts -> rows of fractions (float64); an all-zero row stays all zero."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def pair_distances(p: np.ndarray, others: np.ndarray, metric: Metric = DEFAULT_METRIC) -> np.ndarray:
    """Distances from the fractions ``p`` (bins,) to each row of ``others`` (m, bins), in float64.

    - design: sum |p - q| / max(p, q), with 0/0 = 0 (the design document's measure; 0 .. bins)
    - l1: sum |p - q| (0 .. 2)
    - chisquare: 2 sum (p - q)^2 / (p + q), with 0/0 = 0 (OpenCV's HISTCMP_CHISQR_ALT; 0 .. 4)
    - intersection: 1 - sum min(p, q) (OpenCV's HISTCMP_INTERSECT turned into a distance; 0 .. 1)
    - hellinger: sqrt(sum (sqrt p - sqrt q)^2 / 2), which on normalised rows equals
      sqrt(1 - sum sqrt(p q)), OpenCV's HISTCMP_BHATTACHARYYA, without its cancellation near 0 (0 .. 1)
    - correlation: 1 - Pearson r (OpenCV's HISTCMP_CORREL; 0 .. 2). A constant row (on normalised
      rows: the uniform histogram) has r = 1 with another constant row and r = 0 with any other
    """
    check_metric(metric)
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(others, dtype=np.float64)
    if metric in ("design", "chisquare"):
        difference = np.abs(p - q) if metric == "design" else (p - q) ** 2
        scale = np.maximum(p, q) if metric == "design" else p + q
        terms = np.divide(difference, scale, out=np.zeros_like(q), where=scale > 0)
        return terms.sum(axis=-1) * (2.0 if metric == "chisquare" else 1.0)
    if metric == "l1":
        return np.abs(p - q).sum(axis=-1)
    if metric == "intersection":
        return 1.0 - np.minimum(p, q).sum(axis=-1)
    if metric == "hellinger":
        return np.sqrt(0.5 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum(axis=-1))
    zp, zq = _standardised(p), _standardised(q)
    return 1.0 - (zp * zq).sum(axis=-1)


def _standardised(rows: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm, so that a dot product is Pearson's r. A constant row
    becomes the unit vector along (1, ..., 1), which is orthogonal to every centred row: r = 1
    between two constant rows (identical, once normalised), 0 with any other."""
    centred = rows - rows.mean(axis=-1, keepdims=True)
    norms = np.linalg.norm(centred, axis=-1, keepdims=True)
    constant = np.full_like(centred, 1.0 / np.sqrt(rows.shape[-1]))
    return np.where(norms > 0, np.divide(centred, np.where(norms > 0, norms, 1.0)), constant)


def _kernel_features(fractions: np.ndarray, metric: Metric) -> np.ndarray:
    if metric == "hellinger":
        return np.sqrt(fractions)
    if metric == "correlation":
        return _standardised(fractions)
    return fractions


def _offsets(fractions: np.ndarray, metric: Metric) -> np.ndarray:
    """The per-row offsets that make ``offsets[i] + offsets[j] - features[i] . features[j]`` a
    distance of the same order as ``metric`` (``top_n_by_inner_product``). Hellinger: its square,
    ``(sum p + sum q) / 2 - sum sqrt(p q)``, which is ``1 - sum sqrt(p q)`` for two normalised rows
    but not for an all-zero row (a user with no pixels, sqrt(1/2) from every other). Correlation:
    ``1 - r`` on standardised rows (``_standardised``, every row unit length)."""
    if metric == "hellinger":
        return 0.5 * fractions.sum(axis=1)
    return np.full(len(fractions), 0.5)


def _ranked(candidates: np.ndarray, distances: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the n best (distance, index) pairs in order; -1 / inf where there are fewer."""
    order = np.lexsort((np.where(candidates < 0, np.iinfo(np.int64).max, candidates), distances), axis=-1)
    indices = np.take_along_axis(candidates, order, axis=-1)[..., :n]
    ranked = np.take_along_axis(distances, order, axis=-1)[..., :n]
    return indices, ranked


def nearest(fractions: np.ndarray, i: int, n: int, metric: Metric = DEFAULT_METRIC) -> tuple[np.ndarray, np.ndarray]:
    """Row ``i``'s n nearest other rows, computed one against all in float64: (indices, distances)."""
    fractions = np.asarray(fractions, dtype=np.float64)
    distances = pair_distances(fractions[i], fractions, metric)
    distances[i] = np.inf
    candidates = np.arange(len(fractions))
    candidates[i] = -1
    indices, ranked = _ranked(candidates[None], distances[None], n)
    keep = indices[0] >= 0
    return indices[0][keep], ranked[0][keep]


def all_pairs_nearest(fractions: Any, n: int, metric: Metric = DEFAULT_METRIC) -> tuple[np.ndarray, np.ndarray]:
    """Every row's n nearest other rows, exactly, without an N x N matrix: (indices, distances), N x n.

    A CuPy input runs the candidate search on the GPU. Rows with fewer than n others are padded
    with -1 / inf. Memory is O(N * n).
    """
    check_metric(metric)
    if n < 1:
        raise ValueError("n must be at least 1")
    on_gpu = is_gpu_array(fractions)
    host = np.asarray(fractions.get() if on_gpu else fractions, dtype=np.float64)
    total = len(host)
    keep = min(n + EXTRA_CANDIDATES, max(total - 1, 1))
    features = _kernel_features(host, metric)
    # The twins (Numba and BLAS on the CPU, numba-cuda and cuBLAS on the GPU), loaded when first needed.
    if on_gpu:
        from graywave.kernels import _similarity_gpu as kernels
    else:
        from graywave.kernels import _similarity_cpu as kernels  # type: ignore[no-redef]
    if metric in INNER_PRODUCT_METRICS:
        candidates, rough = kernels.top_n_by_inner_product(features, _offsets(host, metric), keep)
    else:
        xt = np.ascontiguousarray(features.T, dtype=np.float32)
        # A NumPy float32 scalar: a Python float would make Numba compile a float64 kernel, several times slower.
        tiny: Any = np.finfo(np.float32).tiny
        candidates, rough = kernels.top_n_all_pairs(xt, keep, _KERNEL_CODE[metric], tiny)
    exact = _rescore(host, candidates, metric)
    indices, distances = _ranked(candidates, exact, n)
    if indices.shape[1] < n:  # fewer other rows than n
        indices, distances = (
            np.pad(indices, ((0, 0), (0, n - indices.shape[1])), constant_values=-1),
            np.pad(distances, ((0, 0), (0, n - distances.shape[1])), constant_values=np.inf),
        )
    for row in _rows_to_verify(candidates, rough, indices, total - 1, host.shape[1]):
        indices[row], distances[row] = _padded(*nearest(host, row, n, metric), n)
    return indices, distances


def _rescore(fractions: np.ndarray, candidates: np.ndarray, metric: Metric) -> np.ndarray:
    """The exact float64 distance of every (row, candidate) pair; inf where there is no candidate."""
    exact = np.full(candidates.shape, np.inf)
    for start in range(0, len(candidates), RESCORE_ROWS):  # in chunks that stay in cache
        chunk = candidates[start : start + RESCORE_ROWS]
        valid = chunk >= 0
        rows, _ = np.nonzero(valid)
        exact[start : start + RESCORE_ROWS][valid] = pair_distances(
            fractions[start + rows], fractions[chunk[valid]], metric
        )
    return exact


def _rows_to_verify(
    candidates: np.ndarray, rough: np.ndarray, chosen: np.ndarray, others: int, bins: int
) -> np.ndarray:
    """Rows whose float32 candidates might have left out a float64 neighbour; they are redone exactly.

    The search keeps, per row, the K candidates with the smallest float32 distances. A row is safe
    when K covers every other row, or when its K-th candidate is farther (in float32) than each
    chosen neighbour by more than twice the float32 error: every row left out is then farther too.
    A float32 sum of ``bins`` terms, in any order (BLAS's included), is within ``bins`` units of
    float32 rounding of the exact sum, relative to the sum of the terms' magnitudes, which is at
    most 1 + the distance for every metric here (at most 1 for the inner products of normalised
    features); the tolerance is twice that, and never below 1e-5.
    """
    if candidates.shape[1] >= others:
        return np.zeros(0, dtype=np.int64)
    is_chosen = (candidates[:, :, None] == chosen[:, None, :]).any(axis=2)
    worst_chosen = np.where(is_chosen, rough, -np.inf).max(axis=1)
    tolerance = max(1e-5, 2 * bins * float(np.finfo(np.float32).eps)) * (1.0 + np.abs(worst_chosen))
    return np.nonzero(rough.max(axis=1) <= worst_chosen + tolerance)[0]


def _padded(indices: np.ndarray, distances: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    padded_i = np.full(n, -1, dtype=np.int64)
    padded_d = np.full(n, np.inf)
    padded_i[: len(indices)] = indices
    padded_d[: len(distances)] = distances
    return padded_i, padded_d


def median_histogram(fractions: Any) -> np.ndarray:
    """The per-bin median across rows (all bins); an even count takes the mean of the two middle values.

    ``np.median``'s result, bit for bit (a property test holds it to that), from one sort: the first
    call of ``np.median`` imports ``numpy.ma``: 10 ms of a query's start-up of about 0.4 s.
    """
    rows = np.sort(np.asarray(fractions, dtype=np.float64), axis=0)
    if len(rows) == 0:
        raise ValueError("the median of no histograms is undefined")
    middle = len(rows) // 2
    if len(rows) % 2:
        return rows[middle].copy()
    return (rows[middle - 1] + rows[middle]) / 2
