"""``graywave server start|stop|status``: a local Prefect server that graywave manages, in the
background, with graywave's ``PREFECT_HOME`` (so its runs are the ones the UI shows) and telemetry
off; and the lookup that makes every other command use it.

Prefect's own ``prefect server start --background`` does the starting and stopping (its PID file is
in ``PREFECT_HOME``); graywave records the address it started it on in ``graywave-server.json``
beside it, so that any command can find it without configuration. The server is told its UI's
address (``PREFECT_UI_URL``), so that the links in its notifications open the run's page, and
graywave's automations are installed on it (``flows.automations``: a run whose heartbeats stop is
marked ``Crashed``).

``status`` and ``stop`` only read: they create no ``PREFECT_HOME``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

STATE_FILE = "graywave-server.json"
START_TIMEOUT_S = 90.0
HEALTH_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class LocalServer:
    host: str
    port: int

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=HEALTH_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            return False


def use_prefect_home(default: Path) -> Path:
    """graywave's ``PREFECT_HOME`` (the environment's, else ``default``), set in the environment for
    Prefect and its server; the folder is not created."""
    return Path(os.environ.setdefault("PREFECT_HOME", str(default.resolve()))).expanduser()


def _state_file() -> Path:
    return Path(os.environ["PREFECT_HOME"]) / STATE_FILE


def recorded() -> LocalServer | None:
    """The server ``graywave server start`` started last with this ``PREFECT_HOME``, if any."""
    try:
        data = json.loads(_state_file().read_text())
        return LocalServer(str(data["host"]), int(data["port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running() -> LocalServer | None:
    """The managed local server, if it is up."""
    server = recorded()
    return server if server is not None and server.healthy() else None


def _prefect(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    prefect = Path(sys.executable).with_name("prefect")
    return subprocess.run([str(prefect), *arguments], capture_output=True, text=True, timeout=120, check=False, env=env)


def start(host: str, port: int) -> LocalServer:
    """Start Prefect's server in the background on ``host:port`` and wait until it answers."""
    server = LocalServer(host, port)
    if server.healthy():
        raise RuntimeError(f"something already answers at {server.api_url}; stop it, or choose another --port")
    # The UI asks its API for data at PREFECT_UI_API_URL, which otherwise stays on port 4200.
    env = os.environ | {
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": server.api_url,
        # The links of its notifications ({{ flow_run|ui_url }}): without it they read "None".
        "PREFECT_UI_URL": server.ui_url,
    }
    done = _prefect("server", "start", "--background", "--host", host, "--port", str(port), "--analytics-off", env=env)
    if done.returncode != 0:
        raise RuntimeError(f"prefect server start failed: {(done.stdout + done.stderr).strip()[-2000:]}")
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.healthy():
        if time.monotonic() > deadline:
            _prefect("server", "stop")
            raise RuntimeError(f"the Prefect server did not answer at {server.api_url} within {START_TIMEOUT_S:.0f} s")
        time.sleep(0.5)
    _state_file().write_text(json.dumps({"host": host, "port": port}))
    return server


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


def stop() -> bool:
    """Stop the managed server; whether one was running. ``RuntimeError`` if it still answers after."""
    server = recorded()
    was = server is not None and server.healthy()
    if not Path(os.environ["PREFECT_HOME"]).is_dir():  # nothing was ever started there: create nothing
        return was
    done = _prefect("server", "stop")
    if server is not None and server.healthy():
        raise RuntimeError(
            f"the server at {server.api_url} still answers: {(done.stdout + done.stderr).strip()[-500:]}"
        )
    _state_file().unlink(missing_ok=True)
    return was
