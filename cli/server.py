"""``graywave server start|stop|status``: a local Prefect server that graywave manages, in the
background, with graywave's ``PREFECT_HOME`` (so its runs are the ones the UI shows) and telemetry
off; and the lookup that makes every other command use it.

graywave starts ``prefect server start`` as a process of its own session, so that it outlives the
terminal and the process group that started it, with its output in ``graywave-server.log`` in
``PREFECT_HOME``, where an operator can read it. (Prefect's ``--background`` leaves its server writing
into pipes that nobody reads once the command ends.) ``graywave-server.json`` beside it records the
address and the process, so that any command finds the server without configuration, and a server is
running while that process lives: the lookup does not rest on how fast a busy server answers. The
server is told its UI's address (``PREFECT_UI_URL``), so that the links in its notifications open the
run's page, and graywave's automations are installed on it (``flows.automations``: a run whose
heartbeats stop is marked ``Crashed``).

``status`` and ``stop`` only read: they create no ``PREFECT_HOME``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import httpx
import psutil

from graywave.flows.temporary_server import STARTUP_TIMEOUT_S

STATE_FILE = "graywave-server.json"
LOG_FILE = "graywave-server.log"
START_LOCK_FILE = "graywave-server.lock"
PREFECT_PID_FILE = "server.pid"
"""Where ``prefect server start --background`` (which graywave used before) keeps its server's PID."""
PREFECT_SERVER_APP = "prefect.server.api.server:create_app"
"""The application in the command line of the server that ``--background`` starts."""
STOP_TIMEOUT_S = 30.0
HEALTH_TIMEOUT_S = 5.0
LOG_TAIL_CHARS = 2000


def process_identity(pid: int) -> str | None:
    """What tells this process from a later one that the system gives the same PID: the boot, and
    the process's start in clock ticks since it (``/proc``; unlike psutil's ``create_time``, no step
    of the wall clock moves it). None once the process is gone."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{boot}:{started}"


@dataclass(frozen=True)
class LocalServer:
    host: str
    port: int
    pid: int
    identity: str  # ``process_identity(pid)`` as it started
    ready: bool = False  # it answered: until then, the commands do not use it

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def healthy(self) -> bool:
        """Whether it answers its health check now."""
        try:
            return httpx.get(f"{self.api_url}/health", timeout=HEALTH_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            return False

    def listens(self) -> bool:
        """Whether its process listens on its port (not some other server that answers there)."""
        process = self.process()
        try:
            return process is not None and any(
                c.laddr.port == self.port and c.status == psutil.CONN_LISTEN for c in process.net_connections("tcp")
            )
        except psutil.Error:
            return False

    def process(self) -> psutil.Process | None:
        """The server's process, while it lives."""
        try:
            process = psutil.Process(self.pid)
            alive = process_identity(self.pid) == self.identity and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return None
        return process if alive else None


def use_prefect_home(default: Path) -> Path:
    """graywave's ``PREFECT_HOME`` (the environment's, else ``default``), set in the environment for
    Prefect and its server; the folder is not created."""
    return Path(os.environ.setdefault("PREFECT_HOME", str(default.resolve()))).expanduser()


def _home() -> Path:
    return Path(os.environ["PREFECT_HOME"])


def log_file() -> Path:
    """Where the managed server writes its output."""
    return _home() / LOG_FILE


def recorded() -> LocalServer | None:
    """The server ``graywave server start`` started last with this ``PREFECT_HOME``, if any (ready
    or not). A record of the graywave before this one (no process in it) names the process in
    Prefect's own PID file."""
    try:
        data = json.loads((_home() / STATE_FILE).read_text())
        host, port = str(data["host"]), int(data["port"])
        if "pid" not in data:  # started with Prefect's --background
            pid = int((_home() / PREFECT_PID_FILE).read_text())
            identity = process_identity(pid)
            if identity is None or PREFECT_SERVER_APP not in psutil.Process(pid).cmdline():  # a reused PID
                return None
            return LocalServer(host, port, pid, identity, ready=True)
        return LocalServer(host, port, int(data["pid"]), str(data["identity"]), bool(data["ready"]))
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None


def _record(server: LocalServer) -> None:
    written = _home() / f".{STATE_FILE}.{os.getpid()}"
    written.write_text(json.dumps(asdict(server)))
    written.replace(_home() / STATE_FILE)  # whole or not at all, for the commands that read it


def _forget(server: LocalServer) -> None:
    if (current := recorded()) is None or current == server:  # not a record that another start wrote since
        (_home() / STATE_FILE).unlink(missing_ok=True)
        (_home() / PREFECT_PID_FILE).unlink(missing_ok=True)  # an older graywave's server's


