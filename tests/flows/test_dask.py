"""Waves on a real Dask cluster: a `dask scheduler` and two `dask worker` processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pymongo
import pytest
from botocore.exceptions import ClientError
from distributed import Client
from typer.testing import CliRunner

from graywave.cli.main import app
from graywave.config import Settings
from graywave.errors import BackendUnavailable, DeviceUnavailable
from graywave.flows.wave import run_wave_flow
from graywave.records import ImageRecord, RejectRecord
from tests.helpers import (
    DAY,
    EXPECTED_REJECTS,
    GRAYWAVE,
    S3_SECRET_KEY,
    blobs_of,
    free_port,
    lake_of,
    phone_jpeg,
    put_uploads,
)

pytestmark = pytest.mark.slow


@dataclasses.dataclass
class Cluster:
    address: str
    workers: list[subprocess.Popen[bytes]]

    def executed(self) -> dict[str, int]:
        """Tasks each live worker has run. The client is not made this process's default: a wave
        that starts here while it connects would take it for its own (prefect-dask's runner asks
        ``distributed.get_client()`` first) and fail with "No global client found"."""
        with Client(self.address, timeout=10, set_as_default=False) as client:
            return client.run(lambda dask_worker: dask_worker.state.executed_count)


@contextlib.contextmanager
def dask_cluster(worker_env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A scheduler and two single-threaded workers, the workers with ``worker_env`` added to this environment."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).with_name("dask"))
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **quiet
    )
    workers = [
        subprocess.Popen(
            [dask, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"w{k}"],
            env={**os.environ, **(worker_env or {})},
            **quiet,
        )
        for k in range(2)
    ]
    try:
        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
        yield Cluster(address, workers)
    finally:
        for process in [*workers, scheduler]:
            process.kill()
            process.wait(30)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with dask_cluster() as running:
        yield running


def comparable(lake_table, kind) -> list[dict]:
    skip = {"processed_at", "seen_at", "uploaded_at"}  # the uploads of the two runs are two writes
    return sorted(
        ({k: v for k, v in dataclasses.asdict(r).items() if k not in skip} for r in kind.from_arrow(lake_table)),
        key=lambda row: row["source_key"],
    )


def test_a_wave_on_dask_writes_the_rows_and_images_of_the_thread_runner(cluster, phone_files, tmp_path, monkeypatch):
    results = {}
    for runner in ("threads", "dask"):
        monkeypatch.setenv("GRAYWAVE_BLOB_URL", str(tmp_path / runner / "blobs"))
        monkeypatch.setenv("GRAYWAVE_LAKE_URL", str(tmp_path / runner / "lake"))
        monkeypatch.setenv("GRAYWAVE_BATCH_SIZE", "2")
        if runner == "dask":
            monkeypatch.setenv("GRAYWAVE_DASK_ADDRESS", cluster.address)
        settings = Settings()
        keys = put_uploads(settings.blob_url, DAY, phone_files)
        summary = run_wave_flow(settings, DAY, "morning")
        lake = lake_of(settings)
        processed = {
            p.relative_to(tmp_path / runner): p.read_bytes() for p in (tmp_path / runner).rglob("processed/**/*.jpg")
        }
        results[runner] = (
            summary,
            keys,
            comparable(lake.read("images"), ImageRecord),
            comparable(lake.read("rejects"), RejectRecord),
            processed,
        )
    threads, dask = results["threads"], results["dask"]
    assert (dask[0].processed, dask[0].rejected, dask[0].skipped) == (threads[0].processed, threads[0].rejected, 0)
    assert dask[2] == threads[2] and dask[3] == threads[3]  # the same rows, reject reasons included
    assert dask[4] == threads[4]  # the same processed images
    executed = cluster.executed()
    assert sorted(executed.values())[0] >= 1, executed  # both workers ran batches: they were not run here


def test_a_worker_killed_mid_wave_loses_nothing(cluster, settings, monkeypatch):
    monkeypatch.setenv("GRAYWAVE_DASK_ADDRESS", cluster.address)
    monkeypatch.setenv("GRAYWAVE_BATCH_SIZE", "2")
    photo = phone_jpeg(5)
    keys = put_uploads(settings.blob_url, DAY, {f"u{k:02d}/p.jpg": photo for k in range(40)})
    victim = cluster.workers[0]

    def kill_once_working() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if sum(cluster.executed().values()) >= 2:  # batches are done, others in flight
                os.kill(victim.pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_once_working)
    killer.start()
    summary = run_wave_flow(Settings(), DAY, "morning")
    killer.join()
    assert victim.wait(10) == -signal.SIGKILL  # it died during the wave
    assert (summary.processed, summary.rejected) == (40, 0)
    handled = lake_of(settings).read("images").column("source_key").to_pylist()
    assert sorted(handled) == sorted(keys)  # every upload exactly once


def test_gpu_waves_on_workers_without_a_gpu_fail_naming_the_worker_and_record_nothing(
    cluster, settings, phone_files, monkeypatch
):
    """GRAYWAVE_DEVICE=gpu travels with each batch: a worker with no usable GPU refuses it, never
    falling back to its CPU (what a CPU machine can check of one-worker-per-GPU clusters)."""
    monkeypatch.setenv("GRAYWAVE_DASK_ADDRESS", cluster.address)
    monkeypatch.setenv("GRAYWAVE_DEVICE", "gpu")
    put_uploads(settings.blob_url, DAY, phone_files)
    with pytest.raises(DeviceUnavailable) as failure:
        run_wave_flow(Settings(), DAY, "morning")
    assert f"on {socket.gethostname()}: GRAYWAVE_DEVICE=gpu but no CUDA GPU is usable" in str(failure.value)
    assert sum(cluster.executed().values()) >= 1  # refused on the workers, not here
    assert lake_of(settings).files("images") == [] and lake_of(settings).files("rejects") == []
    assert list(Path(settings.blob_url).rglob("processed/**/*.jpg")) == []


def test_an_unreachable_scheduler_fails_the_wave_at_once_and_records_nothing(settings, phone_files, monkeypatch):
    address = f"tcp://127.0.0.1:{free_port()}"
    monkeypatch.setenv("GRAYWAVE_DASK_ADDRESS", address)
    put_uploads(settings.blob_url, DAY, phone_files)
    result = CliRunner().invoke(app, ["wave", "run", "--date", str(DAY), "--name", "morning"])
    assert result.exit_code == 1
    assert "the wave could not run" in result.output and address in result.output
    assert lake_of(settings).files("images") == [] and lake_of(settings).files("rejects") == []


WRONG_KEY_ID = "AKIAWRONGWRONGWRONG0"


def test_workers_that_cannot_read_the_blob_store_fail_the_wave_naming_it_and_record_nothing(
    local_s3, mongodb_uri, phone_files, monkeypatch
):
    """SeaweedFS takes only this session's key (``AWS_ACCESS_KEY_ID``): the workers are given another."""
    bucket = local_s3.new_bucket()
    for name, value in {
        "BLOB_URL": f"s3://{bucket}/blobs",
        "LAKE_URL": f"s3://{bucket}/lake",
        "S3_ENDPOINT_URL": local_s3.endpoint,
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DATABASE": f"graywave_{uuid.uuid4().hex[:8]}",
        "BATCH_SIZE": "2",
        "DEVICE": "cpu",
    }.items():
        monkeypatch.setenv(f"GRAYWAVE_{name}", value)
    settings = Settings()
    wrong = boto3.client(
        "s3", endpoint_url=local_s3.endpoint, aws_access_key_id=WRONG_KEY_ID, aws_secret_access_key=S3_SECRET_KEY
    )
    with pytest.raises(ClientError, match="Forbidden"):  # the server checks the key ...
        wrong.head_bucket(Bucket=bucket)
    keys = put_uploads(blobs_of(settings), DAY, phone_files)  # ... and takes the right one

    with dask_cluster({"AWS_ACCESS_KEY_ID": WRONG_KEY_ID}) as cluster:
        monkeypatch.setenv("GRAYWAVE_DASK_ADDRESS", cluster.address)
        with pytest.raises(BackendUnavailable) as failure:
            run_wave_flow(Settings(), DAY, "morning")
        # The batches did run on the workers, and failed there. The wave fails at the first failed
        # batch; the other worker's may still be finishing (a loaded machine): wait for it.
        deadline = time.monotonic() + 60
        while sum(cluster.executed().values()) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sum(cluster.executed().values()) >= 2
    assert f"s3://{bucket}/blobs" in str(failure.value)  # the message names the store
    assert "403" in str(failure.value) or "Forbidden" in str(failure.value)
    assert f"on {socket.gethostname()}: S3 refused" in str(failure.value)  # which machine, and what to check
    assert "check its AWS credentials" in str(failure.value)

    lake = lake_of(settings)
    assert lake.files("images") == [] and lake.files("rejects") == []  # no upload rejected for the credentials
    assert list(blobs_of(settings).list("processed/")) == []
    with pymongo.MongoClient(mongodb_uri) as mongodb:
        assert mongodb[settings.mongodb_database]["images"].count_documents({}) == 0

    monkeypatch.delenv("GRAYWAVE_DASK_ADDRESS")  # the same uploads on this process, with the right key
    summary = run_wave_flow(Settings(), DAY, "morning")
    assert (summary.processed, summary.rejected, summary.skipped) == (7, len(EXPECTED_REJECTS), 0)
    handled = [row["source_key"] for table in ("images", "rejects") for row in lake.read(table).to_pylist()]
    assert sorted(handled) == sorted(keys)  # every upload exactly once


