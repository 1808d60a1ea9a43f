"""``graywave server start|stop|status`` on a real Prefect server, and other commands finding it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import psutil
import pytest

from graywave.cli.server import STATE_FILE
from graywave.flows.automations import ZOMBIE_AUTOMATION
from graywave.flows.temporary_server import STARTUP_TIMEOUT_S
from tests.helpers import DAY, GRAYWAVE, command_env, free_port, put_uploads, wait_for


def graywave(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRAYWAVE, *arguments], env=env, capture_output=True, text=True, timeout=240)


def listening(port: int) -> psutil.Process:
    """The process that listens on ``port``."""
    found = listening_or_none(port)
    assert found is not None, f"nothing listens on {port}"
    return found


def listening_or_none(port: int) -> psutil.Process | None:
    pids = {c.pid for c in psutil.net_connections("tcp") if c.laddr.port == port and c.status == psutil.CONN_LISTEN}
    [pid] = pids or {None}
    return None if pid is None else psutil.Process(pid)


def pending(process: psutil.Process, sent: signal.Signals) -> bool:
    """Whether ``sent`` waits, undelivered, for the (stopped) process."""
    status = Path(f"/proc/{process.pid}/status").read_text().splitlines()
    shared = next(line for line in status if line.startswith("ShdPnd:"))
    return bool(int(shared.split()[1], 16) & (1 << (sent - 1)))


def gone(process: psutil.Process) -> bool:
    """Whether ``process`` has ended (a zombie that init has not reaped yet has)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# Its first start is on a new home (migrations, the UI's files), which may take graywave's whole
