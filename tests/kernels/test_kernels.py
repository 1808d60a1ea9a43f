import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from graywave.errors import DeviceUnavailable
from graywave.kernels import gpu_available, histogram, histogram_batch, luma_from_rgb, select_device
from tests.helpers import DAY, put_uploads


def pillow_histogram(plane: np.ndarray, bins: int) -> np.ndarray:
    """Independent reference: Pillow's 256-bin histogram, folded into ``bins`` equal bins."""
    counts = np.array(Image.fromarray(plane).histogram(), dtype=np.int64)
    return counts.reshape(bins, 256 // bins).sum(axis=1)


def test_luma_is_bit_exact_with_pillow_on_every_channel_extreme_and_random_pixels():
    rng = np.random.default_rng(1)
    levels = np.array([0, 1, 127, 128, 254, 255], dtype=np.uint8)
    corners = np.stack(np.meshgrid(levels, levels, levels), axis=-1).reshape(1, -1, 3)
    random = rng.integers(0, 256, (300, 700, 3), dtype=np.uint8)
    for rgb in (corners, random):
        expected = np.asarray(Image.fromarray(rgb).convert("L"))
        assert np.array_equal(luma_from_rgb(rgb), expected)


def test_luma_accepts_strided_views():
    rgba = np.random.default_rng(2).integers(0, 256, (50, 60, 4), dtype=np.uint8)
    rgb = rgba[:, ::2, :3]
    assert np.array_equal(luma_from_rgb(rgb), np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("L")))


def test_luma_rejects_wrong_inputs():
    with pytest.raises(TypeError):
        luma_from_rgb(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError):
        luma_from_rgb(np.zeros((2, 2, 4), np.uint8))


@pytest.mark.parametrize("bins", [1, 2, 16, 64, 256])
def test_histogram_matches_pillow_and_sums_to_pixel_count(bins):
    plane = np.random.default_rng(bins).integers(0, 256, (613, 457), dtype=np.uint8)
    counts = histogram(plane, bins)
    assert counts.dtype == np.int64
    assert counts.shape == (bins,)
    assert np.array_equal(counts, pillow_histogram(plane, bins))
    assert counts.sum() == plane.size


def test_histogram_bin_edges_follow_the_definition():
    plane = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert histogram(plane, 16).tolist() == [16] * 16  # v // 16 == k
    assert histogram(np.array([[15, 16, 255]], np.uint8), 16).tolist() == [1, 1] + [0] * 13 + [1]


def test_histogram_of_views_sizes_below_unroll_and_empty_planes():
    plane = np.random.default_rng(3).integers(0, 256, (100, 100), dtype=np.uint8)
    view = plane[::3, 1::2]
    assert np.array_equal(histogram(view), pillow_histogram(np.ascontiguousarray(view), 16))
    for tiny in (np.zeros((1, 1), np.uint8), np.full((1, 3), 200, np.uint8)):
        assert histogram(tiny).sum() == tiny.size
    assert histogram(np.zeros((0, 5), np.uint8)).sum() == 0


@pytest.mark.parametrize("bins", [0, 3, 17, 512])
def test_histogram_refuses_bins_that_do_not_divide_256(bins):
    with pytest.raises(ValueError, match="power of two"):
        histogram(np.zeros((2, 2), np.uint8), bins)


def test_histogram_refuses_non_uint8():
    with pytest.raises(TypeError):
        histogram(np.zeros((2, 2), np.uint16))


def test_batch_histograms_equal_one_by_one():
    rng = np.random.default_rng(4)
    stack = rng.integers(0, 256, (5, 40, 30), dtype=np.uint8)
    assert np.array_equal(histogram_batch(stack), np.stack([pillow_histogram(p, 16) for p in stack]))
    ragged = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(10, 20), (33, 7), (1, 1)]]
    assert np.array_equal(histogram_batch(ragged, 4), np.stack([pillow_histogram(p, 4) for p in ragged]))
    assert histogram_batch([], 16).shape == (0, 16)


def test_device_selection():
    assert select_device("cpu").name == "cpu"
    if gpu_available():
        assert select_device("auto").name == "gpu"
    else:
        assert select_device("auto").name == "cpu"
        with pytest.raises(DeviceUnavailable, match="no CUDA GPU"):
            select_device("gpu")


def test_warm_up_runs_every_kernel_on_the_device(monkeypatch):
    from graywave.kernels import _cpu, warm_up

    calls = []
    for name in ("counts256", "counts256_batch", "luma_from_rgb"):
        kernel = getattr(_cpu, name)
        monkeypatch.setattr(_cpu, name, lambda *args, _k=kernel, _n=name: calls.append(_n) or _k(*args))
    warm_up(select_device("cpu"))  # raises if any kernel fails to load
    assert sorted(set(calls)) == ["counts256", "counts256_batch", "luma_from_rgb"]


COMPILED_AFTER_WARM_UP = """
import json
import numba
from graywave.config import Settings
from graywave.kernels import _cpu, _similarity_cpu
from graywave.kernels.__main__ import main
from graywave.kernels.similarity import METRICS
from graywave.service.analytics import AnalyticsRequest, run_analytics
from graywave.service.wave import run_wave
from tests.helpers import DAY

def compiled():
    return {
        f"{module.__name__}.{name}": sorted(map(str, dispatcher.signatures))
        for module in (_cpu, _similarity_cpu)
        for name, dispatcher in vars(module).items()
        if isinstance(dispatcher, numba.core.dispatcher.Dispatcher)
    }

main()
warmed = compiled()
summary = run_wave(Settings(), DAY, "evening", log=lambda _: None)
for metric in METRICS:
    run_analytics(Settings(), DAY, AnalyticsRequest.of(2, metric))
print(json.dumps({"warmed": warmed, "after": compiled(), "processed": summary.processed}))
"""


def test_python_m_kernels_compiles_every_kernel_that_a_wave_and_the_analytics_call(data_dir, phone_files):
    """``make install`` runs ``python -m graywave.kernels`` so that no process compiles a kernel
    again (Numba's cache): a wave of every upload kind, then the analytics of every metric, in a
    fresh process after it, call no kernel with argument types that it did not compile."""
    put_uploads(data_dir / "blobs", DAY, phone_files)
    result = subprocess.run(
        [sys.executable, "-c", COMPILED_AFTER_WARM_UP], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["processed"] >= 6  # the photos of every kind the wave decodes
    assert len(report["warmed"]["graywave.kernels._cpu._counts256"]) == 2  # writable and read-only planes
    assert report["after"] == report["warmed"]
