"""Every command that runs a flow runs it on ``PREFECT_API_URL`` or on graywave's temporary Prefect
server (``flows.temporary_server``), never on Prefect's own: a signal to the command's process group
(Ctrl-C, ``timeout``, cron, systemd's default KillMode) reached Prefect's server too, and the command
then hung for 144 s, its run left ``Running``."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.flows.test_interrupted import alive, children_of, run_in_background
from tests.helpers import DAY, GRAYWAVE, append_images, command_env, flow_run_states, image_record, lake_of

pytestmark = pytest.mark.slow


def flow_run_state(prefect_home: Path) -> str | None:
    """The state type of the one flow run in the database under ``prefect_home``, if it is there yet."""
    try:
        states = flow_run_states(prefect_home)
    except sqlite3.Error:  # busy: the server is writing it
        return None
    return states[0][1] if states else None


def test_a_signal_to_the_analytics_process_group_ends_it_within_30_s_with_its_run_crashed(
    settings, tmp_path, prefect_home
):
    users = 40_000  # the similar users of so many take seconds: the signal lands while the run computes
    rng = np.random.default_rng(7)
    histograms = rng.integers(0, 100, size=(users, 16))
    records = [image_record(user=f"u{i:05d}", histogram=tuple(map(int, h))) for i, h in enumerate(histograms)]
    append_images(lake_of(settings), DAY, "morning", records)
    env = command_env(prefect_home)
    log = tmp_path / "analytics.log"
    process = run_in_background([GRAYWAVE, "analytics", "run", "--date", DAY.isoformat()], env, log)
    try:
        deadline = time.monotonic() + 240
        while flow_run_state(Path(env["PREFECT_HOME"])) != "RUNNING":
            assert process.poll() is None, log.read_text()[-5000:]
            assert time.monotonic() < deadline, "the analytics run did not start"
            time.sleep(0.05)
        servers = children_of(process.pid)
        signalled = time.monotonic()
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):  # the failure is said below, with its output
            process.wait(timeout=60)
        exited_s = time.monotonic() - signalled
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    output = log.read_text()
    print(f"SIGTERM to the group: the analytics exited in {exited_s:.1f} s")
    assert exited_s < 30, output[-3000:]
    assert process.returncode != 0, output[-3000:]  # it stopped; it did not finish
    assert servers, "the command's temporary Prefect server"
    stopping = time.monotonic() + 30
    while any(alive(pid) for pid in servers):  # it stops with the command, though the signal missed it
        assert time.monotonic() < stopping, "the temporary server outlived the command"
        time.sleep(0.2)
    assert flow_run_states(Path(env["PREFECT_HOME"])) == [(f"analytics-{DAY}", "CRASHED")], output[-3000:]
    assert lake_of(settings).read("daily_median", [DAY]).num_rows == 0  # stopped before it recorded anything


def test_commands_that_run_flows_run_them_on_graywaves_temporary_server(settings, prefect_home):
    """With Prefect's own temporary server refused (PREFECT_SERVER_EPHEMERAL_ENABLED=false), a flow
    run outside ``flows.temporary_server.prefect_api`` fails: "No Prefect API URL provided". The demo
    is run so in ``tests/cli/test_demo.py``."""
    append_images(lake_of(settings), DAY, "morning", [image_record(user="alice")])
    env = command_env(prefect_home, PREFECT_SERVER_EPHEMERAL_ENABLED="false")
    done = subprocess.run([GRAYWAVE, "lake", "optimize", "--all"], env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert flow_run_states(Path(env["PREFECT_HOME"])) == [("lake-maintenance", "COMPLETED")]
