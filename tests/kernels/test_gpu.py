"""CuPy kernels against the CPU kernels: run on a machine with an NVIDIA GPU, skipped elsewhere."""

import numpy as np
import pytest

from graywave.kernels import gpu_available, histogram, histogram_batch, luma_from_rgb

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_available(), reason="needs CuPy and an NVIDIA GPU"),
]


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


def test_luma_gpu_equals_cpu(cp):
    rgb = np.random.default_rng(0).integers(0, 256, (1023, 769, 3), dtype=np.uint8)
    assert np.array_equal(cp.asnumpy(luma_from_rgb(cp.asarray(rgb))), luma_from_rgb(rgb))


@pytest.mark.parametrize("bins", [1, 16, 256])
def test_histogram_gpu_equals_cpu(cp, bins):
    plane = np.random.default_rng(bins).integers(0, 256, (3024, 4032), dtype=np.uint8)
    gpu = histogram(cp.asarray(plane), bins)
    assert isinstance(gpu, cp.ndarray)
    assert np.array_equal(cp.asnumpy(gpu), histogram(plane, bins))


def test_batch_histogram_gpu_equals_cpu_in_one_launch_and_ragged(cp):
    rng = np.random.default_rng(5)
    stack = rng.integers(0, 256, (8, 300, 200), dtype=np.uint8)
    assert np.array_equal(cp.asnumpy(histogram_batch(cp.asarray(stack))), histogram_batch(stack))
    ragged = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(10, 20), (1, 1), (999, 3)]]
    gpu = histogram_batch([cp.asarray(p) for p in ragged])
    assert np.array_equal(cp.asnumpy(gpu), histogram_batch(ragged))


@pytest.mark.parametrize("metric", ["design", "l1", "chisquare", "intersection", "hellinger", "correlation"])
def test_all_pairs_gpu_equals_cpu(cp, metric):
    from graywave.kernels.similarity import all_pairs_nearest, normalize

    fractions = normalize(np.random.default_rng(9).gamma(0.5, 1.0, (5000, 16)))
    cpu_indices, cpu_distances = all_pairs_nearest(fractions, 10, metric)
    gpu_indices, gpu_distances = all_pairs_nearest(cp.asarray(fractions), 10, metric)
    assert np.array_equal(gpu_indices, cpu_indices)
    assert np.array_equal(gpu_distances, cpu_distances)  # both re-scored in float64
