"""A wave killed with SIGKILL at any point, then run again, ends with every upload exactly once."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from graywave.config import Settings
from graywave.service.wave import run_wave
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.lake import Lake
from tests.helpers import DAY, GRAYWAVE, flow_run_states, phone_jpeg, put_uploads

pytestmark = pytest.mark.slow


def lake_files(lake: Path) -> int:
    return sum(1 for _ in lake.rglob("*.parquet")) if lake.exists() else 0


def wave_env(home: Path, blobs: Path, lake: Path, per_batch: int, api_url: str | None) -> dict[str, str]:
    """The environment of a ``graywave wave run`` subprocess: ``per_batch`` workers, uploads per
    batch and rows per lake file, the Prefect home ``home``, and the Prefect server at ``api_url``;
    with none, the command starts a temporary one, whose database then holds this command's runs only."""
    env = os.environ | {
        "GRAYWAVE_BLOB_URL": str(blobs),
        "GRAYWAVE_LAKE_URL": str(lake),
        "GRAYWAVE_WORKERS": str(per_batch),
        "GRAYWAVE_BATCH_SIZE": str(per_batch),
        "GRAYWAVE_LAKE_FLUSH_ROWS": str(per_batch),
        "GRAYWAVE_DEVICE": "cpu",
        "PREFECT_HOME": str(home),
    }
    if api_url is None:
        env.pop("PREFECT_API_URL", None)
    else:
        env["PREFECT_API_URL"] = api_url
    return env


def run_in_background(command: list[str], env: dict[str, str], output: Path) -> subprocess.Popen:
    """``command`` in a process group of its own, its output into the file ``output``: a pipe that
    nobody reads while it runs fills up (64 KiB of log lines and tracebacks, its temporary Prefect
    server's included), and blocks the wave and its server at their next write."""
    with output.open("a") as log:
        return subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def start_wave(env: dict[str, str]) -> subprocess.Popen:
    output = Path(env["PREFECT_HOME"]).parent / "wave.log"
    return run_in_background([GRAYWAVE, "wave", "run", "--date", DAY.isoformat(), "--name", "morning"], env, output)


def kill_after_new_lake_files(env: dict[str, str], lake: Path, new_files: int) -> None:
    """Start a wave and SIGKILL it as soon as it has appended ``new_files`` more lake files."""
    start = lake_files(lake)
    process = start_wave(env)
    deadline = time.monotonic() + 120
    while lake_files(lake) < start + new_files:
        assert process.poll() is None, (
            "the wave ended before it could be killed:\n"
            + Path(env["PREFECT_HOME"]).parent.joinpath("wave.log").read_text()[-5000:]
        )
        assert time.monotonic() < deadline, "the wave made no progress"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)  # the wave and anything it started, as in a machine crash
    process.wait()


