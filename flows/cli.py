"""The ``graywave`` command line.

    graywave wave run [--date YYYY-MM-DD] [--name NAME]   process one wave
    graywave demo                                         a week of sample uploads, processed, reported
    graywave serve                                        the scheduled waves, on a Prefect server
    graywave settings                                     the configuration in force

Prefect is imported only after its environment is prepared (state under the data folder,
telemetry off), so every command works without internet access.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console

from graywave.config import Settings, prepare_prefect_environment, validate_wave_name

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.split("\n\n")[0])
wave_app = typer.Typer(no_args_is_help=True, help="Upload waves.")
app.add_typer(wave_app, name="wave")
console = Console(soft_wrap=True)


def _settings() -> Settings:
    settings = Settings()
    prepare_prefect_environment(settings)
    return settings


def _warm_up_in_background(settings: Settings) -> None:
    """Load the compiled kernels while Prefect starts (about 1 s that the first batch would wait)."""

    def warm() -> None:
        from graywave.kernels import select_device, warm_up

        warm_up(select_device(settings.device))

    threading.Thread(target=warm, name="graywave-warm-up", daemon=True).start()


@wave_app.command("run")
def wave_run(
    day: Annotated[
        datetime | None,
        typer.Option("--date", formats=["%Y-%m-%d"], help="Wave day (default: today in GRAYWAVE_TIMEZONE)."),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Wave name, e.g. morning or evening.")] = "manual",
) -> None:
    """Process every pending upload of the day and of the day before."""
    try:
        validate_wave_name(name)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--name") from None
    settings = _settings()
    _warm_up_in_background(settings)
    from graywave.flows.wave import wave_flow

    try:
        summary = wave_flow(day=day.date() if day else None, name=name)
    except Exception as error:
        console.print(f"[red]the wave could not run:[/red] {type(error).__name__}: {error}")
        raise typer.Exit(1) from None
    console.print(summary.line())


@app.command()
def demo(days: Annotated[int, typer.Option(min=1, max=28, help="Days of sample uploads.")] = 7) -> None:
    """Generate a week of sample uploads, run the waves on them, and report where the results are."""
    settings = _settings()
    from graywave.flows.demo import demo_report, run_demo

    for summary in run_demo(settings, days):
        console.print(summary.line())
    console.print()
    console.print(demo_report(settings), highlight=False)


@app.command()
def serve() -> None:
    """Register the morning and evening wave deployments and run them on schedule (needs PREFECT_API_URL)."""
    settings = _settings()
    from prefect import serve as prefect_serve

    from graywave.flows.schedule import wave_deployments

    prefect_serve(*wave_deployments(settings))


@app.command("settings")
def show_settings() -> None:
    """Print the configuration in force (from GRAYWAVE_* variables and defaults)."""
    for key, value in Settings().model_dump().items():
        console.print(f"GRAYWAVE_{key.upper()}={value}", highlight=False)


def main() -> None:
    app()
