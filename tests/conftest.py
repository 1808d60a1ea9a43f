"""Test set-up: Prefect's state in a temporary folder, no telemetry, and helpers to make uploads."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from prefect.server.api.server import SubprocessASGIServer

_PREFECT_HOME = tempfile.mkdtemp(prefix="graywave-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)  # registered first: it runs after Prefect's own
os.environ.pop("PREFECT_API_URL", None)
PREFECT_STARTUP_S = 600
"""How long any Prefect server of the tests may take to start: never Prefect's default (20 s), which a
loaded machine exceeded ("Timed out while attempting to connect to ephemeral Prefect API server").
Set for this process's temporary server and for every command the tests start."""
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = str(PREFECT_STARTUP_S)
# graywave uses no Prefect blocks. A server registers every block type in its database as it starts,
# unless its home's memo says this database already has them; each test home is a new database, so
# every server of the tests did it again: 0.6 of a start's 4.5 CPU-seconds (CONTRIBUTING.md). A block
# that a test saves (the runbook's notification block) registers its own type.
os.environ["PREFECT_SERVER_REGISTER_BLOCKS_ON_START"] = "false"

from tests.helpers import GRPC_PORT_OFFSET, S3_ACCESS_KEY, S3_SECRET_KEY, free_port, free_port_pair  # noqa: E402

# The S3 server's one identity in AWS_*: it also keeps boto3 away from real credentials.
os.environ.update(AWS_ACCESS_KEY_ID=S3_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET_KEY, AWS_DEFAULT_REGION="us-east-1")
for _key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
    os.environ.pop(_key, None)

from graywave.config import Settings, prepare_prefect_environment  # noqa: E402

prepare_prefect_environment(Settings())

# A command started in the background by a shell without job control (`make test &`, nohup, some CI
# runners) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the tests
# of Ctrl-C, in this process and in the commands it starts, would send it to processes deaf to it.
# They get the disposition of a start from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The GPU kernels under numba-cuda's simulator need a process of their own (NUMBA_ENABLE_CUDASIM=1
# replaces numba.cuda for the whole process): ``make test`` runs that folder beside this run.
collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["kernels/gpu_sim"]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty embedded deployment (blob folder and lake) that ``Settings()`` points at."""
    (tmp_path / "blobs").mkdir()  # the upload folder exists (a wave fails on one that does not)
    monkeypatch.setenv("GRAYWAVE_BLOB_URL", str(tmp_path / "blobs"))
    monkeypatch.setenv("GRAYWAVE_LAKE_URL", str(tmp_path / "lake"))
    monkeypatch.setenv("GRAYWAVE_WORKERS", "2")
    monkeypatch.setenv("GRAYWAVE_DEVICE", "cpu")
    yield tmp_path


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return Settings()


@pytest.fixture(autouse=True)
def _signal_handlers_kept() -> Iterator[None]:
    """A test leaves SIGINT's and SIGTERM's handlers as it found them (it fails otherwise): later
    tests in the same process signal it and count on them. Prefect's ``Runner``, for one, installs
    its own SIGTERM handler when it starts."""
    found = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    left = {signum: signal.getsignal(signum) for signum in found}
    changed = [signal.Signals(signum).name for signum in found if left[signum] != found[signum]]
    for signum, handler in found.items():
        if handler is not None:  # None: installed by C code, which Python cannot set again
            signal.signal(signum, handler)
    assert not changed, f"the test left its own handlers of {', '.join(changed)} installed"


@pytest.fixture(scope="session", autouse=True)
def _one_prefect_server_per_process(prefect_homes: PrefectHomes) -> Iterator[None]:
    """graywave's commands run inside a test process (``flows.temporary_server.prefect_api``: the CLI
    through Typer's runner, ``run_wave_flow``) run their flows on the process's one Prefect server
    (``PrefectHomes.process_server``), the one Prefect's own flows and ``prefect_server`` use, instead
    of starting graywave's temporary server beside it: a second server per process cost 12
    CPU-seconds to start and one a minute idle. The commands that the tests start as processes still
    start graywave's temporary server, which ``tests/cli/test_signalled_commands.py`` and
    ``tests/flows/test_interrupted.py`` test. The process's own Prefect home gets a copy of the
    migrated database first (``PrefectHomes``)."""
    from graywave.flows import temporary_server

    # Whichever use starts the process's server, it starts on a migrated database: Prefect's own
    # client starts it in this process's home when a test runs a flow with no PREFECT_API_URL.
    prefect_homes.copy_into(Path(_PREFECT_HOME))

    class ProcessPrefectServer(temporary_server.TemporaryServer):
        def start(self, timeout_s: float = PREFECT_STARTUP_S) -> None:
            server = prefect_homes.process_server()
            self.port, self.process = server.port, server.server_process

        def stop(self) -> None:  # Prefect stops it at exit
            self.process = None

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(temporary_server, "TemporaryServer", ProcessPrefectServer)
        yield


@pytest.fixture(scope="session", autouse=True)
def _quiet_prefect_shutdown() -> Iterator[None]:
    """Prefect's temporary server logs as it stops at exit, after pytest has closed the streams."""
    yield
    logging.raiseExceptions = False


