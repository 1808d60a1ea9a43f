"""Properties of the kernels, for inputs Hypothesis draws (bounded: a few dozen examples each)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from graywave.kernels import histogram, histogram_batch
from graywave.kernels.similarity import METRICS, all_pairs_nearest, median_histogram, normalize, pair_distances

BOUNDED = settings(max_examples=40, deadline=None)
BINS = st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128, 256])
PLANES = arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40)))
HISTOGRAMS = arrays(np.int64, 16, elements=st.integers(0, 10_000)).filter(lambda row: row.sum() > 0)


@BOUNDED
@given(plane=PLANES, bins=BINS)
def test_a_histogram_counts_every_pixel_once_in_its_bin(plane, bins):
    counts = histogram(plane, bins)
    assert counts.sum() == plane.size
    assert counts.tolist() == np.bincount(plane.ravel().astype(np.int64) // (256 // bins), minlength=bins).tolist()


@BOUNDED
@given(planes=st.lists(PLANES, min_size=1, max_size=5), bins=BINS)
def test_a_ragged_batch_gives_each_planes_own_histogram(planes, bins):
    assert histogram_batch(planes, bins).tolist() == [histogram(p, bins).tolist() for p in planes]


@BOUNDED
@given(a=HISTOGRAMS, b=HISTOGRAMS, metric=st.sampled_from(METRICS))
def test_every_metric_is_symmetric_and_zero_on_identical_histograms(a, b, metric):
    p, q = normalize(a), normalize(b)
    there, back = pair_distances(p, q[None], metric)[0], pair_distances(q, p[None], metric)[0]
    assert np.isclose(there, back, rtol=1e-9, atol=1e-12)
    assert np.isclose(pair_distances(p, p[None], metric)[0], 0.0, atol=1e-9)


@BOUNDED
@given(rows=arrays(np.float64, st.tuples(st.integers(1, 30), st.integers(1, 16)), elements=st.floats(0, 1)))
def test_the_median_is_numpys_median_bit_for_bit(rows):
    ties = np.round(rows, 1)  # and rows with many equal values
    assert median_histogram(rows).tobytes() == np.median(rows, axis=0).tobytes()
    assert median_histogram(ties).tobytes() == np.median(ties, axis=0).tobytes()


@BOUNDED
@given(row=HISTOGRAMS)
def test_the_median_of_one_user_is_that_user(row):
    fractions = normalize(row[None])
    assert median_histogram(fractions).tolist() == fractions[0].tolist()


@BOUNDED
@given(
    users=arrays(np.int64, st.tuples(st.integers(5, 12), st.just(15)), elements=st.integers(1, 1000)),
    metric=st.sampled_from(["design", "l1", "chisquare", "intersection", "hellinger"]),
)
def test_a_user_far_from_everyone_changes_nobody_elses_neighbours(users, metric):
    """Users with mass in bins 0-14 only; the newcomer has all of its mass in bin 15: as far from
    each of them as these metrics allow, so it is never anyone's nearer neighbour."""
    others = normalize(np.hstack([users, np.zeros((len(users), 1), np.int64)]))
    far = np.zeros((1, 16))
    far[0, 15] = 1.0
    n = 3
    before, _ = all_pairs_nearest(others, n, metric)
    after, _ = all_pairs_nearest(np.vstack([others, far]), n, metric)
    assert after[: len(others)].tolist() == before.tolist()


def test_the_uniform_histogram_is_at_distance_0_from_itself_in_every_metric():
    """Hypothesis found it: Pearson's r of two constant rows was taken as 0, a correlation distance of 1."""
    uniform = normalize(np.ones(16))
    peaked = normalize(np.arange(16.0))
    for metric in METRICS:
        assert np.isclose(pair_distances(uniform, uniform[None], metric)[0], 0.0, atol=1e-9), metric
    assert np.isclose(pair_distances(uniform, peaked[None], "correlation")[0], 1.0)
