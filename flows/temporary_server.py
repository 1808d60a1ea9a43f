"""A temporary Prefect server for one graywave command that outlives the signals that stop it.

Without ``PREFECT_API_URL`` and without a running ``graywave server``, Prefect starts a temporary
server as a child process of the command, in its process group. A SIGTERM to that group (``timeout``,
cron, systemd's default ``KillMode=control-group``) or a Ctrl-C stopped the server at once, while
the command's flow run was still reporting that it had been stopped: its client retried against
the dead server for minutes (144 s measured), and the run stayed ``Running`` in Prefect's database.

This server is graywave's instead, for the command's flow runs (``flows.wave.run_wave_flow``):

- it runs in a session of its own, so a signal to the command's process group does not reach it;
- it ignores SIGTERM and SIGINT (systemd signals every process of the unit's cgroup), so the flow
  run can still record its final state (``Crashed``) after the command was signalled;
- it stops when the command's process ends, however it ends: at exit the command asks it to
  (SIGUSR1), and it watches its parent and stops once the parent is gone (``kill -9`` included).

It is Prefect's own server application in the temporary mode that Prefect uses (no UI, the
services a temporary server runs), on 127.0.0.1 and a free port, with the command's ``PREFECT_HOME``
database, so the local server's UI shows its runs later.

    python -m graywave.flows.temporary_server --port 8123 --parent 4242
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

import httpx

from graywave.errors import BackendUnavailable

STARTUP_TIMEOUT_S = 300.0
"""How long graywave waits for a Prefect server it starts to answer: a command's temporary server,
and ``graywave server start``'s. A loaded machine (two cores running the test suite beside other
work) needs far more than Prefect's 20 s, and a managed server's first start on a new home (its
migrations and the UI's files) more than 90 s there."""
STOP_TIMEOUT_S = 15.0
"""How long the server has to stop after it is asked to, before it is killed."""
PARENT_POLL_S = 0.5


class TemporaryServer:
    """A temporary Prefect server of this process (``start``, ``stop``; ``api_url`` while it runs)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Start the server and wait until it answers; ``BackendUnavailable`` if it does not in
        ``timeout_s`` (wall-clock seconds) or exits."""
        from prefect.settings import get_current_settings

        self.port = _free_port()
        # The settings in force here (PREFECT_HOME, logging...), as Prefect passes them to its own
        # temporary server; the temporary mode itself: no UI, the temporary server's services.
        env = (
            os.environ
            | get_current_settings().to_environment_variables(exclude_unset=True)
            | {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        )
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "graywave.flows.temporary_server",
                "--port",
                str(self.port),
                "--parent",
                str(os.getpid()),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a signal to the command's process group does not reach it
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=5) as client:
            while True:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    self.process = None
                    raise BackendUnavailable(f"Prefect's temporary server exited with code {code} as it started")
                try:
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise BackendUnavailable(
                        f"Prefect's temporary server did not answer within {timeout_s:.0f} s;"
                        " `graywave server start` keeps one running"
                    )
                time.sleep(0.1)

    def stop(self) -> None:
        """Ask the server to stop (SIGUSR1), and kill it if it has not within ``STOP_TIMEOUT_S``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGUSR1)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_server: TemporaryServer | None = None


@contextlib.contextmanager
def prefect_api() -> Iterator[None]:
    """Run the body against ``PREFECT_API_URL``, or against this process's temporary server (started
    at the first need, kept for the process's later flow runs, stopped at exit)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    global _server
    if _server is None or _server.process is None or _server.process.poll() is not None:
        server = TemporaryServer()
        server.start()
        _server = server
    with temporary_settings(updates={PREFECT_API_URL: _server.api_url}):
        yield


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _serve(port: int, parent: int) -> None:
    """The server process: Prefect's application under uvicorn, deaf to SIGTERM and SIGINT, stopped
    by SIGUSR1 or by its parent's end."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # uvicorn would stop on SIGTERM and SIGINT
            yield

    config = uvicorn.Config(
        "prefect.server.api.server:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        log_level="error",
        lifespan="on",
    )
    server = Server(config)

    def stop(_signal: int | None = None, _frame: FrameType | None = None) -> None:
        server.should_exit = True

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        stop()

    signal.signal(signal.SIGUSR1, stop)
    threading.Thread(target=watch_parent, daemon=True, name="watch-parent").start()
    server.run()


def main() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parser = argparse.ArgumentParser(description="A temporary Prefect server for one graywave command.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True, help="Stop once this process is gone.")
    arguments = parser.parse_args()
    if os.getppid() != arguments.parent:  # the command ended before this process started
        return
    _serve(arguments.port, arguments.parent)


if __name__ == "__main__":
    main()
