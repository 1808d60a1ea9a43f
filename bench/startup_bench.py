"""Start-up of graywave's commands (``make bench``), as ratios against baselines measured
in the same run, on the same machine:

1. an empty ``graywave wave run`` (nothing pending) against a running local Prefect server
   (``graywave server start``), against a trivial one-task Prefect flow run against the same server
   (target: within 1.3x);
2. ``graywave query median`` against ``python -c "import polars, pyarrow.parquet"`` (target: within
   2x; a query needs no Prefect);
3. for reference, the empty wave without a server (Prefect's temporary server, started per command),
   and the libraries a query is built on, imported alone, against the same baseline.

Each figure is the median of ``RUNS`` runs of a fresh process. A command and its baseline run in
turns (baseline, command, command, baseline, ...), so that a slower minute of this shared machine
weighs on both sides of a ratio alike.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from api_bench import deployment_env, free_port

from graywave.config import Settings
from graywave.service.samples import encode, synthetic_photo
from graywave.service.wave import run_wave
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.layout import upload_key

RUNS = 7
OUT = Path(__file__).with_name("out")
BIN = Path(sys.executable).parent
TRIVIAL_FLOW = """
from prefect import flow, task

@task
def one() -> int:
    return 1

@flow
def trivial() -> int:
    return one()

trivial()
"""

QUERY_LIBRARIES = (
    "import polars, pyarrow.compute, pyarrow.fs, deltalake, pydantic_settings, typer, rich.console, rich.table"
)
"""What a query imports, graywave aside (found with ``python -X importtime``; the Delta lake's reader
``deltalake`` in place of ``pyarrow.dataset``): its floor within this design."""


def once(command: list[str], env: dict[str, str]) -> float:
    """Seconds of one run of ``command`` (which must succeed)."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
    return seconds


def timed(command: list[str], env: dict[str, str]) -> float:
    """Median seconds of ``RUNS`` runs of ``command``."""
    return statistics.median(once(command, env) for _ in range(RUNS))


def in_turns(
    baseline: tuple[list[str], dict[str, str]], command: tuple[list[str], dict[str, str]]
) -> tuple[float, float]:
    """Median seconds of ``RUNS`` runs of each, in turns: (baseline, command)."""
    seconds: dict[int, list[float]] = {0: [], 1: []}
    for k in range(RUNS):
        order = (0, 1) if k % 2 == 0 else (1, 0)
        for side in order:
            seconds[side].append(once(*(baseline, command)[side]))
    return statistics.median(seconds[0]), statistics.median(seconds[1])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = deployment_env(tmp, GRAYWAVE_DEVICE="cpu", DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
        env.pop("PREFECT_API_URL", None)  # the commands find the local server by themselves
        Path(f"{tmp}/blobs").mkdir()
        settings = Settings(blob_url=env["GRAYWAVE_BLOB_URL"], lake_url=env["GRAYWAVE_LAKE_URL"], device="cpu")
        day = settings.today()
        store = LocalBlobStore(settings.blob_url)
        for k in range(20):  # one day in the lake, for the query; nothing left pending for the wave
            store.write(upload_key(day, f"user{k}", "a.jpg"), encode(synthetic_photo(64, 48, seed=k), "JPEG"), "")
        run_wave(settings, day, "morning", log=lambda _: None)
        script = Path(tmp, "trivial_flow.py")
        script.write_text(TRIVIAL_FLOW)
        graywave, python = str(BIN / "graywave"), str(BIN / "python")

        without_server = timed([graywave, "wave", "run"], env)
        port = free_port()
        started = subprocess.run([graywave, "server", "start", "--port", str(port)], env=env, capture_output=True)
        assert started.returncode == 0, started
        try:
            served = env | {"PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
            # graywave finds the running server itself
            trivial, wave = in_turns(([python, str(script)], served), ([graywave, "wave", "run"], env))
        finally:
            subprocess.run([graywave, "server", "stop"], env=env, capture_output=True)
        imports, query = in_turns(
            ([python, "-c", "import polars, pyarrow.parquet"], env), ([graywave, "query", "median"], env)
        )
        # The floor under the query: the libraries it is built on, imported alone (plugin search off, as the CLI).
        floor_env = env | {"PYDANTIC_DISABLE_PLUGINS": "__all__"}
        floor_imports, floor = in_turns(
            ([python, "-c", "import polars, pyarrow.parquet"], floor_env), ([python, "-c", QUERY_LIBRARIES], floor_env)
        )
        shutil.rmtree(f"{tmp}/prefect", ignore_errors=True)

    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; medians of {RUNS} runs of a fresh process.",
        "",
        "| command | seconds | baseline (same run) | seconds | ratio | target |",
        "|---|---|---|---|---|---|",
        f"| empty `graywave wave run`, local server running | {wave:.2f} | one-task Prefect flow, same server "
        f"| {trivial:.2f} | **{wave / trivial:.2f}x** | ≤ 1.3x |",
        f'| `graywave query median` | {query:.2f} | `python -c "import polars, pyarrow.parquet"` '
        f"| {imports:.2f} | **{query / imports:.2f}x** | ≤ 2x |",
        f"| empty `graywave wave run`, no server (a temporary one) | {without_server:.2f} | | | | |",
        f"| for reference: the query's libraries imported alone | {floor:.2f} | the same imports "
        f"| {floor_imports:.2f} | {floor / floor_imports:.2f}x | |",
    ]
    OUT.mkdir(exist_ok=True)
    (OUT / "startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
