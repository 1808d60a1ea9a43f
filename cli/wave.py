"""``graywave wave run|trigger``: a wave in this process, or a served wave deployment run now."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Annotated, Any

import typer

from graywave.cli.common import CommandFailed, console, flow_failing, flow_settings, me
from graywave.cli.options import parse_date
from graywave.config import validate_wave_name

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

wave_app = typer.Typer(no_args_is_help=True, help="Upload waves.")


@wave_app.command("run")
def wave_run(
    day: Annotated[
        date | None,
        typer.Option(
            "--date", parser=parse_date, metavar="YYYY-MM-DD", help="Wave day (default: today in GRAYWAVE_TIMEZONE)."
        ),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Wave name, e.g. morning or evening.")] = "manual",
    settle: Annotated[
        float | None,
        typer.Option(
            "--settle",
            min=0,
            metavar="SECONDS",
            help="Keep collecting: list again after each round, until nothing new has arrived for this long.",
        ),
    ] = None,
    max_duration: Annotated[
        float | None,
        typer.Option(
            "--max-duration",
            min=0,
            metavar="SECONDS",
            help="With --settle: stop collecting this long after the start (default GRAYWAVE_WAVE_MAX_DURATION_S).",
        ),
    ] = None,
) -> None:
    """Process every pending upload of the day and of the day before (one pass, unless --settle)."""
    try:
        validate_wave_name(name)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--name") from None
    if max_duration is not None and settle is None:
        raise typer.BadParameter(
            "only applies to a wave with a settle window: give --settle too", param_hint="--max-duration"
        )
    settings = flow_settings()
    # No kernel warm-up in the background: on two cores it slowed Prefect's start-up by about a
    # second (the GIL), and an empty wave never needs the kernels; the first batch loads them.
    from graywave.flows.wave import run_wave_flow

    with flow_failing("the wave could not run"):
        summary = run_wave_flow(settings, day, name, settle_s=settle, max_duration_s=max_duration)
    console.print(summary.line())


@wave_app.command("trigger")
def wave_trigger(
    name: Annotated[
        str, typer.Argument(help="The wave deployment's name, as `graywave serve` registers it: morning, evening.")
    ],
    day: Annotated[
        date | None,
        typer.Option(
            "--date", parser=parse_date, metavar="YYYY-MM-DD", help="Wave day (default: the run's start day)."
        ),
    ] = None,
    settle: Annotated[
        float | None,
        typer.Option("--settle", min=0, metavar="SECONDS", help="Settle window (default: the deployment's)."),
    ] = None,
    max_duration: Annotated[
        float | None,
        typer.Option(
            "--max-duration", min=0, metavar="SECONDS", help="Longest collection (default: the deployment's)."
        ),
    ] = None,
) -> None:
    """Run a wave deployment that `graywave serve` serves, now, on graywave's Prefect server; its
    parameters default to the deployment's (the settle window included)."""
    flow_settings(temporary_server=False)
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    if not PREFECT_API_URL.value():
        raise CommandFailed(
            "no Prefect server to run the deployment on",
            f"start one (`{me()} server start`) and `{me()} serve`, or set PREFECT_API_URL to yours",
        )
    from graywave.flows.schedule import BURSTS
    from graywave.flows.wave import wave_flow

    if name not in BURSTS:
        raise typer.BadParameter(f"{name!r} is not a wave deployment: {', '.join(BURSTS)}", param_hint="NAME")
    overrides = {"day": day.isoformat() if day else None, "settle_s": settle, "max_duration_s": max_duration}
    run = _run_deployment(f"{wave_flow.name}/wave-{name}", {k: v for k, v in overrides.items() if v is not None})
    ui = PREFECT_UI_URL.value()
    console.print(
        f"wave {name}: flow run {run.name} ({run.id}) scheduled now with {run.parameters}"
        + (f"; follow it at {ui}/runs/flow-run/{run.id}" if ui else ""),
        highlight=False,
    )


def _run_deployment(deployment: str, overrides: dict[str, Any]) -> FlowRun:
    """A flow run of ``deployment`` (``flow/deployment``) scheduled now, with its parameters and
    ``overrides`` over them; a missing deployment or an unreachable server is a ``CommandFailed``."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    try:
        with get_client(sync_client=True) as client:
            found = client.read_deployment_by_name(deployment)
            parameters = {**(found.parameters or {}), **overrides}
            return client.create_flow_run_from_deployment(found.id, parameters=parameters, tags=["graywave"])
    except ObjectNotFound:
        raise CommandFailed(
            f"no deployment {deployment} on {PREFECT_API_URL.value()}", f"run `{me()} serve` first"
        ) from None
    except httpx.HTTPError as error:
        raise CommandFailed(f"the Prefect server at {PREFECT_API_URL.value()} cannot be reached", str(error)) from None
