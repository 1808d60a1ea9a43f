"""Schemathesis against the live server's OpenAPI document, with every check, for an admin token
and a user token, on the embedded default and on S3 + MongoDB. Bounded in time (``MAX_TIME_S``
each run); the seed is fixed so that a failure reproduces. Expected refusals of schema-valid data
that the document cannot express (random bytes that are not an image...) are in
``schemathesis.toml``, each with its reason.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import SERVER_TIMEOUT_S

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("reprocess_inside_requests")]

MAX_TIME_S = 15
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.mark.parametrize("who", ["admin", "alice"])
def test_the_api_keeps_to_its_openapi_document_under_fuzzing(live_api, who):
    schemathesis = Path(sys.executable).with_name("schemathesis")
    run = subprocess.run(
        [
            str(schemathesis),
            "--config-file",
            str(CONFIG),
            "run",
            f"{live_api.url}/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {live_api.tokens[who]}",
            "--max-time",
            str(MAX_TIME_S),
            "--request-timeout",  # Schemathesis's own is 10 s: a loaded machine exceeded it
            str(SERVER_TIMEOUT_S),
            "--workers",
            "1",
            "--seed",
            "20261125",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=MAX_TIME_S * 8,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "generated" in run.stdout and " 0 passed" not in run.stdout
