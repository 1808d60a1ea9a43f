"""The wheel as a user gets it: built from the working tree, installed in a scratch virtual environment,
its package, layers and ``graywave`` command working there; what the GPU path is installed with; the GPU
benchmark's answer where there is no GPU."""

from __future__ import annotations

import email
import json
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).parents[1]
UV = Path(sys.executable).with_name("uv")
LAYERS = ["graywave.kernels", "graywave.storage", "graywave.service", "graywave.flows", "graywave.api", "graywave.cli"]
BUILD_TIMEOUT_S = 600  # a loaded machine: never a default
INSTALLED = """
import importlib, json, sys
from importlib.metadata import entry_points
modules = {name: importlib.import_module(name).__file__ for name in ["graywave", *sys.argv[1:]]}
(script,) = entry_points(group="console_scripts", name="graywave")
found = {"entry_point": script.value, "callable": callable(script.load()), "from": str(script.dist.locate_file(""))}
print(json.dumps({"modules": modules, **found}))
"""


@dataclass(frozen=True)
class Installed:
    wheel: Path
    python: Path
    scripts: Path
    site_packages: Path


def run(command: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The working tree's wheel (built from a copy of its files that git does not ignore, so that the
    build writes nothing into the checkout), installed without its dependencies in a new virtual
    environment; the test environment's packages come after it on ``sys.path``, for the dependencies."""
    base = tmp_path_factory.mktemp("packaging")
    source, dist, env = base / "source", base / "dist", base / "venv"
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT).stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():  # a file deleted in the working tree is still listed
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    build = [UV, "build", "--wheel", "--out-dir", dist]
    if subprocess.run([*build, "--offline"], cwd=source, capture_output=True, timeout=BUILD_TIMEOUT_S).returncode:
        run(build, cwd=source)  # setuptools is not in uv's cache yet: from the index
    (wheel,) = dist.glob("graywave-*.whl")
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    run([UV, "pip", "install", "--offline", "--no-deps", "--python", python, wheel], cwd=base)
    site_packages = Path(
        run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base).stdout.strip()
    )
    (site_packages / "test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # after its own
    return Installed(wheel, python, env / "bin", site_packages)


def test_the_installed_wheel_imports_graywave_and_its_layers_from_itself_and_has_the_graywave_command(installed):
    found = json.loads(run([installed.python, "-c", INSTALLED, *LAYERS], cwd=installed.wheel.parent).stdout)
    assert set(found["modules"]) == {"graywave", *LAYERS}
    for name, file in found["modules"].items():
        assert Path(file).is_relative_to(installed.site_packages), f"{name} imported from {file}, not the wheel"
    assert found["entry_point"] == "graywave.cli.main:main" and found["callable"]
    assert Path(found["from"]) == installed.site_packages  # the wheel's metadata, not the checkout's
    helped = run([installed.scripts / "graywave", "--help"], cwd=installed.wheel.parent)
    assert "Usage: graywave" in helped.stdout and "wave" in helped.stdout


def test_the_wheel_holds_every_module_of_the_package_folders(installed):
    """A subpackage left out of ``[tool.setuptools] packages`` installs nothing, and imports only from a checkout."""
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    expected = {
        f"{package.replace('.', '/')}/{path.relative_to(ROOT / folder).as_posix()}"
        for package, folder in folders.items()
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert len(expected) > 50
    in_wheel = set(zipfile.ZipFile(installed.wheel).namelist())
    assert sorted(expected - in_wheel) == []


def extra(installed: Installed, name: str) -> list[Requirement]:
    with zipfile.ZipFile(installed.wheel) as wheel:
        (metadata,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        fields = email.message_from_bytes(wheel.read(metadata))
    assert name in fields.get_all("Provides-Extra", [])
    requirements = [Requirement(line) for line in fields.get_all("Requires-Dist", [])]
    return [r for r in requirements if r.marker is not None and r.marker.evaluate({"extra": name})]


def test_the_gpu_extra_brings_the_arrays_the_kernels_and_the_nvjpeg_codec(installed):
    gpu = {r.name: r for r in extra(installed, "gpu")}
    assert set(gpu) == {"cupy-cuda12x", "numba-cuda", "nvidia-nvimgcodec-cu12"}
    assert gpu["numba-cuda"].extras == {"cu12"}  # NVVM, to compile the kernels
    assert gpu["nvidia-nvimgcodec-cu12"].extras == {"nvjpeg"}  # the GPU JPEG decoder
    assert (
        "0.9.0.20" in gpu["nvidia-nvimgcodec-cu12"].specifier and "0.10" not in gpu["nvidia-nvimgcodec-cu12"].specifier
    )
    assert "--extra gpu" in (ROOT / "Dockerfile.gpu").read_text()


def test_the_gpu_ci_extra_is_what_these_tests_run_and_has_no_cupy(installed):
    ci = {r.name: r for r in extra(installed, "gpu-ci")}
    assert set(ci) == {"numba-cuda", "nvidia-nvimgcodec-cu12"}
    for name, requirement in ci.items():
        assert str(requirement.specifier) == f"=={version(name)}", name


def test_the_gpu_benchmark_says_it_needs_a_gpu_and_does_nothing_without_one():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench/gpu_bench.py")], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "needs an NVIDIA GPU" in done.stdout
