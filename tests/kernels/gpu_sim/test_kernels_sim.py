"""The GPU kernels (``kernels._gpu``, ``kernels._similarity_gpu``) executed by numba-cuda's
simulator, thread by thread, against their CPU twins (``kernels._cpu``, ``kernels._similarity_cpu``).

Small inputs, chosen to reach the edges: 1x1 and empty planes, ragged batches, planes spread over
several blocks, a batch over several launches, one bin taking every pixel; rows over several blocks
and tiles, no rows and fewer rows than neighbours, ties, all-zero rows, every metric code, 1 to 256
bins (``tests/kernels/test_ptx.py`` compiles every bin count graywave supports). The
simulator also checks every index: an out-of-bounds read or write fails with the thread that made it.
"""

from __future__ import annotations

import numpy as np
import pytest

from graywave.kernels import _cpu, _gpu, _similarity_cpu, _similarity_gpu
from graywave.kernels.similarity import CHISQ, DESIGN, L1, MIN, normalize

TINY = np.finfo(np.float32).tiny
RNG = np.random.default_rng(2026)


def test_the_kernels_run_in_the_simulator():
    assert _gpu.SIMULATED and _gpu.gpu_arrays() is np


def planes_of(*shapes):
    return [RNG.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]


def test_a_ragged_batch_counts_like_the_cpu(monkeypatch):
    monkeypatch.setattr(_gpu, "THREADS", 32)
    monkeypatch.setattr(_gpu, "PIXELS_PER_THREAD", 32)  # the 60x100 plane takes 5 blocks, each thread 6 pixels
    planes = [*planes_of((1, 1), (3, 5), (60, 100), (1, 999)), np.zeros((0, 4), np.uint8)]
    planes.append(np.full((30, 40), 255, np.uint8))  # every pixel in one bin: the atomics' worst case
    planes.append(planes_of((40, 50))[0].T)  # not contiguous
    counts = _gpu.counts256_planes(planes)
    assert counts.dtype == np.int64 and counts.shape == (len(planes), 256)
    assert np.array_equal(counts, _cpu.counts256_planes(planes))
    assert [int(row.sum()) for row in counts] == [plane.size for plane in planes]


def test_a_batch_larger_than_one_launch_is_split_over_several(monkeypatch):
    monkeypatch.setattr(_gpu, "MAX_PLANES_PER_LAUNCH", 2)
    planes = planes_of((4, 4), (5, 3), (1, 1), (7, 2), (2, 9))
    assert np.array_equal(_gpu.counts256_planes(planes), _cpu.counts256_planes(planes))


def test_a_stacked_batch_and_a_single_plane_count_like_the_cpu():
    stack = RNG.integers(0, 256, (3, 21, 34), dtype=np.uint8)
    assert np.array_equal(_gpu.counts256_batch(stack), _cpu.counts256_batch(stack))
    assert np.array_equal(_gpu.counts256(stack[1]), _cpu.counts256(stack[1]))
    assert _gpu.counts256_planes([]).shape == (0, 256)