def test_a_wave_on_a_local_dask_cluster_is_quiet_and_serves_no_dashboard(
    settings, phone_files, tmp_path, prefect_server
):
    """The prober found it: GRAYWAVE_DASK_WORKERS=2 printed about 45 lines of distributed's INFO, a
    warning when port 8787 was taken, and a dashboard nobody asked for. On the test process's Prefect
    server: graywave's temporary one (seconds of CPU) is the subject of the signal and demo tests."""
    from tests.helpers import DAY, put_uploads

    put_uploads(settings.blob_url, DAY, {k: v for k, v in phone_files.items() if k.startswith("ann/")})
    taken = socket.socket()  # another wave's dashboard port, say
    taken.bind(("127.0.0.1", 8787)) if not _in_use(8787) else None
    env = os.environ | {
        "GRAYWAVE_DASK_WORKERS": "2",
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": prefect_server,
    }
    command = [GRAYWAVE, "wave", "run", "--date", DAY.isoformat()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=False)
    taken.close()
    # Prefect's "View at http://127.0.0.1:<port>/..." lines: the server's port (8000 to 8999) may be 8787.
    output = (done.stdout + done.stderr).replace(prefect_server.removesuffix("/api"), "<the Prefect server>")
    assert done.returncode == 0, output
    assert "2 processed" in done.stdout
    assert "distributed." not in output and "8787" not in output and "dashboard" not in output.lower()


