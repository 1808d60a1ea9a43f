"""The snippets of docs/data.md that read the lake (Polars, DuckDB, pyarrow) run as they are, in a process of
their own, on a local lake and on an S3 one (SeaweedFS, with the endpoint setting)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from graywave.storage.blobs import LocalBlobStore
from graywave.storage.lake import Lake
from graywave.storage.s3 import S3BlobStore
from tests.helpers import append_images, append_rejects, image_record, reject_record

DATA_DOC = Path(__file__).parents[2] / "docs" / "data.md"
PROGRESS_BAR = re.compile(r"\d+%\s*▕[^▏]*▏(\s*\([^)]*elapsed\))?")
"""DuckDB's progress bar, which it prints to stdout (not a terminal's only) once a query has run 2 s: under load."""


def snippets() -> dict[str, str]:
    found = dict(re.findall(r"<!-- lake-readers: (\w+) -->\n```python\n(.*?)```", DATA_DOC.read_text(), re.S))
    assert set(found) == {"polars", "duckdb", "pyarrow"}, found.keys()
    return found


@pytest.fixture(params=["local", "s3"])
def lake_env(request, tmp_path) -> dict[str, str]:
    """A lake like a day of waves writes (two images of 2026-11-25 after a MERGE and a delete, so its
    files hold string_view columns), and the environment that points a reader at it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAYWAVE_")}
    if request.param == "local":
        url = str(tmp_path / "lake")
        lake = Lake(LocalBlobStore(url))
    else:
        s3 = request.getfixturevalue("local_s3")
        url = f"s3://{s3.new_bucket()}/lake"
        lake = Lake(S3BlobStore(url, endpoint_url=s3.endpoint))
        env["GRAYWAVE_S3_ENDPOINT_URL"] = s3.endpoint
    day = date(2026, 11, 25)
    append_images(lake, day, "morning", [image_record(f"k{k}", f"u{k}") for k in range(3)])
    from graywave.storage.lake import CommitInfo

    lake.delete("images", {"source_key": ["k2"]}, info=CommitInfo("delete"))
    append_rejects(lake, day, "morning", [reject_record("r1")])
    env["GRAYWAVE_LAKE_URL"] = url
    return env


@pytest.mark.parametrize("reader", ["polars", "duckdb", "pyarrow"])
def test_the_data_docs_lake_readers_run(reader, lake_env, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", snippets()[reader]],
        env=lake_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    expected = {"polars": ["2", "1"], "duckdb": ["2"], "pyarrow": ["2", "2", "DELETE"]}[reader]
    assert PROGRESS_BAR.sub("", done.stdout).split() == expected
