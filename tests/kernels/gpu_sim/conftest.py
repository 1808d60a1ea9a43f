"""The GPU kernels under numba-cuda's simulator: a pytest process of its own, started with
``NUMBA_ENABLE_CUDASIM=1`` (``make test`` does), since the simulator replaces ``numba.cuda`` for the
whole process. The main test run leaves this folder out (``tests/conftest.py``)."""

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        raise pytest.UsageError(
            "tests/kernels/gpu_sim runs under numba-cuda's simulator: "
            "NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/kernels/gpu_sim"
        )


@pytest.fixture(scope="session", autouse=True)
def _one_prefect_server_per_process() -> None:
    """No Prefect here: the kernels' process neither seeds a Prefect home nor shares a server."""
