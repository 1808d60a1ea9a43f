"""The GPU kernels compiled to PTX for sm_80 (A100) and sm_90 (H100), with NVVM and no driver, each
with the one signature its launcher uses: what the simulator lets through (an invalid shared array,
a type that does not compile) fails here. The PTX is also read for what would be slow or wrong on a
device: float64 arithmetic in the float32 kernels, more static shared memory than a block may have.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor

import pytest
from numba.cuda import compile_ptx

from graywave.kernels import _gpu, _similarity_gpu

ARCHITECTURES = [(8, 0), (9, 0)]
STATIC_SHARED_LIMIT = 48 * 1024
IMAGE_KERNELS = {kernel.__name__: kernel for kernel in _gpu.SIGNATURES}


def _compile(job: tuple[str, int, tuple[int, int]]) -> tuple[str, str]:
    """(PTX, return type) of one kernel: an image kernel by name (bins 0), or the top-n kernel of ``bins``."""
    name, bins, cc = job
    if name == "top_n":
        ptx, returns = compile_ptx(_similarity_gpu._source(bins), _similarity_gpu.SIGNATURE, cc=cc)
    elif name == "top_k_of_products":
        ptx, returns = compile_ptx(
            _similarity_gpu.graywave_top_k_of_products, _similarity_gpu.PRODUCTS_SIGNATURE, cc=cc
        )
    else:
        ptx, returns = compile_ptx(IMAGE_KERNELS[name], _gpu.SIGNATURES[IMAGE_KERNELS[name]], cc=cc)
    return ptx, str(returns)


@pytest.fixture(scope="module")
def compiled() -> dict[tuple[str, int, tuple[int, int]], tuple[str, str]]:
    """Every kernel's PTX for every architecture, compiled on all cores (NVVM takes a second or two each)."""
    jobs = [(name, 0, cc) for name in IMAGE_KERNELS for cc in ARCHITECTURES]
    jobs += [("top_n", bins, cc) for bins in _similarity_gpu.SUPPORTED_BINS for cc in ARCHITECTURES]
    jobs += [("top_k_of_products", 0, cc) for cc in ARCHITECTURES]
    # Spawned, not forked: earlier tests leave threads (Prefect's) in this process.
    with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("spawn")) as pool:
        return dict(zip(jobs, pool.map(_compile, jobs), strict=True))


def shared_bytes(ptx: str) -> int:
    return sum(int(size) for size in re.findall(r"\.shared \.align \d+ \.b8 \S+\[(\d+)\]", ptx))


def float64_instructions(ptx: str) -> list[str]:
    return [line.strip() for line in ptx.splitlines() if re.search(r"^\s*(@!?%p\d+\s+)?[a-z][\w.]*\.f64\b", line)]


def test_the_compile_is_real():
    assert not _gpu.SIMULATED


@pytest.mark.parametrize("cc", ARCHITECTURES, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
@pytest.mark.parametrize("kernel", list(IMAGE_KERNELS))
def test_the_image_kernels_compile(compiled, cc, kernel):
    ptx, returns = compiled[(kernel, 0, cc)]
    assert f".target sm_{cc[0]}{cc[1]}" in ptx and ".visible .entry" in ptx
    assert returns == "none"
    assert not float64_instructions(ptx)
    assert shared_bytes(ptx) <= STATIC_SHARED_LIMIT


@pytest.mark.parametrize("cc", ARCHITECTURES, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
@pytest.mark.parametrize("bins", _similarity_gpu.SUPPORTED_BINS)
def test_the_top_n_kernel_compiles_for_every_bin_count(compiled, cc, bins):
    ptx, _ = compiled[("top_n", bins, cc)]
    assert f".target sm_{cc[0]}{cc[1]}" in ptx and ".visible .entry" in ptx
    assert not float64_instructions(ptx), "float32 distances: a float64 literal slipped in"
    tile = shared_bytes(ptx)
    assert tile == 4 * bins * _similarity_gpu.tile_rows(bins) <= STATIC_SHARED_LIMIT


@pytest.mark.parametrize("cc", ARCHITECTURES, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
def test_the_inner_product_selection_kernel_compiles(compiled, cc):
    """The selection half of the inner-product search; its other half, CuPy's matmul (cuBLAS), has
    no PTX of graywave's to check and runs only on a device."""
    ptx, returns = compiled[("top_k_of_products", 0, cc)]
    assert f".target sm_{cc[0]}{cc[1]}" in ptx and ".visible .entry" in ptx
    assert returns == "none"
    assert not float64_instructions(ptx), "float32 scores: a float64 literal slipped in"
    assert shared_bytes(ptx) == 0  # the tables are in local memory, the products in global


def test_an_unsupported_bin_count_is_refused():
    with pytest.raises(ValueError, match="bins"):
        _similarity_gpu.kernel(3)