def running() -> LocalServer | None:
    """The managed local server, once it has answered and while its process lives."""
    server = recorded()
    return server if server is not None and server.ready and server.process() is not None else None


def _log_tail() -> str:
    try:
        return log_file().read_text(errors="replace").strip()[-LOG_TAIL_CHARS:]
    except OSError:
        return ""


def start_once(host: str, port: int) -> tuple[LocalServer, bool]:
    """The managed server that runs, or one started now on ``host:port`` (``_start``), and whether
    this call started it. Two calls at once start one server: the second waits for the first's start
    (a file lock, which the system releases if its holder dies), then finds its server. A server
    whose start was interrupted before it answered is stopped first."""
    from filelock import FileLock, Timeout

    home = _home()
    home.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(home / START_LOCK_FILE, timeout=2 * STARTUP_TIMEOUT_S):
            if (local := running()) is not None:
                return local, False
            if (unfinished := recorded()) is not None:
                _end(unfinished)
            return _start(host, port), True
    except Timeout:
        raise RuntimeError(
            f"another graywave server start in {home} did not finish in {2 * STARTUP_TIMEOUT_S:.0f} s"
        ) from None


def _start(host: str, port: int) -> LocalServer:
    """Start Prefect's server in the background on ``host:port`` and wait until it answers;
    ``RuntimeError`` (with the end of its log) when it does not."""
    if LocalServer(host, port, 0, "").healthy():
        raise RuntimeError(f"something already answers at http://{host}:{port}; stop it, or choose another --port")
    # The UI asks its API for data at PREFECT_UI_API_URL, which otherwise stays on port 4200.
    # PREFECT_UI_URL makes the links of its notifications ({{ flow_run|ui_url }}), which otherwise read "None".
    url = f"http://{host}:{port}"
    env = os.environ | {"PREFECT_UI_API_URL": f"{url}/api", "PREFECT_UI_URL": url}
    prefect = Path(sys.executable).with_name("prefect")
    command = [str(prefect), "server", "start", "--host", host, "--port", str(port), "--analytics-off"]
    try:
        with log_file().open("wb") as log:  # the last start's: an operator reads the running server's
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
    except OSError as error:
        raise RuntimeError(f"prefect server start could not be run: {error}") from None
    server = LocalServer(host, port, process.pid, process_identity(process.pid) or "")
    _record(server)  # not ready yet: the commands do not use it, and a stop finds it
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not (server.listens() and server.healthy()):
        if process.poll() is not None:
            _forget(server)
            raise RuntimeError(f"prefect server start exited with {process.returncode}: {_log_tail()}")
        if time.monotonic() > deadline:
            _end(server)
            raise RuntimeError(
                f"the Prefect server did not answer at {server.api_url} within {STARTUP_TIMEOUT_S:.0f} s"
            )
        time.sleep(0.5)
    ready = replace(server, ready=True)
    _record(ready)
    return ready


def install_automations(api_url: str, heartbeat_s: int) -> str:
    """graywave's automations on the Prefect server at ``api_url`` (zombie-run detection,
    ``flows.automations``): what was done; ``RuntimeError`` when the server would not take them."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from graywave.flows.automations import install_zombie_detection

    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            return install_zombie_detection(client, heartbeat_s)
    except httpx.HTTPError as error:
        raise RuntimeError(f"the zombie-run automation could not be installed on {api_url}: {error}") from None


def _ended(server: LocalServer, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while server.process() is not None:  # not psutil's wait: a zombie that init has not reaped yet has ended
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _end(server: LocalServer) -> bool:
    """End the server's process and forget it: whether it was running. ``RuntimeError`` if it outlives ``SIGKILL``."""
    if server.process() is None:
        _forget(server)  # a server that ended by itself, or with its machine
        return False
    for sent in (signal.SIGTERM, signal.SIGKILL):  # Prefect's shutdown, then no choice
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(server.pid) == server.pid:
                os.killpg(server.pid, sent)  # the session it leads: the server and anything it started
            else:
                os.kill(server.pid, sent)  # an older graywave's server, in its starting command's group
        if _ended(server, STOP_TIMEOUT_S):
            _forget(server)
            return True
    raise RuntimeError(f"the server's process {server.pid} still runs after SIGKILL")


def stop() -> bool:
    """Stop the managed server, ready or still starting, and wait until its process has ended:
    whether one was running. ``RuntimeError`` if it outlives ``SIGKILL``."""
    server = recorded()
    return server is not None and _end(server)
