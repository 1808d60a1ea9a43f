"""The all-pairs benchmark (``make bench``): every user's 10 nearest users among 100,000 (16 bins).

In one run, on the same synthetic day (Dirichlet-like normalised histograms, seeded):

  graywave      ``all_pairs_nearest``: the candidate search (BLAS sgemm tiles with a streaming top-n
                for Hellinger and correlation, the tiled float32 Numba kernel for the others), then
                the float64 re-scoring, all cores
  FAISS         the exact brute-force index (``IndexFlat``, all cores) where it has the metric or
                an inner product of the same order (Hellinger: inner product on square roots;
                correlation: inner product on standardised rows; L1: ``METRIC_L1``, timed on
                ``FAISS_L1_SAMPLE`` queries and scaled: its L1 scan is slow)
  tiled NumPy   the straightforward float64 implementation: a block of rows against all rows by
                broadcasting, then ``argpartition`` (timed on a sample of rows, scaled to all rows)
  scikit-learn  ``NearestNeighbors(algorithm="brute")`` where it has the metric (L1 as manhattan;
                Hellinger as euclidean on square roots), timed on the same sample and scaled

and checks that graywave's neighbours are identical to a float64 one-against-all reference on a
sample of rows. Also: the median of the 100,000 histograms.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from graywave.kernels.similarity import (
    _standardised,
    all_pairs_nearest,
    median_histogram,
    nearest,
    normalize,
    pair_distances,
)

USERS = 100_000
BINS = 16
TOP = 10
SAMPLE = 500
FAISS_L1_SAMPLE = 5_000
OUT = Path(__file__).with_name("out")


def synthetic_day(users: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return normalize(rng.gamma(0.5, 1.0, (users, BINS)))


def tiled_numpy(fractions: np.ndarray, rows: np.ndarray, metric: str, block: int = 64) -> np.ndarray:
    """The baseline: float64 broadcasting per block of query rows, ``argpartition`` for the top n."""
    result = np.empty((len(rows), TOP), dtype=np.int64)
    for start in range(0, len(rows), block):
        chunk = rows[start : start + block]
        distances = np.stack([pair_distances(fractions[i], fractions, metric) for i in chunk])
        distances[np.arange(len(chunk)), chunk] = np.inf
        part = np.argpartition(distances, TOP, axis=1)[:, :TOP]
        order = np.argsort(np.take_along_axis(distances, part, axis=1), axis=1, kind="stable")
        result[start : start + block] = np.take_along_axis(part, order, axis=1)
    return result


def sklearn_brute(fractions: np.ndarray, rows: np.ndarray, metric: str) -> float | None:
    """Seconds for scikit-learn's brute force on ``rows`` (None where it has no such metric)."""
    from sklearn.neighbors import NearestNeighbors

    if metric == "l1":
        data, name = fractions, "manhattan"
    elif metric == "hellinger":
        data, name = np.sqrt(fractions), "euclidean"
    else:
        return None
    model = NearestNeighbors(n_neighbors=TOP + 1, algorithm="brute", metric=name).fit(data)
    start = time.perf_counter()
    model.kneighbors(data[rows])
    return time.perf_counter() - start


def faiss_exact(fractions: np.ndarray, metric: str) -> float | None:
    """Seconds for FAISS's exact index to find every row's TOP nearest (itself included, so TOP + 1),
    on all cores; None where it has neither the metric nor an inner product of the same order."""
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    if metric == "hellinger":
        data, index = np.sqrt(fractions), faiss.IndexFlatIP(BINS)
    elif metric == "correlation":
        data, index = _standardised(fractions), faiss.IndexFlatIP(BINS)
    elif metric == "l1":
        data, index = fractions, faiss.IndexFlat(BINS, faiss.METRIC_L1)
    else:
        return None
    data = np.ascontiguousarray(data, dtype=np.float32)
    index.add(data)
    queries = data if metric != "l1" else data[:FAISS_L1_SAMPLE]
    start = time.perf_counter()
    index.search(queries, TOP + 1)
    return (time.perf_counter() - start) * len(data) / len(queries)


def identical_to_reference(
    fractions: np.ndarray, indices: np.ndarray, distances: np.ndarray, rows: np.ndarray, metric: str
) -> bool:
    for i in rows:
        expected_i, expected_d = nearest(fractions, int(i), TOP, metric)
        if not (np.array_equal(indices[i], expected_i) and np.array_equal(distances[i], expected_d)):
            return False
    return True


def cell(seconds: float | None) -> str:
    return f"{seconds:.1f} s" if seconds is not None else "no such metric"


def ratio(baseline: float | None, ours: float) -> str:
    """How many times faster graywave is than the baseline (above 1: ahead)."""
    return f"**{baseline / ours:.2f}x**" if baseline is not None else "-"


def main() -> None:
    fractions = synthetic_day(USERS)
    rows = np.random.default_rng(1).choice(USERS, SAMPLE, replace=False)
    all_pairs_nearest(fractions[:2000], TOP, "l1")  # load the compiled kernel
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
        f"{USERS:,} users x {BINS} bins, top-{TOP}. FAISS: IndexFlat on all rows (L1: {FAISS_L1_SAMPLE:,} queries, "
        f"scaled); NumPy and scikit-learn: {SAMPLE} rows, scaled x{USERS // SAMPLE}.",
        "",
        "| metric | graywave (all rows) | FAISS IndexFlat | graywave vs FAISS | scikit-learn brute | graywave vs scikit-learn | tiled NumPy float64 | graywave vs NumPy | identical to float64 reference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for metric in ("design", "l1", "chisquare", "intersection", "hellinger", "correlation"):
        start = time.perf_counter()
        indices, distances = all_pairs_nearest(fractions, TOP, metric)
        ours = time.perf_counter() - start
        faiss_s = faiss_exact(fractions, metric)
        start = time.perf_counter()
        baseline = tiled_numpy(fractions, rows, metric)
        numpy_s = (time.perf_counter() - start) * USERS / SAMPLE
        del baseline
        sklearn_s = sklearn_brute(fractions, rows, metric)
        sklearn_s = sklearn_s * USERS / SAMPLE if sklearn_s is not None else None
        same = identical_to_reference(fractions, indices, distances, rows[:100], metric)
        lines.append(
            f"| {metric} | **{ours:.1f} s** | {cell(faiss_s)} | {ratio(faiss_s, ours)} | {cell(sklearn_s)} | "
            f"{ratio(sklearn_s, ours)} | {numpy_s:.0f} s | {numpy_s / ours:.0f}x | {'yes' if same else 'NO'} (100 rows) |"
        )
        print(lines[-1], flush=True)
    start = time.perf_counter()
    median_histogram(fractions)
    lines += ["", f"Median histogram of {USERS:,} users: {(time.perf_counter() - start) * 1000:.0f} ms."]
    OUT.mkdir(exist_ok=True)
    (OUT / "similarity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
