"""The all-pairs benchmark (``make bench``): every user's 10 nearest users among 100,000 (16 bins).

In one run, on the same synthetic day (Dirichlet-like normalised histograms, seeded):

  graywave      ``all_pairs_nearest``: tiled float32 Numba kernel + float64 re-scoring, all cores
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

from graywave.kernels.similarity import all_pairs_nearest, median_histogram, nearest, normalize, pair_distances

USERS = 100_000
BINS = 16
TOP = 10
SAMPLE = 500
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


def identical_to_reference(
    fractions: np.ndarray, indices: np.ndarray, distances: np.ndarray, rows: np.ndarray, metric: str
) -> bool:
    for i in rows:
        expected_i, expected_d = nearest(fractions, int(i), TOP, metric)
        if not (np.array_equal(indices[i], expected_i) and np.array_equal(distances[i], expected_d)):
            return False
    return True


def main() -> None:
    fractions = synthetic_day(USERS)
    rows = np.random.default_rng(1).choice(USERS, SAMPLE, replace=False)
    all_pairs_nearest(fractions[:2000], TOP, "l1")  # load the compiled kernel
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
        f"{USERS:,} users x {BINS} bins, top-{TOP}; baselines timed on {SAMPLE} rows and scaled x{USERS // SAMPLE}.",
        "",
        "| metric | graywave (all rows) | tiled NumPy float64 (scaled) | scikit-learn brute (scaled) | speed-up vs NumPy | identical to float64 reference |",
        "|---|---|---|---|---|---|",
    ]
    for metric in ("design", "l1", "chisquare", "intersection", "hellinger", "correlation"):
        start = time.perf_counter()
        indices, distances = all_pairs_nearest(fractions, TOP, metric)
        ours = time.perf_counter() - start
        start = time.perf_counter()
        baseline = tiled_numpy(fractions, rows, metric)
        numpy_s = (time.perf_counter() - start) * USERS / SAMPLE
        del baseline
        sklearn_s = sklearn_brute(fractions, rows, metric)
        sklearn_cell = f"{sklearn_s * USERS / SAMPLE:.0f} s" if sklearn_s is not None else "no such metric"
        same = identical_to_reference(fractions, indices, distances, rows[:100], metric)
        lines.append(
            f"| {metric} | **{ours:.1f} s** | {numpy_s:.0f} s | {sklearn_cell} | {numpy_s / ours:.0f}x | {'yes' if same else 'NO'} (100 rows) |"
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
