"""The GPU kernels compiled to PTX for sm_80 (A100) and sm_90 (H100), with NVVM and no driver, each
with the one signature its launcher uses: what the simulator lets through (an invalid shared array,
a type that does not compile) fails here. The PTX is also read for what would be slow or wrong on a
device: float64 arithmetic in the float32 kernels, more static shared memory than a block may have.
"""

from __future__ import annotations

import re

import pytest
from numba.cuda import compile_ptx

from graywave.kernels import _gpu, _similarity_gpu

ARCHITECTURES = [(8, 0), (9, 0)]
STATIC_SHARED_LIMIT = 48 * 1024


def shared_bytes(ptx: str) -> int:
    return sum(int(size) for size in re.findall(r"\.shared \.align \d+ \.b8 \S+\[(\d+)\]", ptx))


def float64_instructions(ptx: str) -> list[str]:
    return [line.strip() for line in ptx.splitlines() if re.search(r"^\s*[a-z][\w.]*\.f64\b", line)]


def test_the_compile_is_real():
    assert not _gpu.SIMULATED


@pytest.mark.parametrize("cc", ARCHITECTURES, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
@pytest.mark.parametrize("kernel", list(_gpu.SIGNATURES), ids=lambda k: k.__name__)
def test_the_image_kernels_compile(cc, kernel):
    ptx, returns = compile_ptx(kernel, _gpu.SIGNATURES[kernel], cc=cc)
    assert f".target sm_{cc[0]}{cc[1]}" in ptx and ".visible .entry" in ptx
    assert str(returns) == "none"
    assert not float64_instructions(ptx)
    assert shared_bytes(ptx) <= STATIC_SHARED_LIMIT


@pytest.mark.parametrize("cc", ARCHITECTURES, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
@pytest.mark.parametrize("bins", _similarity_gpu.SUPPORTED_BINS)
def test_the_top_n_kernel_compiles_for_every_bin_count(cc, bins):
    ptx, _ = compile_ptx(_similarity_gpu._source(bins), _similarity_gpu.signature(bins), cc=cc)
    assert f".target sm_{cc[0]}{cc[1]}" in ptx and ".visible .entry" in ptx
    assert not float64_instructions(ptx), "float32 distances: a float64 literal slipped in"
    tile = shared_bytes(ptx)
    assert tile == 4 * bins * _similarity_gpu.tile_rows(bins) <= STATIC_SHARED_LIMIT


def test_an_unsupported_bin_count_is_refused():
    with pytest.raises(ValueError, match="bins"):
        _similarity_gpu.kernel(3)
