"""``graywave lake history|optimize|migrate``: the Delta lake's commits, maintenance and migration."""

from __future__ import annotations

from typing import Annotated

import typer

from graywave.cli.common import CommandFailed, answer, commits_frame, console, flow_failing, flow_settings, print_frame
from graywave.cli.options import JsonOption
from graywave.errors import GraywaveError

lake_app = typer.Typer(no_args_is_help=True, help="The Delta lake: history, maintenance, migration.")


@lake_app.command("history")
def lake_history(
    table: Annotated[
        str, typer.Argument(help="images, rejects, daily_user_histograms, daily_median, similar_users.")
    ] = "images",
    limit: Annotated[int, typer.Option("-n", min=1, max=1_000_000, help="How many commits, newest first.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """A table's commits, newest first: Delta's operation and graywave's (which wave, day and flow run)."""
    from graywave.service.tables import check_table

    try:
        checked = check_table(table)
    except GraywaveError as error:
        raise typer.BadParameter(str(error), param_hint="TABLE") from None
    commits = answer(lambda graywave: graywave.operations.history(checked, limit))
    if not commits:
        raise CommandFailed(f"{table} has no commit yet")
    print_frame(commits_frame(commits), as_json, f"commits to {table}")


@lake_app.command("optimize")
def lake_optimize(
    days: Annotated[int, typer.Option("--days", min=1, max=3660, help="Compact the last N days' partitions.")] = 3,
    every_day: Annotated[bool, typer.Option("--all", help="Compact every partition.")] = False,
) -> None:
    """Run the lake's maintenance now (the flow that graywave serve runs nightly): compaction, Z-order
    of images by user, checkpoints, vacuum of files older than GRAYWAVE_LAKE_RETENTION_HOURS."""
    flow_settings()
    from graywave.flows.maintenance import run_lake_maintenance_flow

    with flow_failing("the maintenance could not run"):
        done = run_lake_maintenance_flow(days=None if every_day else days)
    if not done:
        raise CommandFailed("the lake has no table yet: nothing to maintain")
    for table in done:
        console.print(table.line(), highlight=False)


@lake_app.command("migrate")
def lake_migrate() -> None:
    """Convert a lake written before Delta Lake (hive-partitioned Parquet files) into Delta tables, in
    place: nothing is rewritten; each table's files become its first version."""
    converted = answer(lambda graywave: graywave.operations.migrate(), needs_tables=False)
    if not converted:
        raise CommandFailed("nothing to convert: no hive-Parquet table without a Delta log")
    console.print(f"converted to Delta tables: {', '.join(converted)}", highlight=False)