class LocalS3:
    """SeaweedFS (``weed mini``: master, volume, filer, S3 gateway and admin in one process) on
    127.0.0.1, with S3 credentials enforced; it can be stopped and restarted on the same data."""

    startup_deadline_s = 120.0  # a loaded machine: never a default timeout
    stop_deadline_s = 60.0

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log = folder / "weed.log"
        ports: set[int] = set()
        while len(ports) < 5:
            ports.add(free_port_pair())
        self.port, master, volume, filer, admin = self._ports = tuple(ports)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.startup_s: float | None = None
        (folder / "data").mkdir(exist_ok=True)
        identity = {
            "name": "graywave-test",
            "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        (folder / "s3.json").write_text(json.dumps({"identities": [identity]}))
        self.command = [
            str(Path(sys.executable).with_name("weed")),
            "-logtostderr",  # into weed.log, not glog's files in /tmp
            "mini",
            f"-dir={folder / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            f"-s3.port={self.port}",
            f"-admin.port={admin}",
            f"-s3.config={folder / 's3.json'}",
            "-s3.autoCreateBucket=false",  # as S3: a write to a missing bucket is NoSuchBucket
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={folder / 's3.sock'}",
            f"-filer.localSocket={folder / 'filer.sock'}",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-volume.max=1000",  # one volume per bucket: not a count guessed from the free disk space
        ]
        # Only the identity of s3.json: weed would also make an admin of AWS_ACCESS_KEY_ID (a test may change it).
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self._process: subprocess.Popen[bytes] | None = None
        self.canary_bucket = "graywave-canary"
        self._canary_written = False

    def start(self) -> None:
        """Start weed (on the same ports and data as before, if it ran) and wait until it serves objects."""
        began = time.monotonic()
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,  # its own process group: stop() ends all of it
            )
        self._wait_until_ready(began + self.startup_deadline_s)
        self.startup_s = time.monotonic() - began

    def _wait_until_ready(self, deadline: float) -> None:
        """Poll until the canary object reads back (written at the first start): S3 answers our
        credentials, and the filer finds the volume server's volumes through the master (after a
        restart the S3 port answers well before that)."""
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        assert self._process is not None
        probe = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}),
        )
        while True:
            if self._process.poll() is not None:
                pytest.fail(f"weed mini exited with {self._process.returncode}:\n{self.log.read_text()[-20000:]}")
            try:
                if not self._canary_written:
                    with contextlib.suppress(probe.exceptions.BucketAlreadyOwnedByYou):  # a try that timed out
                        probe.create_bucket(Bucket=self.canary_bucket)
                    probe.put_object(Bucket=self.canary_bucket, Key="canary", Body=b"ready")
                    self._canary_written = True
                if probe.get_object(Bucket=self.canary_bucket, Key="canary")["Body"].read() == b"ready":
                    return
            except (BotoCoreError, ClientError) as error:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"SeaweedFS's S3 was not ready in time ({error}):\n{self.log.read_text()[-20000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM to weed's process group (it flushes and shuts its components down), SIGKILL if it hangs."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(self.stop_deadline_s)
        with contextlib.suppress(ProcessLookupError):  # a hung weed, or anything of its group left
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for port in self._ports:  # weed's gRPC sockets in /tmp, which it does not always remove
            for stale in Path("/tmp").glob(f"seaweedfs-*-{port + GRPC_PORT_OFFSET}.sock"):
                stale.unlink(missing_ok=True)

    def new_bucket(self) -> str:
        import boto3

        name = f"graywave-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    server = LocalS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongodb_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``GRAYWAVE_TEST_MONGODB_URI`` (a real MongoDB), or a SecantusDB server started on 127.0.0.1."""
    configured = os.environ.get("GRAYWAVE_TEST_MONGODB_URI")
    if configured:
        yield configured
        return
    import pymongo

    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("secantusd-py")),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "WARNING",
            "--storage-path",
            str(tmp_path_factory.mktemp("secantus")),
            "--enable-test-commands",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    deadline = time.monotonic() + 60
    while True:
        try:
            pymongo.MongoClient(uri, serverSelectionTimeoutMS=500).admin.command("ping")
            break
        except pymongo.errors.PyMongoError:
            assert server.poll() is None and time.monotonic() < deadline, "SecantusDB did not start"
            time.sleep(0.2)
    yield uri
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def s3_settings(local_s3: LocalS3, mongodb_uri: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The production architecture: blobs and lake in a new S3 bucket, images in a new MongoDB database."""
    bucket = local_s3.new_bucket()
    monkeypatch.setenv("GRAYWAVE_BLOB_URL", f"s3://{bucket}/blobs")
    monkeypatch.setenv("GRAYWAVE_LAKE_URL", f"s3://{bucket}/lake")
    monkeypatch.setenv("GRAYWAVE_S3_ENDPOINT_URL", local_s3.endpoint)
    monkeypatch.setenv("GRAYWAVE_MONGODB_URI", mongodb_uri)
    monkeypatch.setenv("GRAYWAVE_MONGODB_DATABASE", f"graywave_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("GRAYWAVE_WORKERS", "2")
    monkeypatch.setenv("GRAYWAVE_DEVICE", "cpu")
    return Settings()


_MIGRATE = (
    "import asyncio\n"
    "from prefect.server.database import provide_database_interface\n"
    "asyncio.run(provide_database_interface().create_db())\n"
)
"""What a Prefect server runs as it starts on a database (``create_app``'s ``run_migrations``)."""


class PrefectHomes:
    """This run's migrated Prefect database (made once per run, when a test process first asks for it:
    at its start, to seed its own Prefect home), and this test process's one Prefect server (started
    when first asked for).

    A Prefect server on a fresh home applies Prefect's whole history of migrations before it answers:
    12 CPU-seconds to start, against 6 on a copy of a database they were applied to. The database is
    made once per run: pytest-xdist's workers share it through their run's folder, and whichever asks
    first builds it. The servers the tests start in homes of their own (``prefect_home``) and the
    process's server start on copies of it; the tests about a fresh checkout's first start do not."""

    def __init__(self, factory: pytest.TempPathFactory, config: pytest.Config) -> None:
        self._factory = factory
        self._in_xdist_worker = hasattr(config, "workerinput")
        self._database: Path | None = None
        self._failure: str | None = None  # a failed build fails every later ask at once, not after another

    @property
    def database(self) -> Path:
        """The migrated database, ``prefect.db`` (no flow runs, no deployments): copy it, never open it."""
        if self._failure is not None:
            pytest.fail(self._failure)
        if self._database is None:
            try:
                self._database = self._build()
            except (AssertionError, subprocess.TimeoutExpired) as error:
                self._failure = f"Prefect's migrated database could not be made: {error}"
                raise
        return self._database

    def _build(self) -> Path:
        from filelock import FileLock

        basetemp = self._factory.getbasetemp()
        shared = basetemp.parent if self._in_xdist_worker else basetemp  # this run's, not another's
        home = shared / "prefect-migrated"
        with FileLock(shared / "prefect-migrated.lock"):
            if not home.exists():
                partial = shared / "prefect-migrated.partial"
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir()
                env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
                done = subprocess.run(
                    [sys.executable, "-c", _MIGRATE],
                    env=env | {"PREFECT_HOME": str(partial)},
                    check=False,
                    timeout=PREFECT_STARTUP_S,
                    capture_output=True,
                    text=True,
                )
                assert done.returncode == 0, f"Prefect's migrations failed:\n{done.stderr[-5000:]}"
                assert sorted(p.name for p in partial.iterdir()) == ["prefect.db"]  # no write-ahead log left
                partial.rename(home)
        return home / "prefect.db"

    def copy_into(self, home: Path) -> Path:
        """``home`` (made if missing), holding a copy of the migrated database."""
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.database, home / "prefect.db")
        return home

    def process_server(self) -> SubprocessASGIServer:
        """This process's Prefect server, started (in a home of its own, on a copy of the migrated
        database, with a startup wait of ``PREFECT_STARTUP_S``) unless it runs: the server that
        Prefect's clients start in this process when they have no ``PREFECT_API_URL`` (the instance
        of no port, as ``prefect_test_harness`` does). One per process, shared by its tests."""
        from prefect.server.api.server import SubprocessASGIServer  # Prefect's whole server: seconds to import
        from prefect.settings import PREFECT_HOME, temporary_settings

        server = SubprocessASGIServer()
        if not server.running:
            home = self.copy_into(self._factory.mktemp("prefect-server"))
            with temporary_settings(updates={PREFECT_HOME: home}):  # the settings its process is started with
                server.start(timeout=PREFECT_STARTUP_S)
        assert server.port is not None and server.server_process is not None
        return server


@pytest.fixture(scope="session")
def prefect_homes(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> PrefectHomes:
    return PrefectHomes(tmp_path_factory, request.config)


@pytest.fixture
def prefect_home(tmp_path: Path, prefect_homes: PrefectHomes) -> Path:
    """``tmp_path/prefect``: a Prefect home of the test's own, holding a copy of the migrated database
    (``PrefectHomes.database``: no flow runs, no deployments) for the servers started in it."""
    return prefect_homes.copy_into(tmp_path / "prefect")


@pytest.fixture(scope="session")
def prefect_server(prefect_homes: PrefectHomes) -> Iterator[str]:
    """The API URL of this test process's one Prefect server (``PrefectHomes.process_server``), which
    the tests needing one share, and graywave's commands run in this process use too
    (``_one_prefect_server_per_process``).

    Its state outlives each test: a test names what it created (its runs' ids, its own uploads'
    days) rather than counting everything on the server, and leaves no run scheduled."""
    server = prefect_homes.process_server()
    yield server.api_url
    server.stop()


@pytest.fixture(scope="session")
def phone_files() -> dict[str, bytes]:
    """One upload per kind that the wave must handle, keyed by ``user/file name``; names may lie."""
    from graywave.service.samples import encode, synthetic_photo
    from tests.helpers import png_header, rotated_jpeg

    rgb = synthetic_photo(400, 300, seed=3)
    jpeg = encode(rgb, "JPEG", quality=90)
    return {
        "ann/plain.jpg": jpeg,
        "ann/progressive.jpg": encode(rgb, "JPEG", quality=90, progressive=True),
        "bob/rotated.jpg": rotated_jpeg(rgb),
        "bob/photo.heic": encode(rgb, "HEIF", quality=80),
        "cat/screenshot.png": encode(rgb, "PNG"),
        "cat/sticker.webp": encode(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "WEBP"),
        "dan/actually-a-png.jpg": encode(rgb, "PNG"),
        "dan/half.jpg": jpeg[: len(jpeg) // 2],
        "eve/readme.jpg": b"not an image at all",
        "eve/empty.jpg": b"",
        "eve/anim.gif": encode(rgb, "GIF"),
        "eve/huge.png": png_header(16000, 16000, "RGBA"),  # within the pixel limit, over the memory budget
    }
