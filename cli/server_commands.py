"""``graywave server start|stop|status``: the local Prefect server that graywave manages (``cli.server``)."""

from __future__ import annotations

from typing import Annotated

import typer

from graywave.cli.common import CommandFailed, console, err_console, me, settings_only
from graywave.config import Settings

server_app = typer.Typer(no_args_is_help=True, help="The local Prefect server that graywave manages (and its UI).")


@server_app.command("start")
def server_start(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the API and the UI.")] = 4200,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Start Prefect's server in the background, with graywave's PREFECT_HOME and telemetry off, and
    install graywave's automations on it (a run whose heartbeats stop is marked Crashed)."""
    from graywave.flows.automations import use_graywave_heartbeat

    heartbeat_s = use_graywave_heartbeat()
    settings_only()
    from graywave.cli import server

    try:
        local, started = server.start_once(host, port)
    except RuntimeError as error:
        raise CommandFailed("the Prefect server did not start", str(error)) from None
    try:
        server.install_automations(local.api_url, heartbeat_s)
    except RuntimeError as error:  # the server runs: say what it lacks, and go on
        err_console.print(f"graywave: {error}; runs killed outright will stay Running")
    if not started:
        console.print(f"already running: the UI at {local.ui_url}, the API at {local.api_url}", highlight=False)
        return
    console.print(
        f"Prefect server running: the UI at {local.ui_url}, the API at {local.api_url}\n"
        f"graywave commands on this machine use it; for other Prefect tools: export PREFECT_API_URL={local.api_url}\n"
        f"its log: {server.log_file()}\n"
        f"stop it with: {me()} server stop",
        highlight=False,
    )


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server that `graywave server start` started."""
    from graywave.cli import server

    server.use_prefect_home(Settings().prefect_home)  # a stop creates no Prefect home

    try:
        stopped = server.stop()
    except RuntimeError as error:
        raise CommandFailed("the local Prefect server did not stop", str(error)) from None
    if not stopped:
        raise CommandFailed("no local Prefect server was running")
    console.print("the local Prefect server is stopped")


@server_app.command("status")
def server_status() -> None:
    """Whether the local Prefect server runs, and where its UI is (exit 1 when it does not run or answer)."""
    from graywave.cli import server

    server.use_prefect_home(Settings().prefect_home)  # a read: it creates no Prefect home

    local = server.running()
    if local is None:
        console.print(f"no local Prefect server is running: {me()} server start", highlight=False)
        raise typer.Exit(1)
    if not local.healthy():
        console.print(
            f"the local Prefect server (process {local.pid}) does not answer at {local.api_url};"
            f" its log: {server.log_file()}",
            highlight=False,
        )
        raise typer.Exit(1)
    console.print(f"running: the UI at {local.ui_url}, the API at {local.api_url}", highlight=False)