# STARTUP_TIMEOUT_S on a loaded machine, and the second of two starts at once waits for the first: more
# than the suite's 300 s in all.
@pytest.mark.timeout(4 * STARTUP_TIMEOUT_S)
def test_a_managed_local_server_is_used_by_every_command_until_it_stops(settings, phone_files, tmp_path):
    home = tmp_path / "data" / "prefect"  # does not exist yet, as on a fresh checkout
    env = command_env(home)
    put_uploads(settings.blob_url, DAY, phone_files)
    port = free_port()
    # A start killed before its server answered leaves a server that no command uses (until it
    # answers, a command could not reach it); the next start ends it and starts one of its own.
    interrupted = subprocess.Popen(
        [GRAYWAVE, "server", "start", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    state = home / STATE_FILE
    wait_for(state.exists, "the start records its server", 240, [interrupted])
    leftover = psutil.Process(json.loads(state.read_text())["pid"])
    os.killpg(interrupted.pid, signal.SIGKILL)
    interrupted.wait()
    assert json.loads(state.read_text())["ready"] is False and leftover.is_running()
    assert graywave(env, "server", "status").returncode == 1
    # Two at once, each in a process group of its own, as a terminal starts a command (closing the
    # terminal hangs its group up): one starts the server, the other finds it.
    startings = [
        subprocess.Popen(
            [GRAYWAVE, "server", "start", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for _ in range(2)
    ]
    outputs = [starting.communicate(timeout=2 * STARTUP_TIMEOUT_S + 60) for starting in startings]
    stopped = False
    try:
        assert [starting.returncode for starting in startings] == [0, 0], outputs
        [out] = [out for out, _ in outputs if "Prefect server running" in out]
        assert any("already running" in out for out, _ in outputs), outputs
        assert f"http://127.0.0.1:{port}" in out and "graywave server stop" in out
        assert gone(leftover)
        status = graywave(env, "server", "status")
        assert status.returncode == 0 and f"the UI at http://127.0.0.1:{port}" in status.stdout
        automations = httpx.post(f"http://127.0.0.1:{port}/api/automations/filter", json={}, timeout=10).json()
        assert [automation["name"] for automation in automations] == [ZOMBIE_AUTOMATION]  # both installed it
        elsewhere = graywave(env | {"PREFECT_HOME": str(tmp_path / "other")}, "server", "start", "--port", str(port))
        assert elsewhere.returncode == 1 and f"something already answers at http://127.0.0.1:{port}" in elsewhere.stdout

        wave = graywave(env, "wave", "run", "--date", DAY.isoformat(), "--name", "morning")
        assert wave.returncode == 0, wave.stdout + wave.stderr
        assert "temporary" not in wave.stderr  # it found the running server
        runs = httpx.post(f"http://127.0.0.1:{port}/api/flow_runs/filter", json={}, timeout=10).json()
        assert [run["name"] for run in runs] == [f"wave-morning-{DAY}"]  # the run is in the server's UI

        # It outlives the terminal that started it, and its output goes to the log that start named
        # (Prefect's --background left it in the starting command's group, writing into pipes that
        # nobody read once the command ended).
        server = listening(port)
        for starting in startings:
            with contextlib.suppress(ProcessLookupError):  # nothing is left in the group
                os.killpg(starting.pid, signal.SIGHUP)
        assert graywave(env, "server", "status").returncode == 0 and server.is_running()
        [log] = re.findall(r"its log: (\S+)", out)
        assert f"dashboard at http://127.0.0.1:{port}" in Path(log).read_text()

        # A server too busy to answer (here: stopped) still runs: status says that it does not answer,
        # not that none runs, and stop stops it (it said "no local Prefect server was running", exit 1).
        server.suspend()
        status = graywave(env, "server", "status")
        assert status.returncode == 1 and f"(process {server.pid}) does not answer" in status.stdout
        stopping = subprocess.Popen([GRAYWAVE, "server", "stop"], env=env, stdout=subprocess.PIPE, text=True)
        wait_for(lambda: pending(server, signal.SIGTERM), "stop asks the server to end", 120, [stopping])
        server.resume()
        stopped_out, _ = stopping.communicate(timeout=240)
        assert stopping.returncode == 0 and "stopped" in stopped_out
        stopped = gone(server)
        assert stopped
    finally:
        if not stopped:
            graywave(env, "server", "stop")
    after = graywave(env, "server", "status")
    assert after.returncode == 1 and "graywave server start" in after.stdout
    assert graywave(env, "server", "stop").returncode == 1  # nothing was running

    # Hints name the command as the operator can type it: on a fresh checkout graywave is not on
    # the PATH, and "graywave server stop" was a command not found.
    off_path = graywave(env | {"PATH": "/usr/bin:/bin"}, "server", "status")
    assert f"is running: {GRAYWAVE} server start" in off_path.stdout
    on_path = graywave(env | {"PATH": f"{Path(GRAYWAVE).parent}:/usr/bin:/bin"}, "server", "status")
    assert "is running: graywave server start" in on_path.stdout


def test_a_server_that_the_graywave_before_started_is_found_and_stopped(prefect_home):
    """graywave started Prefect's server with ``prefect server start --background`` and recorded only
    its address; after an upgrade, status and stop still find that server (by Prefect's PID file)."""
    env = command_env(prefect_home)
    port = free_port()
    prefect = str(Path(GRAYWAVE).with_name("prefect"))
    background = ["server", "start", "--background", "--host", "127.0.0.1", "--port", str(port), "--analytics-off"]
    started = subprocess.run([prefect, *background], env=env, capture_output=True, text=True, timeout=240)
    assert started.returncode == 0, started.stdout + started.stderr
    (prefect_home / STATE_FILE).write_text(json.dumps({"host": "127.0.0.1", "port": port}))  # its record
    server = None
    try:
        server = wait_for(lambda: listening_or_none(port), "the older graywave's server", 240, [])
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200, "", 240, [])
        status = graywave(env, "server", "status")
        assert status.returncode == 0 and f"the UI at http://127.0.0.1:{port}" in status.stdout
        stopped = graywave(env, "server", "stop")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert gone(server) and not (prefect_home / STATE_FILE).exists()
    finally:
        if server is not None and not gone(server):
            server.kill()


def test_without_a_server_a_command_says_it_starts_a_temporary_one(settings, tmp_path):
    """From a fresh checkout: no data folder, so no PREFECT_HOME folder either (Prefect's temporary
    server could not create its database there, and the command ended in a thousand lines of traceback)."""
    env = command_env(tmp_path / "fresh" / "data" / "prefect")
    done = graywave(env, "analytics", "run", "--date", DAY.isoformat())
    assert done.returncode == 1
    assert f"no images were processed on {DAY}" in done.stdout, done.stdout + done.stderr[-3000:]
    assert "starts a temporary one" in done.stderr and "graywave server start" in done.stderr
    assert "Traceback" not in done.stderr  # the answer is one line, not Prefect's log of an exception

    serve = graywave(env, "serve")  # schedules need a server that outlives the command: no temporary one
    assert serve.returncode == 1 and "graywave serve needs a Prefect server" in serve.stdout
    assert "temporary" not in serve.stderr  # it does not announce the server it then refuses


def test_commands_run_from_another_folder_say_where_they_looked_and_create_nothing(tmp_path):
    """From a folder that is not the deployment's, `graywave status` printed "pending now: 0" and
    "the lake: no commit yet" with exit 0 (an idle system, as far as it said), and the commands
    created ./data/lake/_locks and ./data/prefect there."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAYWAVE_", "PREFECT_HOME", "PREFECT_API_URL"))}

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GRAYWAVE, *arguments], env=env, cwd=elsewhere, capture_output=True, text=True, timeout=240
        )

    status = run("status")
    assert status.returncode == 1, status.stdout
    assert "no graywave data found" in status.stdout and str(elsewhere / "data" / "blobs") in status.stdout
    assert str(elsewhere / "data" / "lake") in status.stdout and "pending now" not in status.stdout
    assert run("server", "status").returncode == 1
    assert run("server", "stop").returncode == 1
    for reading in (("query", "median"), ("query", "weekly", "alice"), ("lake", "history"), ("rejects",)):
        run(*reading)
    assert list(elsewhere.iterdir()) == []  # no data/, no data/prefect, no lake folder


def test_status_names_the_stores_it_read(settings, phone_files):
    put_uploads(settings.blob_url, DAY, phone_files)
    done = subprocess.run([GRAYWAVE, "status"], env=dict(os.environ), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"uploads: {settings.blob_url}; lake: {settings.lake_url}" in done.stdout.replace("\n", "")
