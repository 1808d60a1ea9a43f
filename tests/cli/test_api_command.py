"""``graywave api`` runs no flow: it makes no Prefect home, and starts no temporary Prefect server."""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest

from tests.helpers import GRAYWAVE, free_port, wait_for


@pytest.mark.parametrize(
    "data_folder",
    [False, True],  # with data/: Prefect's import makes PREFECT_HOME whenever its parent folder exists
    ids=["an empty folder", "a folder with data/"],
)
def test_the_api_makes_no_prefect_home(tmp_path, data_folder):
    """It made ./data/prefect (the command prepared Prefect's home for a temporary server that it
    never starts), and said that it was starting one."""
    folder = tmp_path / "fresh"
    (folder / "data").mkdir(parents=True) if data_folder else folder.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GRAYWAVE_") and key not in {"PREFECT_HOME", "PREFECT_API_URL"}
    }
    port = free_port()
    log = tmp_path / "api.log"
    with log.open("w") as output:
        api = subprocess.Popen(
            [GRAYWAVE, "api", "--port", str(port)], cwd=folder, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200,
            "the API's readiness",
            600,
            [api],
        )
    finally:
        api.terminate()
        api.wait(60)
    assert not (folder / "data" / "prefect").exists(), log.read_text()
    assert "temporary" not in log.read_text()  # it starts no Prefect server, and does not say it does
