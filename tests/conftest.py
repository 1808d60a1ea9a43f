"""Test set-up: Prefect's state in a temporary folder, no telemetry, and helpers to make uploads."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="graywave-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)

from graywave.config import Settings, prepare_prefect_environment  # noqa: E402

prepare_prefect_environment(Settings())


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty embedded deployment (blob folder and lake) that ``Settings()`` points at."""
    monkeypatch.setenv("GRAYWAVE_BLOB_URL", str(tmp_path / "blobs"))
    monkeypatch.setenv("GRAYWAVE_LAKE_URL", str(tmp_path / "lake"))
    monkeypatch.setenv("GRAYWAVE_WORKERS", "2")
    monkeypatch.setenv("GRAYWAVE_DEVICE", "cpu")
    yield tmp_path


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return Settings()


@pytest.fixture(scope="session", autouse=True)
def _quiet_prefect_shutdown() -> Iterator[None]:
    """Prefect's temporary server logs as it stops at exit, after pytest has closed the streams."""
    yield
    logging.raiseExceptions = False
