"""The all-pairs search on symmetric tiles (matrix-multiply tiles for the inner-product metrics,
element-wise tiles for the others) held to the float64 one-against-all reference through
``all_pairs_nearest``: random and adversarial histograms (ties, zeros, duplicates, one-hot rows,
the uniform row), row counts from 1 to a few thousand, n from 1 to 100. Small tiles make a few
hundred rows span many tiles and rounds."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graywave.kernels import _similarity_cpu
from graywave.kernels.similarity import METRICS, all_pairs_nearest, nearest, normalize


def reference(fractions: np.ndarray, n: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Every row's n nearest in float64, one against all (ties by index), padded with -1 / inf."""
    indices = np.full((len(fractions), n), -1)
    distances = np.full((len(fractions), n), np.inf)
    for i in range(len(fractions)):
        found, found_d = nearest(fractions, i, n, metric)
        indices[i, : len(found)], distances[i, : len(found)] = found, found_d
    return indices, distances


def adversarial(rng: np.random.Generator, count: int, bins: int = 16) -> np.ndarray:
    """Counts with every kind of row the analytics can meet, mixed at random: sparse rows, one-hot
    rows, duplicates of other rows, the uniform row, all-zero rows (a user with no pixels)."""
    counts = rng.integers(0, 30, (count, bins)) * (rng.random((count, bins)) < 0.5)
    kind = rng.integers(0, 6, count)
    counts[kind == 1] = np.eye(bins, dtype=counts.dtype)[rng.integers(0, bins, (kind == 1).sum())] * 7
    if count > 1:
        counts[kind == 2] = counts[rng.integers(0, count, (kind == 2).sum())]  # duplicates: exact ties
    counts[kind == 3] = 5  # uniform
    counts[kind == 4] = 0
    return normalize(counts)


def assert_exact(fractions: np.ndarray, n: int, metric: str) -> None:
    indices, distances = all_pairs_nearest(fractions, n, metric)
    expected_i, expected_d = reference(fractions, n, metric)
    assert np.array_equal(indices, expected_i), metric
    assert np.array_equal(distances, expected_d), metric


@settings(max_examples=90, deadline=None)
@given(
    count=st.integers(1, 300),
    n=st.integers(1, 100),
    seed=st.integers(0, 2**32 - 1),
    metric=st.sampled_from(METRICS),
    tile=st.sampled_from([1, 7, 32, 512]),
)
def test_random_and_adversarial_days_give_the_float64_answer(count, n, seed, metric, tile):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_similarity_cpu, "TILE_ROWS", tile)
        assert_exact(adversarial(np.random.default_rng(seed), count), n, metric)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("count", "n"), [(511, 10), (513, 1), (1025, 100), (2100, 10)])
def test_days_across_tile_edges_give_the_float64_answer(metric, count, n):
    """The real tile size: one row short of a tile, one over, a round-robin of several blocks."""
    rng = np.random.default_rng(count)
    fractions = normalize(rng.gamma(0.5, 1.0, (count, 16)))
    fractions[rng.integers(0, count, 20)] = fractions[0]  # ties across tiles
    assert_exact(fractions, n, metric)


def test_a_day_of_identical_users_ranks_every_tie_by_index(monkeypatch):
    monkeypatch.setattr(_similarity_cpu, "TILE_ROWS", 8)
    fractions = normalize(np.ones((40, 16)))
    for metric in METRICS:
        indices, distances = all_pairs_nearest(fractions, 5, metric)  # every pair ties
        assert indices[0].tolist() == [1, 2, 3, 4, 5] and indices[39].tolist() == [0, 1, 2, 3, 4]
        assert (distances == 0).all()


@pytest.mark.parametrize("blocks", [0, 1, 2, 3, 4, 7, 8, 31])
def test_the_tile_rounds_cover_every_pair_once_and_no_round_shares_a_block(blocks):
    rounds = list(_similarity_cpu.tile_rounds(blocks))
    tiles = [tile for tiles in rounds for tile in tiles]
    assert sorted(tiles) == [(a, b) for a, b in itertools.combinations_with_replacement(range(blocks), 2)]
    for tiles in rounds:
        touched = [block for a, b in tiles for block in {a, b}]
        assert len(touched) == len(set(touched))


def test_the_search_keeps_the_n_largest_products_of_each_row(monkeypatch):
    """The candidate search itself, on products that float32 holds exactly (multiples of 1/8):
    each row's table is the n largest products of the others, ties to the lower index."""
    monkeypatch.setattr(_similarity_cpu, "TILE_ROWS", 16)
    rng = np.random.default_rng(5)
    features = rng.integers(0, 9, (100, 16)) / 8
    features[10:20] = features[3]
    indices, distances = _similarity_cpu.top_n_by_inner_product(features, np.full(len(features), 0.5), 12)
    products = features @ features.T
    for i in range(len(features)):
        others = [j for j in range(len(features)) if j != i]
        expected = sorted(others, key=lambda j: (-products[i, j], j))[:12]
        assert indices[i].tolist() == expected
        assert distances[i].tolist() == [1 - products[i, j] for j in expected]


BLAS_LIMIT_PROBE = """
import numpy as np
from threadpoolctl import threadpool_info
from graywave.kernels import _similarity_cpu

seen = []
_similarity_cpu._search_products = lambda *args: seen.extend(
    (info["filepath"], info["num_threads"]) for info in threadpool_info() if info["user_api"] == "blas"
)
_similarity_cpu.top_n_by_inner_product(np.eye(4), np.zeros(4), 2)
assert any("scipy_openblas-" in path for path, _ in seen), seen  # SciPy's, which Numba's np.dot calls
assert all(threads == 1 for _, threads in seen), seen
"""


def test_every_blas_runs_one_thread_per_tile_from_the_first_search_of_a_process():
    """The tiles run in parallel, one BLAS thread each; SciPy's BLAS (Numba's np.dot) is loaded
    lazily, and a limit set before it was loaded did not apply to it (a fresh process)."""
    probe = subprocess.run([sys.executable, "-c", BLAS_LIMIT_PROBE], capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr


def test_intersection_puts_an_all_zero_row_at_1_from_every_row():
    """Intersection is L1 / 2 on normalised rows only: an all-zero row (a user with no pixels) is at
    1 - 0 = 1 from every row, another all-zero row included, where L1 / 2 puts it at 1/2 and 0. Its
    candidates once came from the L1 kernel, whose order then misled the check for rows too close to
    call (Hypothesis found it; this day, with n = 95 of 117 others, failed)."""
    fractions = adversarial(np.random.default_rng(1), 118)
    assert (fractions.sum(axis=1) == 0).any()
    assert_exact(fractions, 95, "intersection")
    zero = int(np.nonzero(fractions.sum(axis=1) == 0)[0][0])
    _, distances = all_pairs_nearest(fractions, 117, "intersection")
    assert distances[zero].tolist() == [1.0] * 117
