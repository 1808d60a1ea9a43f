"""Where arrays live: the one place that chooses between the CPU and the GPU (``GRAYWAVE_DEVICE``)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any, Literal

from graywave.errors import DeviceUnavailable

DeviceName = Literal["auto", "cpu", "gpu"]
"""What ``GRAYWAVE_DEVICE`` may say: ``auto`` takes a GPU where one is usable."""


@cache
def gpu_available() -> bool:
    """True when CuPy and numba-cuda (the kernels) are installed and CuPy sees a CUDA device."""
    if importlib.util.find_spec("cupy") is None or importlib.util.find_spec("numba_cuda") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver, no device, broken CUDA install: all mean "no GPU here"
        return False


@dataclass(frozen=True)
class Device:
    """A place for arrays: ``put`` moves host arrays there, ``get`` brings results back."""

    name: Literal["cpu", "gpu"]

    @property
    def xp(self) -> ModuleType:
        if self.name == "gpu":
            import cupy

            return cupy
        import numpy

        return numpy

    def put(self, array: Any) -> Any:
        return self.xp.asarray(array)

    def get(self, array: Any) -> Any:
        if self.name == "gpu":
            import cupy

            return cupy.asnumpy(array)
        return array


def select_device(requested: DeviceName) -> Device:
    """Resolve ``auto`` to the GPU when one is usable; refuse ``gpu`` clearly when none is."""
    if requested == "cpu":
        return Device("cpu")
    if gpu_available():
        return Device("gpu")
    if requested == "gpu":
        raise DeviceUnavailable(
            "GRAYWAVE_DEVICE=gpu but no CUDA GPU is usable: install the 'gpu' extra "
            "(pip install 'graywave[gpu]') on a machine with an NVIDIA GPU, or use GRAYWAVE_DEVICE=auto|cpu"
        )
    return Device("cpu")


def is_gpu_array(array: Any) -> bool:
    return type(array).__module__.split(".")[0] == "cupy"