def _in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_the_local_clusters_stop_warning_is_left_out_and_the_nannys_other_warnings_stay():
    """Beside a CPU hog a worker took over 4 s to stop at the wave's end, and the wave's output
    carried distributed's "still alive after 4.0 seconds, killing"."""
    import logging

    from graywave.flows.dask_workers import WORKERS_STOPPED

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("distributed.nanny", logging.WARNING, __file__, 1, message, None, None)

    assert not WORKERS_STOPPED.filter(record("Worker process still alive after 4.0 seconds, killing"))
    assert WORKERS_STOPPED.filter(record("Worker exceeded 95% memory budget. Restarting..."))


@pytest.mark.parametrize(
    ("where", "registered"), [({"dask_workers": 2}, ["QuietAtTheEnd"]), ({"dask_address": "tcp://10.0.0.9:8786"}, [])]
)
def test_the_wave_registers_the_quiet_plugin_on_its_own_local_cluster_only(monkeypatch, where, registered):
    from types import SimpleNamespace

    import graywave.flows.wave as wave_module

    plugins: list[str] = []
    client = SimpleNamespace(
        nthreads=lambda: {"tcp://127.0.0.1:1": 1, "tcp://127.0.0.1:2": 1},
        register_plugin=lambda plugin: plugins.append(type(plugin).__name__),
    )
    context = SimpleNamespace(task_runner=SimpleNamespace(client=client))
    monkeypatch.setattr(wave_module.FlowRunContext, "get", classmethod(lambda cls: context))
    assert wave_module._on_the_cluster(Settings(**where)).workers == 2
    assert plugins == registered


def test_the_local_clusters_workers_leave_out_a_heartbeat_that_found_the_scheduler_gone_and_keep_other_errors():
    """A local-cluster wave's output once ended with a worker's "Failed to communicate with scheduler
    during heartbeat." and its traceback: the cluster had retired that worker at the wave's end.
    The plugin the wave registers on its local cluster's workers installs the filter there."""
    import logging

    from graywave.flows.dask_workers import HEARTBEAT_LOST, QuietAtTheEnd

    worker_log = logging.getLogger("distributed.worker")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    worker_log.addHandler(handler)
    try:
        QuietAtTheEnd().setup(worker=None)
        worker_log.error("Failed to communicate with scheduler during heartbeat.")
        worker_log.error("Compute Failed")
    finally:
        worker_log.removeHandler(handler)
        worker_log.removeFilter(HEARTBEAT_LOST)
    assert seen == ["Compute Failed"]
