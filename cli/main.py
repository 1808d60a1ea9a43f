"""The ``graywave`` command line.

    graywave wave run [--date YYYY-MM-DD] [--name NAME]   process one wave
        [--settle SECONDS [--max-duration SECONDS]]       ... and keep collecting what arrives
    graywave analytics run [--date D] [--top-n N] [--metric M]
    graywave query weekly USER [--week 2026-W48] [--json] [--as-of VERSION|TIME]
    graywave query median [--date D] [--json] [--as-of VERSION|TIME]
    graywave query similar USER [-n 5] [--date D] [--metric M] [--json] [--as-of VERSION|TIME]
    graywave plot median [--date D] [-o median.png] | plot weekly USER [--week W] [-o week.png]
    graywave api [--host 127.0.0.1] [--port 8000]         the REST API (docs at /docs)
    graywave token issue USER [--admin] | --from-file F  a bearer token for the API (many: user<TAB>token)
    graywave token list [--after ID] | revoke ID          the tokens, a page at a time (ids, never the tokens)
    graywave demo                                         a week of sample uploads, processed, reported
    graywave serve                                        the scheduled waves and analytics (Prefect)
    graywave server start|stop|status                     a local Prefect server (and its UI) for every command
    graywave status                                       recent waves, uploads pending now, the lake's last commits
    graywave lake history [TABLE] [-n 20]                  a table's commits: which wave, day and flow run
    graywave lake optimize [--days N | --all]             compaction, Z-order, checkpoint, vacuum
    graywave lake migrate                                 a hive-Parquet lake (before Delta) converted in place
    graywave rejects [--date D] [--reason R] [--json]     which uploads were rejected, and why
    graywave settings                                     the configuration in force

Prefect is imported only after its environment is prepared (state under the data folder,
telemetry off), so every command works without internet access.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from graywave.cli.analytics import analytics_app
from graywave.cli.common import report
from graywave.cli.lake import lake_app
from graywave.cli.operations import rejects, show_settings, status
from graywave.cli.plot import plot_app
from graywave.cli.query import query_app
from graywave.cli.server_commands import server_app
from graywave.cli.serving import API_HTTP_PROTOCOL, api, demo, serve
from graywave.cli.token import token_app
from graywave.cli.wave import wave_app
from graywave.errors import GraywaveError

__all__ = ["API_HTTP_PROTOCOL", "app", "main"]


class _Graywave(TyperGroup):
    """The root command: the one place a command's ``GraywaveError`` is printed and turned into exit 1
    (in ``graywave`` itself and for a test's ``CliRunner`` alike, which both run this group)."""

    def invoke(self, ctx: Any) -> Any:  # Typer's own (vendored) click.Context
        try:
            return super().invoke(ctx)
        except GraywaveError as error:
            report(error)
            raise typer.Exit(1) from None


app = typer.Typer(cls=_Graywave, no_args_is_help=True, add_completion=False, help=__doc__.split("\n\n")[0])
for sub_app, name in (
    (wave_app, "wave"),
    (analytics_app, "analytics"),
    (query_app, "query"),
    (plot_app, "plot"),
    (token_app, "token"),
    (server_app, "server"),
    (lake_app, "lake"),
):
    app.add_typer(sub_app, name=name)
app.command()(api)
app.command()(demo)
app.command()(serve)
app.command()(status)
app.command()(rejects)
app.command("settings")(show_settings)


def main() -> None:
    """The ``graywave`` entry point."""
    app()
