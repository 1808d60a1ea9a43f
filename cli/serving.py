"""``graywave api``, ``graywave serve`` and ``graywave demo``: the REST API, the scheduled waves and
analytics, and a week of sample uploads run through them."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from graywave.cli.common import CommandFailed, console, err_console, flow_settings, me, settings_only
from graywave.config import METRICS_MULTIPROCESS_VARIABLE

API_HTTP_PROTOCOL = "graywave.api.timeouts:SlowClientCutoff"
"""uvicorn's h11 protocol with a header deadline: named, as the app is, since the CLI imports no API code."""
API_APP_FACTORY = "graywave.cli.asgi:create_app"
"""The API's app with Prefect's background jobs, named to uvicorn: imported by its workers only."""


def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the REST API with uvicorn (OpenAPI docs at /docs)."""
    import uvicorn

    # The API runs no flow: Prefect's client only, for the background jobs, on PREFECT_API_URL or the
    # server that `graywave server start` runs. It needs no Prefect home, and makes none.
    settings_only(create_home=False)
    if not os.environ.get("PREFECT_API_URL"):
        from graywave.cli import server

        if (local := server.running()) is not None:
            os.environ["PREFECT_API_URL"] = local.api_url
    if workers == 1:
        uvicorn.run(API_APP_FACTORY, factory=True, host=host, port=port, http=API_HTTP_PROTOCOL)
        return
    import tempfile

    # prometheus-client's multiprocess mode: each worker writes its metrics to files in a fresh private
    # folder (never an earlier run's counts), summed by whichever worker answers GET /metrics.
    with tempfile.TemporaryDirectory(prefix="graywave-metrics-", ignore_cleanup_errors=True) as folder:
        os.environ[METRICS_MULTIPROCESS_VARIABLE] = folder  # before uvicorn starts the workers
        uvicorn.run(API_APP_FACTORY, factory=True, host=host, port=port, workers=workers, http=API_HTTP_PROTOCOL)


def demo(days: Annotated[int, typer.Option(min=1, max=28, help="Days of sample uploads.")] = 7) -> None:
    """Generate a week of sample uploads, run the waves on them, and report where the results are."""
    settings = flow_settings()
    from graywave.cli.demo import demo_report, run_demo
    from graywave.service.wave import WaveSummary

    summaries = run_demo(settings, days)
    for summary in summaries:
        console.print(summary.line())
    console.print()
    console.print(demo_report(settings), highlight=False)
    from graywave.cli import server

    local = server.running()
    console.print()
    if local is None:
        console.print(
            "The runs went to a temporary Prefect server, stopped as this command ends; they are kept under"
            " PREFECT_HOME:"
            f" `{me()} server start` runs a server with its UI, which shows them."
        )
        return
    with_rejects = [f"wave-{s.wave}-{s.date}" for s in summaries if isinstance(s, WaveSummary) and s.rejected]
    console.print(
        f"The Prefect UI: {local.ui_url}/runs. Click a wave's run, then its Artifacts tab: the wave's summary,"
        f" its rejects and their reasons ({', '.join(with_rejects) or 'no run'} had rejects);"
        " analytics-<day> has the median histogram. The Artifacts page shows each one's history."
        f" Stop the server with: {me()} server stop",
        highlight=False,
    )


def serve(
    stop_timeout: Annotated[
        float,
        typer.Option(
            "--stop-timeout",
            min=0,
            metavar="SECONDS",
            help="On SIGTERM: how long to wait for the runs in flight (a wave finishes its round) before cancelling.",
        ),
    ] = 80.0,
) -> None:
    """Register the wave, analytics and reprocessing deployments and run them (needs a Prefect server:
    PREFECT_API_URL). SIGTERM: no new runs, the waves in flight finish their round."""
    from graywave.flows.automations import use_graywave_heartbeat

    heartbeat_s = use_graywave_heartbeat()  # before Prefect is imported: the runs it starts beat at it
    settings = flow_settings(temporary_server=False)  # it refuses one, below
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise CommandFailed(
            "graywave serve needs a Prefect server that outlives it",
            f"start one (`{me()} server start`), or set PREFECT_API_URL to yours, e.g. http://127.0.0.1:4200/api",
        )
    with get_client(sync_client=True) as client:
        unhealthy = client.api_healthcheck()
    if unhealthy is not None:
        raise CommandFailed(f"the Prefect server at {url} cannot be reached", str(unhealthy))
    from graywave.cli import server

    try:  # once, however often serve restarts
        server.install_automations(url, heartbeat_s)
    except RuntimeError as error:
        err_console.print(f"graywave: {error}; runs killed outright will stay Running")
    from graywave.flows.schedule import deployments
    from graywave.flows.serving import serve as serve_deployments

    serve_deployments(
        deployments(settings),
        heartbeat_s=heartbeat_s,
        stop_timeout_s=stop_timeout,
        log=lambda line: err_console.print(line, highlight=False),
    )
