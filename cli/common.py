"""What the commands share: the consoles, how a command fails, the settings with Prefect's
environment prepared, the lake's answers and how they are printed.

A command fails by raising: a ``GraywaveError`` as it is (printed in red), or a ``CommandFailed``
that says what could not be done and why (``failing`` and ``refused`` make one). The root command
(``cli.main``) prints it and exits 1; no command prints its own error.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console

from graywave.config import Settings, prepare_prefect_environment
from graywave.errors import GraywaveError

if TYPE_CHECKING:
    import polars as pl

    from graywave.service.graywave import Graywave
    from graywave.service.tables import Commit

T = TypeVar("T")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True, style="dim")


class CommandFailed(GraywaveError):
    """A command that could not do its work: ``what`` (in red), then ``why`` when there is more to say."""

    def __init__(self, what: str, why: str | None = None, *, stderr: bool = False, highlight: bool = True) -> None:
        super().__init__(what if why is None else f"{what}: {why}")
        self.what = what
        self.why = why
        self.stderr = stderr
        self.highlight = highlight


def report(error: GraywaveError) -> None:
    """Print why a command failed: a ``CommandFailed`` as it says, any other error in red."""
    if not isinstance(error, CommandFailed):
        console.print(f"[red]{error}[/red]")
        return
    text = f"[red]{error.what}[/red]" if error.why is None else f"[red]{error.what}:[/red] {error.why}"
    (err_console if error.stderr else console).print(text, highlight=error.highlight)


@contextmanager
def failing(what: str, *, named: bool = False, stderr: bool = False) -> Iterator[None]:
    """A ``GraywaveError`` raised inside becomes ``CommandFailed(what, error)`` (with the error's class
    name first when ``named``)."""
    try:
        yield
    except CommandFailed:
        raise
    except GraywaveError as error:
        why = f"{type(error).__name__}: {error}" if named else str(error)
        raise CommandFailed(what, why, stderr=stderr) from error


@contextmanager
def refused(what: str) -> Iterator[None]:
    """The lake or the blob store refusing a write (a read-only file system, no permission, a full
    disk) becomes ``CommandFailed``: delta-rs raises its own errors for those, not a
    ``GraywaveError``. Anything else is a bug, and goes on as it is."""
    try:
        yield
    except GraywaveError:
        raise
    except Exception as error:
        from graywave.service.terms import refusal

        reason = refusal(error)
        if reason is None:
            raise
        text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split())  # delta-rs's text: colours, lines
        raise CommandFailed(what, f"the storage refused a write ({reason}): {text}", highlight=False) from error


@contextmanager
def flow_failing(what: str) -> Iterator[None]:
    """A flow run by a command: its ``GraywaveError`` named, or the storage refusing a write."""
    with failing(what, named=True), refused(what):
        yield


def me() -> str:
    """How to run this command again in the operator's shell: ``graywave`` where the shell finds this
    one, else the path it was started by (``.venv/bin/graywave`` on a fresh checkout)."""
    started = Path(sys.argv[0])
    if started.name != "graywave":  # run some other way (python -m, a test runner)
        return "graywave"
    found = shutil.which("graywave")
    return "graywave" if found and Path(found).resolve() == started.resolve() else str(started)


def settings_only(*, create_home: bool = True) -> Settings:
    """The settings, with Prefect's environment prepared (graywave's ``PREFECT_HOME``, telemetry off);
    the ``PREFECT_HOME`` folder is not made with ``create_home=False``."""
    settings = Settings()
    prepare_prefect_environment(settings, create_home=create_home)
    return settings


def flow_settings(*, temporary_server: bool = True) -> Settings:
    """The settings, with Prefect's environment prepared (before Prefect is imported): graywave's
    ``PREFECT_HOME``, telemetry off, and the managed local server when one runs and
    ``PREFECT_API_URL`` is not set; otherwise Prefect starts a temporary server, and the command says
    so (unless it will not run on one: ``temporary_server=False``)."""
    settings = settings_only()
    if not os.environ.get("PREFECT_API_URL"):
        from graywave.cli import server

        local = server.running()
        if local is not None:
            os.environ["PREFECT_API_URL"] = local.api_url
        elif temporary_server:
            err_console.print(
                "graywave: no Prefect server is running, so this command starts a temporary one (several seconds);"
                f" `{me()} server start` keeps one running, with the UI"
            )
    return settings


def where(url: str) -> str:
    """A store's URL as an operator can find it: a local folder as an absolute path."""
    return url if "://" in url else str(Path(url).expanduser().resolve())


def print_frame(frame: pl.DataFrame, as_json: bool, title: str) -> None:
    """A Polars frame as a table, or as JSON records."""
    import json

    from rich.table import Table

    if as_json:
        console.print_json(json.dumps(frame.to_dicts(), default=str))
        return
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(column, overflow="fold")  # a long key wraps whole, never cut to "uploads/202…"
    for row in frame.iter_rows():
        table.add_row(*(_cell(value) for value in row))
    console.print(table)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return " ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def answer(question: Callable[[Graywave], T], *, needs_tables: bool = True) -> T:
    """Run a query against the lake, through one ``Graywave`` built from the settings. A lake with no
    table at all (run from another folder, a volume not mounted) fails naming where it looked,
    instead of an empty answer that reads as "nothing happened"."""
    settings = Settings()
    from graywave.service import Graywave

    with Graywave(settings) as graywave, refused("the lake could not be written"):  # lake migrate writes
        if needs_tables and not graywave.operations.has_tables():
            raise CommandFailed(
                "no graywave lake found",
                f"looked in {where(settings.lake_url)} (GRAYWAVE_LAKE_URL):"
                f" run from the deployment's folder, or set it (`{me()} settings` prints it)",
                highlight=False,
            )
        return question(graywave)


def commits_frame(commits: list[Commit]) -> pl.DataFrame:
    """Commits as a table: Delta's operation, then graywave's metadata (which wave, day, flow run)."""
    import polars as pl

    return pl.DataFrame(
        [
            {
                "version": commit.version,
                "time": f"{commit.timestamp:%Y-%m-%d %H:%M:%S}",
                "delta": commit.operation,
                "graywave": commit.graywave.get("operation", ""),
                "wave": commit.graywave.get("wave", ""),
                "day": commit.graywave.get("day", ""),
                "flow_run": commit.graywave.get("flow_run", ""),
            }
            for commit in commits
        ]
    )
