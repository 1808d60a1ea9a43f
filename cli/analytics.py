"""``graywave analytics run``: the day's analytics, now, in this process."""

from __future__ import annotations

from typing import Annotated

import typer

from graywave.cli.common import console, flow_failing, flow_settings
from graywave.cli.options import DayOption, MetricOption, check_metric
from graywave.records import MAX_TOP_N

analytics_app = typer.Typer(no_args_is_help=True, help="Daily analytics.")


@analytics_app.command("run")
def analytics_run(
    day: DayOption = None,
    top_n: Annotated[int, typer.Option("--top-n", min=1, max=MAX_TOP_N, help="Neighbours per user.")] = 10,
    metric: MetricOption = "design",
) -> None:
    """Compute the day's user histograms, median and similar users into the lake (and MongoDB)."""
    check_metric(metric)
    flow_settings()
    from graywave.flows.analytics import run_analytics_flow

    with flow_failing("the analytics could not run"):
        summary = run_analytics_flow(day=day, top_n=top_n, metric=metric)
    console.print(summary.line())