def test_killed_waves_converge_to_exactly_once(tmp_path, prefect_server):
    """On the session's Prefect server, as a deployment's waves run on ``graywave server``'s: the
    temporary server of each command (seconds of CPU each) is the signal tests' subject, below."""
    blobs, lake = tmp_path / "blobs", tmp_path / "lake"
    files = {f"user{i:02d}/IMG_{i}.jpg": phone_jpeg(i) for i in range(36)}
    files |= {f"user{i:02d}/broken.jpg": b"\xff\xd8\xff\xe0 broken" for i in range(4)}
    keys = put_uploads(blobs, DAY, files)
    env = wave_env(tmp_path / "prefect", blobs, lake, per_batch=2, api_url=prefect_server)

    kill_after_new_lake_files(env, lake, 1)
    kill_after_new_lake_files(env, lake, 4)
    assert 0 < len(Lake(LocalBlobStore(lake)).read("images")) < 36, "the kills should leave a partly processed wave"

    final = subprocess.run(
        [GRAYWAVE, "wave", "run", "--date", DAY.isoformat(), "--name", "morning"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert final.returncode == 0, final.stdout + final.stderr
    assert "rejected" in final.stdout

    images = Lake(LocalBlobStore(lake)).read("images").to_pylist()
    rejects = Lake(LocalBlobStore(lake)).read("rejects").to_pylist()
    assert sorted(r["source_key"] for r in images + rejects) == sorted(keys)
    assert len(rejects) == 4
    assert {r["reason"] for r in rejects} <= {"corrupt", "truncated"}
    store = LocalBlobStore(blobs)
    for row in images:
        assert len(store.read(row["processed_key"])) == row["processed_bytes"]
    assert len({r["image_id"] for r in images}) == 36


@pytest.mark.parametrize("when", ["while it collects", "while it processes"])
def test_a_wave_ends_within_30_s_of_sigterm_and_a_rerun_handles_everything_once(tmp_path, when, prefect_server):
    """What a supervisor (systemd, Kubernetes) does to stop a wave: SIGTERM to its process, whose runs
    are on a Prefect server (the session's)."""
    blobs, lake = tmp_path / "blobs", tmp_path / "lake"
    count = 4 if when == "while it collects" else 24
    files = {f"user{i:02d}/IMG_{i}.jpg": phone_jpeg(i) for i in range(count)}
    keys = put_uploads(blobs, DAY, files)
    env = wave_env(tmp_path / "prefect", blobs, lake, per_batch=1, api_url=prefect_server)
    output = tmp_path / "wave.log"
    process = run_in_background([GRAYWAVE, "wave", "run", "--date", DAY.isoformat(), "--settle", "600"], env, output)
    try:
        target = count if when == "while it collects" else 2  # all recorded, or a round under way
        deadline = time.monotonic() + 120
        while lake_files(lake) < target:
            assert process.poll() is None, output.read_text()[-5000:]
            assert time.monotonic() < deadline, "the wave made no progress"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)  # a TimeoutExpired here is the failure: the wave did not end
    finally:
        with contextlib.suppress(ProcessLookupError):  # anything of its group left
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode != 0  # it stopped; it did not finish
    settings = Settings(blob_url=str(blobs), lake_url=str(lake), device="cpu")
    run_wave(settings, DAY, "evening", log=lambda _: None)  # the lock was released
    images = Lake(LocalBlobStore(lake)).read("images").column("source_key").to_pylist()
    assert sorted(images) == sorted(keys)


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_to_the_waves_process_group_ends_it_within_30_s_with_its_run_in_a_final_state(
    tmp_path, prefect_home, signum
):
    """`timeout`, cron, systemd's default KillMode and a Ctrl-C signal the whole process group,
    Prefect's temporary server included: the wave's client then retried against a dead server for
    144 s and its run stayed Running. The temporary server is graywave's now, out of the group."""
    blobs, lake = tmp_path / "blobs", tmp_path / "lake"
    files = {f"user{i:02d}/IMG_{i}.jpg": phone_jpeg(i) for i in range(24)}
    keys = put_uploads(blobs, DAY, files)
    env = wave_env(prefect_home, blobs, lake, per_batch=1, api_url=None)  # graywave's temporary server
    log = tmp_path / "wave.log"
    process = run_in_background([GRAYWAVE, "wave", "run", "--date", DAY.isoformat(), "--settle", "600"], env, log)
    try:
        deadline = time.monotonic() + 240
        while lake_files(lake) < 2:  # a round under way
            assert process.poll() is None, log.read_text()[-5000:]
            assert time.monotonic() < deadline, "the wave made no progress"
            time.sleep(0.05)
        servers = children_of(process.pid)
        signalled = time.monotonic()
        os.killpg(process.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):  # the failure is said below, with its output
            process.wait(timeout=60)
        exited_s = time.monotonic() - signalled
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    output = log.read_text()
    print(f"{signal.Signals(signum).name} to the group: the wave exited in {exited_s:.1f} s")
    assert exited_s < 30, output[-3000:]
    assert process.returncode != 0  # it stopped; it did not finish
    assert servers, "the wave's temporary Prefect server"
    stopping = time.monotonic() + 120  # the wave exits within 30 s; its server may take longer beside a CPU hog
    while any(alive(pid) for pid in servers):  # it stops with the wave, though the signal missed it
        assert time.monotonic() < stopping, "the temporary server outlived the wave"
        time.sleep(0.2)
    assert flow_run_states(Path(env["PREFECT_HOME"])) == [(f"wave-manual-{DAY}", "CRASHED")], output[-3000:]
    settings = Settings(blob_url=str(blobs), lake_url=str(lake), device="cpu")
    run_wave(settings, DAY, "evening", log=lambda _: None)
    images = Lake(LocalBlobStore(lake)).read("images").column("source_key").to_pylist()
    assert sorted(images) == sorted(keys)  # every upload once: nothing lost, nothing twice
