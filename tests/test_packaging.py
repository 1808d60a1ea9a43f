"""What the GPU path is installed with, and the GPU benchmark's answer where there is no GPU."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).parents[1]


def extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_the_gpu_extra_brings_the_arrays_the_kernels_and_the_nvjpeg_codec():
    gpu = extras()["gpu"]
    assert any(r.startswith("cupy-cuda12x") for r in gpu)
    assert any(r.startswith("numba-cuda[cu12]") for r in gpu)  # NVVM, to compile the kernels
    assert any(r.startswith("nvidia-nvimgcodec-cu12[nvjpeg]>=0.9,<0.10") for r in gpu)  # the GPU JPEG decoder
    assert "--extra gpu" in (ROOT / "Dockerfile.gpu").read_text()


def test_the_gpu_ci_extra_is_what_these_tests_run_and_has_no_cupy():
    ci = extras()["gpu-ci"]
    assert not any(r.startswith("cupy") for r in ci)
    assert version("numba-cuda") in " ".join(ci) and version("nvidia-nvimgcodec-cu12") in " ".join(ci)


def test_the_gpu_benchmark_says_it_needs_a_gpu_and_does_nothing_without_one():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench/gpu_bench.py")], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "needs an NVIDIA GPU" in done.stdout