@pytest.mark.parametrize("shape", [(1, 1), (17, 23), (64, 65)])
def test_luma_is_the_cpus_bit_for_bit(shape):
    rgb = RNG.integers(0, 256, (*shape, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 255, 255)
    assert np.array_equal(_gpu.luma_from_rgb(rgb), _cpu.luma_from_rgb(rgb))
    rgba = RNG.integers(0, 256, (*shape, 4), dtype=np.uint8)
    assert np.array_equal(_gpu.luma_from_rgb(rgba[..., :3]), _cpu.luma_from_rgb(rgba[..., :3]))  # strided


def rows(count: int, bins: int) -> np.ndarray:
    """Histogram rows as the analytics give them, with ties (repeated rows) and all-zero rows."""
    fractions = normalize(RNG.gamma(0.5, 1.0, (count, bins)))
    if count > 8:
        fractions[3] = fractions[7]  # a tie, at distance 0
        fractions[5] = fractions[7]
        fractions[8] = 0.0  # a user with no pixels: 0/0 terms
        fractions[-1] = 0.0
    return fractions


def both(fractions: np.ndarray, n: int, metric: int):
    xt = np.ascontiguousarray(fractions.T, dtype=np.float32)
    return _similarity_gpu.top_n_all_pairs(xt, n, metric, TINY), _similarity_cpu.top_n_all_pairs(xt, n, metric, TINY)


@pytest.mark.parametrize("metric", [DESIGN, L1, CHISQ, MIN])
@pytest.mark.parametrize(("count", "bins", "n"), [(70, 16, 8), (150, 4, 5), (40, 256, 3), (9, 1, 4)])
def test_all_pairs_top_n_is_the_cpus_over_blocks_and_tiles(monkeypatch, metric, count, bins, n):
    monkeypatch.setattr(_similarity_gpu, "THREADS", 32)  # several blocks, the last one partly idle
    monkeypatch.setattr(_similarity_cpu, "TILE_ROWS", 16)  # the CPU twin's tiles and rounds too
    assert count > _similarity_gpu.tile_rows(bins) or bins == 1  # several tiles, the last one partial
    (gpu_index, gpu_distance), (cpu_index, cpu_distance) = both(rows(count, bins), n, metric)
    assert np.array_equal(gpu_index, cpu_index)
    assert np.array_equal(gpu_distance, cpu_distance)  # the same float32 sums, in the same order
    assert gpu_index.dtype == np.int64 and gpu_distance.dtype == np.float64


def test_ties_rank_by_index_and_fewer_rows_than_neighbours_pad_with_minus_one():
    fractions = normalize(np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    (index, distance), (cpu_index, cpu_distance) = both(fractions, 5, L1)
    assert index.tolist()[0] == [1, 2, 3, -1, -1]  # rows 1 and 2 tie at 0: the lower index first
    assert np.isinf(distance[0, 3:]).all()
    assert np.array_equal(index, cpu_index) and np.array_equal(distance, cpu_distance)
    (alone, far), _ = both(fractions[:1], 2, DESIGN)
    assert alone.tolist() == [[-1, -1]] and np.isinf(far).all()


def test_a_table_larger_than_the_old_limit_of_32(monkeypatch):
    monkeypatch.setattr(_similarity_gpu, "THREADS", 32)
    (gpu_index, gpu_distance), (cpu_index, cpu_distance) = both(rows(60, 8), 45, CHISQ)
    assert np.array_equal(gpu_index, cpu_index) and np.array_equal(gpu_distance, cpu_distance)


def test_no_rows_give_no_neighbours():
    (index, distance), (cpu_index, cpu_distance) = both(np.zeros((0, 16)), 3, DESIGN)
    assert index.shape == distance.shape == cpu_index.shape == cpu_distance.shape == (0, 3)


@pytest.mark.parametrize("n", [0, _similarity_gpu.MAX_K + 1])
def test_a_table_size_the_kernel_cannot_hold_is_refused(n):
    with pytest.raises(ValueError, match="neighbours per row"):
        both(rows(4, 16), n, L1)


def exact_features(count: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Features whose products float32 holds exactly (multiples of 1/8), with repeated rows (ties)
    and all-zero rows, and offsets of 0 or 1/2: both twins see the same scores bit for bit, whatever
    order their matrix multiplies add in."""
    features = RNG.integers(0, 9, (count, bins)) / 8
    if count > 8:
        features[3] = features[7]
        features[5] = features[7]
        features[8] = 0.0
    return features, RNG.choice([0.0, 0.5], count)


@pytest.mark.parametrize(
    ("count", "bins", "n", "columns"), [(70, 16, 8, 9), (150, 4, 5, 64), (40, 256, 3, 1), (9, 1, 4, 2)]
)
def test_the_inner_product_search_is_the_cpus_over_blocks_and_tiles(monkeypatch, count, bins, n, columns):
    monkeypatch.setattr(_similarity_gpu, "THREADS", 32)  # several blocks, the last one partly idle
    monkeypatch.setattr(_similarity_gpu, "PRODUCT_TILE_BYTES", 4 * count * columns)  # several tiles
    monkeypatch.setattr(_similarity_cpu, "TILE_ROWS", 16)
    assert _similarity_gpu.tile_columns(count) == columns < count
    features, offsets = exact_features(count, bins)
    gpu_index, gpu_distance = _similarity_gpu.top_n_by_inner_product(features, offsets, n)
    cpu_index, cpu_distance = _similarity_cpu.top_n_by_inner_product(features, offsets, n)
    assert np.array_equal(gpu_index, cpu_index)
    assert np.array_equal(gpu_distance, cpu_distance)
    products = features @ features.T
    expected = sorted((offsets[0] + offsets[j] - products[0, j], j) for j in range(1, count))[:n]
    assert gpu_index[0].tolist()[: len(expected)] == [j for _, j in expected]  # and the CPU's is the reference


def test_the_inner_product_search_pads_and_refuses_like_the_other():
    features, offsets = exact_features(3, 16)
    index, distance = _similarity_gpu.top_n_by_inner_product(features, offsets, 4)
    assert (index[:, 2:] == -1).all() and np.isinf(distance[:, 2:]).all()
    empty, _ = _similarity_gpu.top_n_by_inner_product(np.zeros((0, 16)), np.zeros(0), 3)
    assert empty.shape == (0, 3)
    with pytest.raises(ValueError, match="neighbours per row"):
        _similarity_gpu.top_n_by_inner_product(features, offsets, _similarity_gpu.MAX_K + 1)
