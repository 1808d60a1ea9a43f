"""Similarity and median against brute-force references written straight from the definitions."""

import math

import numpy as np
import pytest

from graywave.kernels.similarity import (
    METRICS,
    all_pairs_nearest,
    median_histogram,
    nearest,
    normalize,
    pair_distances,
)


def reference_distance(p, q, metric):
    """Term by term, in plain Python floats."""
    if metric == "design":
        return sum(abs(a - b) / max(a, b) if max(a, b) > 0 else 0.0 for a, b in zip(p, q, strict=True))
    if metric == "l1":
        return sum(abs(a - b) for a, b in zip(p, q, strict=True))
    if metric == "chisquare":
        return 2 * sum((a - b) ** 2 / (a + b) if a + b > 0 else 0.0 for a, b in zip(p, q, strict=True))
    if metric == "intersection":
        return 1 - sum(min(a, b) for a, b in zip(p, q, strict=True))
    if metric == "hellinger":
        return math.sqrt(sum((math.sqrt(a) - math.sqrt(b)) ** 2 for a, b in zip(p, q, strict=True)) / 2)
    mp, mq = sum(p) / len(p), sum(q) / len(q)
    cov = sum((a - mp) * (b - mq) for a, b in zip(p, q, strict=True))
    var = math.sqrt(sum((a - mp) ** 2 for a in p) * sum((b - mq) ** 2 for b in q))
    return 1 - (cov / var if var > 0 else 0.0)


def reference_neighbours(fractions, n, metric):
    """All pairs, sorted by (distance, index), self excluded."""
    result = []
    for i, p in enumerate(fractions):
        scored = sorted((reference_distance(p, q, metric), j) for j, q in enumerate(fractions) if j != i)[:n]
        result.append(scored)
    return result


@pytest.fixture(scope="module")
def fractions():
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 40, (150, 16)) * (rng.random((150, 16)) < 0.6)  # many empty bins
    counts[:, 0] += 1  # no empty user
    counts[10:20] = counts[30]  # exact ties: eleven identical users
    return normalize(counts)


@pytest.mark.parametrize("metric", METRICS)
def test_pair_distances_follow_the_definitions(fractions, metric):
    got = pair_distances(fractions[3], fractions, metric)
    expected = [reference_distance(fractions[3], q, metric) for q in fractions]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert got[3] == pytest.approx(0.0, abs=1e-12)


def test_hellinger_is_opencvs_bhattacharyya_on_normalised_rows(fractions):
    coefficient = np.sqrt(fractions[0] * fractions[1:]).sum(axis=1)
    np.testing.assert_allclose(
        pair_distances(fractions[0], fractions[1:], "hellinger"), np.sqrt(1 - coefficient), atol=1e-7
    )


def test_zero_over_zero_is_zero_and_ranges():
    p, q = normalize([[1, 0, 0, 1]]), normalize([[0, 0, 1, 1]])
    assert pair_distances(p[0], q, "design")[0] == pytest.approx(2.0)  # bins 0 and 2 count 1 each, bin 1 is 0/0
    assert pair_distances(p[0], q, "l1")[0] == pytest.approx(1.0)
    assert pair_distances(p[0], q, "intersection")[0] == pytest.approx(0.5)
    flat = normalize([[1, 1, 1, 1]])
    assert pair_distances(flat[0], q, "correlation")[0] == pytest.approx(1.0)  # r = 0 for a constant row


@pytest.mark.parametrize("metric", METRICS)
def test_all_pairs_equals_the_brute_force_reference_ties_included(fractions, metric):
    indices, distances = all_pairs_nearest(fractions, 5, metric)
    for i, expected in enumerate(reference_neighbours(fractions, 5, metric)):
        assert indices[i].tolist() == [j for _, j in expected], (metric, i)
        np.testing.assert_allclose(distances[i], [d for d, _ in expected], rtol=1e-12, atol=1e-12)
    assert all(i not in row for i, row in enumerate(indices.tolist()))


@pytest.mark.parametrize("metric", METRICS)
def test_one_against_all_equals_all_pairs(fractions, metric):
    all_indices, all_distances = all_pairs_nearest(fractions, 7, metric)
    for i in (0, 15, 149):
        indices, distances = nearest(fractions, i, 7, metric)
        assert indices.tolist() == all_indices[i].tolist()
        np.testing.assert_array_equal(distances, all_distances[i])


def test_small_days_pad_with_minus_one():
    one = normalize([[1, 2, 3, 4]])
    indices, distances = all_pairs_nearest(one, 3, "l1")
    assert indices.tolist() == [[-1, -1, -1]] and np.isinf(distances).all()
    two = normalize([[1, 2, 3, 4], [4, 3, 2, 1]])
    indices, distances = all_pairs_nearest(two, 3, "design")
    assert indices.tolist() == [[1, -1, -1], [0, -1, -1]]
    assert distances[0, 0] == pytest.approx(reference_distance(two[0], two[1], "design"))
    assert nearest(one, 0, 3, "l1")[0].tolist() == []


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown metric"):
        all_pairs_nearest(normalize([[1, 2]]), 1, "cosine")
    with pytest.raises(ValueError, match="at least 1"):
        all_pairs_nearest(normalize([[1, 2]]), 0, "l1")


def test_larger_day_against_one_against_all():
    rng = np.random.default_rng(3)
    fractions = normalize(rng.gamma(0.5, 1.0, (3000, 16)))
    indices, distances = all_pairs_nearest(fractions, 10, "design")
    for i in rng.choice(3000, 25, replace=False):
        expected_i, expected_d = nearest(fractions, i, 10, "design")
        assert indices[i].tolist() == expected_i.tolist()
        np.testing.assert_array_equal(distances[i], expected_d)


def test_median_per_bin_with_odd_and_even_counts():
    rows = np.array([[0.1, 0.9, 0.0], [0.3, 0.7, 0.0], [0.2, 0.5, 0.3]])
    assert median_histogram(rows).tolist() == pytest.approx([0.2, 0.7, 0.0])
    even = np.vstack([rows, [[0.6, 0.4, 0.0]]])
    assert median_histogram(even).tolist() == pytest.approx([0.25, 0.6, 0.0])  # means of the two middle values
    assert median_histogram(rows[:1]).tolist() == rows[0].tolist()
    assert median_histogram(np.ones((4, 16)) / 16).shape == (16,)  # all 16 bins
    with pytest.raises(ValueError):
        median_histogram(np.zeros((0, 16)))


def test_normalize_keeps_empty_rows_empty():
    assert normalize([[0, 0], [1, 3]]).tolist() == [[0.0, 0.0], [0.25, 0.75]]


def test_the_all_pairs_kernel_is_compiled_for_float32_only(fractions):
    """A float64 scalar argument makes Numba compile a float64 kernel, several times slower: the
    call must pass NumPy float32 values only (a Python float once slipped in)."""
    import numba

    from graywave.kernels import _similarity_cpu

    all_pairs_nearest(fractions, 3, "design")
    # The entry point that Python calls: the kernels it calls are compiled into it, and have no
    # signatures of their own when it was loaded from Numba's cache.
    signatures = _similarity_cpu._search_distances.signatures
    assert signatures
    assert all(signature[0].dtype == numba.float32 and signature[2] == numba.float32 for signature in signatures)
