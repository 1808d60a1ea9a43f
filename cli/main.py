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

import os
import re
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from graywave.config import (
    METRICS_MULTIPROCESS_VARIABLE,
    Settings,
    prepare_prefect_environment,
    validate_wave_name,
)
from graywave.errors import GraywaveError, InvalidInput, RejectReason
from graywave.storage.layout import user_id_problem

if TYPE_CHECKING:
    import polars as pl

    from graywave.kernels.similarity import Metric
    from graywave.storage.lake import Commit, Lake

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.split("\n\n")[0])
wave_app = typer.Typer(no_args_is_help=True, help="Upload waves.")
app.add_typer(wave_app, name="wave")
analytics_app = typer.Typer(no_args_is_help=True, help="Daily analytics.")
app.add_typer(analytics_app, name="analytics")
query_app = typer.Typer(no_args_is_help=True, help="Answer the analytical questions now, from the lake.")
app.add_typer(query_app, name="query")
plot_app = typer.Typer(no_args_is_help=True, help="The analytical answers as PNG charts (matplotlib).")
app.add_typer(plot_app, name="plot")
token_app = typer.Typer(no_args_is_help=True, help="Bearer tokens of the REST API.")
app.add_typer(token_app, name="token")
server_app = typer.Typer(no_args_is_help=True, help="The local Prefect server that graywave manages (and its UI).")
app.add_typer(server_app, name="server")
lake_app = typer.Typer(no_args_is_help=True, help="The Delta lake: history, maintenance, migration.")
app.add_typer(lake_app, name="lake")
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True, style="dim")


def _date(text: str) -> date:
    """A ``--date`` value: YYYY-MM-DD in ASCII digits (not ``２026-…``, ``20261125`` or ``2026-W48-3``,
    which ``date.fromisoformat`` reads too); a wrong day is named as such, not as a wrong format; a
    day whose wave would reach past the calendar (``0001-01-01``, ``9999-12-31``) is refused too."""
    from datetime import timedelta

    from graywave.records import WAVE_LOOKBACK_DAYS
    from graywave.service.daily import iso_day

    try:
        day = iso_day(text)
    except InvalidInput as error:
        raise typer.BadParameter(str(error)) from None
    reach = timedelta(days=WAVE_LOOKBACK_DAYS)  # a wave reads the days before and after its own
    if not date.min + reach <= day <= date.max - reach:
        raise typer.BadParameter(
            f"{text} is outside the days graywave handles ({date.min + reach} to {date.max - reach})"
        )
    return day


def _user(user_id: str) -> str:
    """A USER argument: a user id the API could serve (pattern, reserved names); a usage error (exit
    2) otherwise."""
    problem = user_id_problem(user_id)
    if problem:
        raise typer.BadParameter(problem, param_hint="USER")
    return user_id


def _week(text: str) -> str:
    """A ``--week`` value: an ISO week of the calendar (``service.daily.iso_week``'s rules); a usage
    error (exit 2) otherwise."""
    from graywave.service.daily import iso_week

    try:
        iso_week(text, date(2000, 1, 1))
    except GraywaveError as error:
        raise typer.BadParameter(str(error)) from None
    return text


def _me() -> str:
    """How to run this command again in the operator's shell: ``graywave`` where the shell finds this
    one, else the path it was started by (``.venv/bin/graywave`` on a fresh checkout)."""
    started = Path(sys.argv[0])
    if started.name != "graywave":  # run some other way (python -m, a test runner)
        return "graywave"
    found = shutil.which("graywave")
    return "graywave" if found and Path(found).resolve() == started.resolve() else str(started)


def _settings_only(*, create_home: bool = True) -> Settings:
    """The settings, with Prefect's environment prepared (graywave's ``PREFECT_HOME``, telemetry off);
    the ``PREFECT_HOME`` folder is not made with ``create_home=False``."""
    settings = Settings()
    try:
        prepare_prefect_environment(settings, create_home=create_home)
    except GraywaveError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    return settings


def _settings(*, temporary_server: bool = True) -> Settings:
    """The settings, with Prefect's environment prepared (before Prefect is imported): graywave's
    ``PREFECT_HOME``, telemetry off, and the managed local server when one runs and
    ``PREFECT_API_URL`` is not set; otherwise Prefect starts a temporary server, and the command says
    so (unless it will not run on one: ``temporary_server=False``)."""
    settings = _settings_only()
    if not os.environ.get("PREFECT_API_URL"):
        from graywave.cli import server

        local = server.running()
        if local is not None:
            os.environ["PREFECT_API_URL"] = local.api_url
        elif temporary_server:
            err_console.print(
                "graywave: no Prefect server is running, so this command starts a temporary one (several seconds);"
                f" `{_me()} server start` keeps one running, with the UI"
            )
    return settings


@wave_app.command("run")
def wave_run(
    day: Annotated[
        date | None,
        typer.Option(
            "--date", parser=_date, metavar="YYYY-MM-DD", help="Wave day (default: today in GRAYWAVE_TIMEZONE)."
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
    settings = _settings()
    # No kernel warm-up in the background: on two cores it slowed Prefect's start-up by about a
    # second (the GIL), and an empty wave never needs the kernels; the first batch loads them.
    from graywave.flows.wave import run_wave_flow

    try:
        summary = run_wave_flow(settings, day, name, settle_s=settle, max_duration_s=max_duration)
    except GraywaveError as error:
        console.print(f"[red]the wave could not run:[/red] {type(error).__name__}: {error}")
        raise typer.Exit(1) from None
    except Exception as error:
        _exit_if_refused("the wave could not run", error)
        raise
    console.print(summary.line())


def _exit_if_refused(what: str, error: Exception) -> None:
    """Exit 1 with one line when ``error`` is the lake or the blob store refusing a write (a read-only
    file system, no permission, a full disk): delta-rs raises its own errors for those, not a
    ``GraywaveError``. Anything else is a bug, and the caller raises it on."""
    from graywave.storage.blobs import refusal

    reason = refusal(error)
    if reason is not None:
        text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split())  # delta-rs's text: colours, lines
        console.print(f"[red]{what}:[/red] the storage refused a write ({reason}): {text}", highlight=False)
        raise typer.Exit(1) from None


DayOption = Annotated[
    date | None,
    typer.Option("--date", parser=_date, metavar="YYYY-MM-DD", help="Day (default: today in GRAYWAVE_TIMEZONE)."),
]
MetricOption = Annotated[
    str, typer.Option("--metric", help="design, l1, chisquare, intersection, hellinger, correlation.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]


def _as_of(text: str) -> int | datetime:
    """An ``--as-of`` value: a table version (``12``) or a time (``2026-11-25T18:00``, UTC unless it
    says otherwise)."""
    if re.fullmatch(r"[0-9]+", text):  # ASCII digits: str.isdigit() is true of "²" and "２" too
        digits = text.lstrip("0") or "0"
        if len(digits) > len(str(MAX_VERSION)) or int(digits) > MAX_VERSION:  # int() of 4,301 digits raises
            raise typer.BadParameter(f"{text} is past the last version a Delta table can have ({MAX_VERSION})")
        return int(text)
    neither = f"{text!r} is neither a table version (a number) nor a time (2026-11-25T18:00)"
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.,+Z-]+)?", text):  # ASCII, one form
        raise typer.BadParameter(neither)
    try:
        when = datetime.fromisoformat(text)
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        when.astimezone(UTC)  # 9999-12-31T23:00-01:00 is past the calendar in UTC
    except ValueError:
        raise typer.BadParameter(neither) from None
    except OverflowError:
        raise typer.BadParameter(f"{text} is outside the calendar in UTC") from None
    return when


MAX_VERSION = 2**63 - 1
"""A Delta table's versions are 64-bit integers."""


AsOfOption = Annotated[
    Any,
    typer.Option(
        "--as-of",
        parser=_as_of,
        metavar="VERSION|TIME",
        help="Read the table as it was: a version (graywave lake history) or a time (UTC unless given).",
    ),
]


def _check_metric(metric: str) -> Metric:
    from graywave.kernels.similarity import check_metric

    try:
        return check_metric(metric)
    except GraywaveError as error:
        raise typer.BadParameter(str(error), param_hint="--metric") from None


@wave_app.command("trigger")
def wave_trigger(
    name: Annotated[
        str, typer.Argument(help="The wave deployment's name, as `graywave serve` registers it: morning, evening.")
    ],
    day: Annotated[
        date | None,
        typer.Option("--date", parser=_date, metavar="YYYY-MM-DD", help="Wave day (default: the run's start day)."),
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
    _settings(temporary_server=False)
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    if not PREFECT_API_URL.value():
        console.print(
            f"[red]no Prefect server to run the deployment on:[/red] start one (`{_me()} server start`) and"
            f" `{_me()} serve`, or set PREFECT_API_URL to yours"
        )
        raise typer.Exit(1)
    from graywave.flows.schedule import BURSTS
    from graywave.flows.wave import wave_flow

    if name not in BURSTS:
        raise typer.BadParameter(f"{name!r} is not a wave deployment: {', '.join(BURSTS)}", param_hint="NAME")
    deployment = f"{wave_flow.name}/wave-{name}"
    overrides = {"day": day.isoformat() if day else None, "settle_s": settle, "max_duration_s": max_duration}
    try:
        with get_client(sync_client=True) as client:
            found = client.read_deployment_by_name(deployment)
            parameters = {**(found.parameters or {}), **{k: v for k, v in overrides.items() if v is not None}}
            run = client.create_flow_run_from_deployment(found.id, parameters=parameters, tags=["graywave"])
    except ObjectNotFound:
        console.print(f"[red]no deployment {deployment} on {PREFECT_API_URL.value()}:[/red] run `{_me()} serve` first")
        raise typer.Exit(1) from None
    except httpx.HTTPError as error:
        console.print(f"[red]the Prefect server at {PREFECT_API_URL.value()} cannot be reached:[/red] {error}")
        raise typer.Exit(1) from None
    ui = PREFECT_UI_URL.value()
    console.print(
        f"wave {name}: flow run {run.name} ({run.id}) scheduled now with {parameters}"
        + (f"; follow it at {ui}/runs/flow-run/{run.id}" if ui else ""),
        highlight=False,
    )


@analytics_app.command("run")
def analytics_run(
    day: DayOption = None,
    top_n: Annotated[int, typer.Option("--top-n", min=1, max=100, help="Neighbours per user.")] = 10,
    metric: MetricOption = "design",
) -> None:
    """Compute the day's user histograms, median and similar users into the lake (and MongoDB)."""
    _check_metric(metric)
    _settings()
    from graywave.flows.analytics import run_analytics_flow

    try:
        summary = run_analytics_flow(day=day, top_n=top_n, metric=metric)
    except GraywaveError as error:
        console.print(f"[red]the analytics could not run:[/red] {type(error).__name__}: {error}")
        raise typer.Exit(1) from None
    except Exception as error:
        _exit_if_refused("the analytics could not run", error)
        raise
    console.print(summary.line())


def _print(frame: pl.DataFrame, as_json: bool, title: str) -> None:
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


def _answer(question: Callable[[Lake, Settings], T], *, needs_tables: bool = True) -> T:
    """Run a query against the lake; a question the lake cannot answer exits 1 with the reason. A
    lake with no table at all (run from another folder, a volume not mounted) exits 1 naming where
    it looked, instead of an empty answer that reads as "nothing happened"."""
    settings = Settings()
    from graywave.service.backends import Backends

    with Backends.open(settings) as backends:
        try:
            if needs_tables and all(version < 0 for version in backends.lake.versions()):
                console.print(
                    f"[red]no graywave lake found:[/red] looked in {_where(settings.lake_url)} (GRAYWAVE_LAKE_URL):"
                    f" run from the deployment's folder, or set it (`{_me()} settings` prints it)",
                    highlight=False,
                )
                raise typer.Exit(1)
            return question(backends.lake, settings)
        except GraywaveError as error:
            console.print(f"[red]{error}[/red]")
            raise typer.Exit(1) from None
        except Exception as error:  # lake migrate writes
            _exit_if_refused("the lake could not be written", error)
            raise


WeekOption = Annotated[
    str | None, typer.Option("--week", parser=_week, help="ISO week, e.g. 2026-W48 (default: this week).")
]


def _week_of(user: str, week: str | None, as_of: int | datetime | None = None) -> tuple[date, Any]:
    """Monday of the ISO week and the user's images of it; exit 1 when there are none."""
    from graywave.errors import NoData
    from graywave.service.daily import iso_week, weekly_histograms

    _user(user)

    def question(lake: Lake, settings: Settings) -> tuple[date, Any]:
        monday, sunday = iso_week(week, settings.today())
        images = weekly_histograms(lake, user, monday, sunday, as_of=as_of)
        if images.height == 0:
            raise NoData(f"{user} has no processed images in the week of {monday} to {sunday}")
        return monday, images

    return _answer(question)


@query_app.command("weekly")
def query_weekly(user: str, week: WeekOption = None, as_json: JsonOption = False, as_of: AsOfOption = None) -> None:
    """Every image histogram of a user in an ISO week (Monday to Sunday, GRAYWAVE_TIMEZONE)."""
    monday, frame = _week_of(user, week, as_of)
    _print(frame, as_json, f"{user}: images of the week of {monday}")


@query_app.command("median")
def query_median(day: DayOption = None, as_json: JsonOption = False, as_of: AsOfOption = None) -> None:
    """The median histogram of a day across all users (normalised, per bin)."""
    import polars as pl

    from graywave.service.daily import daily_histograms, median_row

    def question(lake: Lake, settings: Settings) -> tuple[date, Any]:
        when = day or settings.today()
        return when, median_row(daily_histograms(lake, when, as_of=as_of))

    when, row = _answer(question)
    _print(pl.DataFrame([row]), as_json, f"median histogram of {when}")


@query_app.command("similar")
def query_similar(
    user: str,
    n: Annotated[int, typer.Option("-n", min=1, max=1000, help="How many users.")] = 5,
    day: DayOption = None,
    metric: MetricOption = "design",
    as_json: JsonOption = False,
    as_of: AsOfOption = None,
) -> None:
    """The n users whose histograms of the day are nearest to USER's (one against all)."""
    checked = _check_metric(metric)
    _user(user)
    from graywave.service.daily import daily_histograms, similar_to

    def question(lake: Lake, settings: Settings) -> tuple[date, Any]:
        when = day or settings.today()
        return when, similar_to(daily_histograms(lake, when, as_of=as_of), user, n, checked)

    when, frame = _answer(question)
    _print(frame, as_json, f"users most similar to {user} on {when} ({metric})")


OutputOption = Annotated[Path, typer.Option("-o", "--output", help="The PNG file to write.")]


def _write_png(data: bytes, output: Path) -> None:
    try:
        output.write_bytes(data)
    except OSError as error:
        console.print(f"[red]could not write {output}:[/red] {error.strerror}")
        raise typer.Exit(1) from None
    console.print(f"wrote {output} ({len(data):,} bytes)", highlight=False)


@plot_app.command("median")
def plot_median(output: OutputOption = Path("median.png"), day: DayOption = None) -> None:
    """The day's median histogram, a bar per bin labelled with its grey levels."""
    from graywave.service.daily import daily_histograms, median_row
    from graywave.service.plots import median_png

    def question(lake: Lake, settings: Settings) -> tuple[date, Any]:
        when = day or settings.today()
        return when, median_row(daily_histograms(lake, when))

    when, median = _answer(question)
    _write_png(median_png(when, median), output)


@plot_app.command("weekly")
def plot_weekly(user: str, output: OutputOption = Path("week.png"), week: WeekOption = None) -> None:
    """A user's image histograms of an ISO week, a line per image."""
    from graywave.service.daily import week_name
    from graywave.service.plots import weekly_png

    monday, images = _week_of(user, week)
    _write_png(weekly_png(user, week_name(monday), images, Settings().bins), output)


API_HTTP_PROTOCOL = "graywave.api.timeouts:SlowClientCutoff"
"""uvicorn's h11 protocol with a header deadline: named, as the app is, since the CLI imports no API code."""


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the REST API with uvicorn (OpenAPI docs at /docs)."""
    import uvicorn

    # The API runs no flow: Prefect's client only, for the background jobs, on PREFECT_API_URL or the
    # server that `graywave server start` runs. It needs no Prefect home, and makes none.
    _settings_only(create_home=False)
    if not os.environ.get("PREFECT_API_URL"):
        from graywave.cli import server

        if (local := server.running()) is not None:
            os.environ["PREFECT_API_URL"] = local.api_url
    if workers == 1:
        uvicorn.run("graywave.api.app:create_app", factory=True, host=host, port=port, http=API_HTTP_PROTOCOL)
        return
    import tempfile

    # prometheus-client's multiprocess mode: each worker writes its metrics to files in a fresh private
    # folder (never an earlier run's counts), summed by whichever worker answers GET /metrics.
    with tempfile.TemporaryDirectory(prefix="graywave-metrics-", ignore_cleanup_errors=True) as folder:
        os.environ[METRICS_MULTIPROCESS_VARIABLE] = folder  # before uvicorn starts the workers
        uvicorn.run(
            "graywave.api.app:create_app", factory=True, host=host, port=port, workers=workers, http=API_HTTP_PROTOCOL
        )


@token_app.command("issue")
def token_issue(
    label: Annotated[
        str | None, typer.Argument(help="The user id the token is for (or a label, with --admin).")
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="A token for every route and every user.")] = False,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            help="Issue a user token to each user id of this file (one a line; - for stdin) and print"
            " 'user<TAB>token' lines. Every line is checked first: a bad line issues nothing.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Create a token, store its SHA-256 in the token store, and print it (this once)."""
    from graywave.service.tokens import open_token_store

    if from_file is not None:
        if label is not None or admin:
            raise typer.BadParameter("--from-file issues user tokens only: give no USER and no --admin")
        _issue_from_file(from_file)
        return
    if label is None:
        raise typer.BadParameter("give the USER the token is for (or a label with --admin), or --from-file")
    if not admin:
        _user(label)
    try:
        store = open_token_store(Settings())
        try:
            token = store.issue(label, admin)
        finally:
            store.close()
    except GraywaveError as error:  # a user id that cannot be one, a damaged token store
        console.print(f"[red]no token issued:[/red] {error}")
        raise typer.Exit(1) from None
    typer.echo(token)


def _issue_from_file(path: Path) -> None:
    """``token issue --from-file``: the user ids read and checked, then their tokens issued a chunk
    at a time, each chunk's lines printed once it is stored."""
    from graywave.service.tokens import open_token_store, read_user_ids

    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        err_console.print(f"[red]no token issued:[/red] {path} cannot be read ({type(error).__name__}: {error})")
        raise typer.Exit(1) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    try:
        users = read_user_ids(lines)
        store = open_token_store(Settings())
    except GraywaveError as error:
        err_console.print(f"[red]no token issued:[/red] {error}")
        raise typer.Exit(1) from None
    done = 0
    try:
        for issued in store.issue_many(users):
            sys.stdout.write("".join(f"{user}\t{token}\n" for user, token in issued))
            sys.stdout.flush()
            done += len(issued)
    except GraywaveError as error:
        err_console.print(
            f"[red]tokens issued to the first {done} users only (lines 1 to {done}, printed above); none to the"
            f" {len(users) - done} users from line {done + 1} on:[/red] {error}"
        )
        raise typer.Exit(1) from None
    finally:
        store.close()
    err_console.print(f"issued {done} tokens")


@token_app.command("list")
def token_list(
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000, help="Tokens on this page.")] = 100,
    after: Annotated[
        str, typer.Option("--after", help="Start after this token id (the last id of the page before).")
    ] = "",
) -> None:
    """The tokens, a page at a time in token id order: id, label, user, admin (the tokens themselves are
    not stored). The next page: --after the last id shown."""
    import polars as pl

    from graywave.service.tokens import open_token_store

    try:
        store = open_token_store(Settings())
        try:
            tokens = store.page(limit, after.lower())
        finally:
            store.close()
    except GraywaveError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    schema = {"token_id": pl.String, "label": pl.String, "user_id": pl.String, "admin": pl.Boolean}
    more = f"; the next page: --after {tokens[-1].token_id}" if len(tokens) == limit else ""
    _print(pl.DataFrame([vars(t) for t in tokens], schema=schema), as_json, f"{len(tokens)} tokens{more}")


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="The token's id, from `graywave token list`.")]) -> None:
    """Revoke a token: every API process refuses it from its next request on."""
    from graywave.service.tokens import open_token_store

    try:
        store = open_token_store(Settings())
        try:
            revoked = store.revoke(token_id)
        finally:
            store.close()
    except GraywaveError as error:
        console.print(f"[red]no token revoked:[/red] {error}")
        raise typer.Exit(1) from None
    console.print(f"revoked token {revoked.token_id} ({revoked.label}{', admin' if revoked.admin else ''})")


@app.command()
def demo(days: Annotated[int, typer.Option(min=1, max=28, help="Days of sample uploads.")] = 7) -> None:
    """Generate a week of sample uploads, run the waves on them, and report where the results are."""
    settings = _settings()
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
            f" `{_me()} server start` runs a server with its UI, which shows them."
        )
        return
    with_rejects = [f"wave-{s.wave}-{s.date}" for s in summaries if isinstance(s, WaveSummary) and s.rejected]
    console.print(
        f"The Prefect UI: {local.ui_url}/runs. Click a wave's run, then its Artifacts tab: the wave's summary,"
        f" its rejects and their reasons ({', '.join(with_rejects) or 'no run'} had rejects);"
        " analytics-<day> has the median histogram. The Artifacts page shows each one's history."
        f" Stop the server with: {_me()} server stop",
        highlight=False,
    )


@app.command()
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
    settings = _settings(temporary_server=False)  # it refuses one, below
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        console.print(
            f"[red]graywave serve needs a Prefect server that outlives it:[/red] start one (`{_me()} server start`),"
            " or set PREFECT_API_URL to yours, e.g. http://127.0.0.1:4200/api"
        )
        raise typer.Exit(1)
    with get_client(sync_client=True) as client:
        unhealthy = client.api_healthcheck()
    if unhealthy is not None:
        console.print(f"[red]the Prefect server at {url} cannot be reached:[/red] {unhealthy}")
        raise typer.Exit(1)
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


@app.command()
def status() -> None:
    """Recent waves with their counts, uploads pending now, and the latest commits to the lake's images.
    Exit 1, naming where it looked, when the blob store is not there (run from another folder, a
    volume not mounted): an empty report would read as an idle system."""
    from graywave.service.backends import Backends
    from graywave.service.operations import status as status_of

    settings = Settings()
    blobs, lake = _where(settings.blob_url), _where(settings.lake_url)
    with Backends.open(settings) as backends:
        try:
            backends.blobs.check()
        except GraywaveError as error:
            console.print(
                f"[red]no graywave data found:[/red] {error}. Looked for uploads in {blobs} (GRAYWAVE_BLOB_URL)"
                f" and for the lake in {lake} (GRAYWAVE_LAKE_URL): run from the deployment's folder, or set"
                f" those (`{_me()} settings` prints them)",
                highlight=False,
            )
            raise typer.Exit(1) from None
        try:
            found = status_of(backends, settings.today())
        except GraywaveError as error:
            console.print(f"[red]{error}[/red]")
            raise typer.Exit(1) from None
    console.print(f"uploads: {blobs}; lake: {lake}", highlight=False)
    _print(found.waves, False, "waves of the last 7 days")
    console.print(f"pending now: {found.pending} uploads for a wave of {settings.today()}")
    if found.commits:
        _print(_commits_frame(found.commits), False, "latest commits to images")
    else:
        console.print("the lake: no commit yet")


def _where(url: str) -> str:
    """A store's URL as an operator can find it: a local folder as an absolute path."""
    return url if "://" in url else str(Path(url).expanduser().resolve())


def _commits_frame(commits: list[Commit]) -> pl.DataFrame:
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


@lake_app.command("history")
def lake_history(
    table: Annotated[
        str, typer.Argument(help="images, rejects, daily_user_histograms, daily_median, similar_users.")
    ] = "images",
    limit: Annotated[int, typer.Option("-n", min=1, max=1_000_000, help="How many commits, newest first.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """A table's commits, newest first: Delta's operation and graywave's (which wave, day and flow run)."""
    from graywave.storage.lake import check_table

    try:
        checked = check_table(table)
    except GraywaveError as error:
        raise typer.BadParameter(str(error), param_hint="TABLE") from None
    commits = _answer(lambda lake, _: lake.history(checked, limit))
    if not commits:
        console.print(f"[red]{table} has no commit yet[/red]")
        raise typer.Exit(1)
    _print(_commits_frame(commits), as_json, f"commits to {table}")


@lake_app.command("optimize")
def lake_optimize(
    days: Annotated[int, typer.Option("--days", min=1, max=3660, help="Compact the last N days' partitions.")] = 3,
    every_day: Annotated[bool, typer.Option("--all", help="Compact every partition.")] = False,
) -> None:
    """Run the lake's maintenance now (the flow that graywave serve runs nightly): compaction, Z-order
    of images by user, checkpoints, vacuum of files older than GRAYWAVE_LAKE_RETENTION_HOURS."""
    _settings()
    from graywave.flows.maintenance import run_lake_maintenance_flow

    try:
        done = run_lake_maintenance_flow(days=None if every_day else days)
    except GraywaveError as error:
        console.print(f"[red]the maintenance could not run:[/red] {type(error).__name__}: {error}")
        raise typer.Exit(1) from None
    except Exception as error:
        _exit_if_refused("the maintenance could not run", error)
        raise
    if not done:
        console.print("[red]the lake has no table yet: nothing to maintain[/red]")
        raise typer.Exit(1)
    for table in done:
        console.print(table.line(), highlight=False)


@lake_app.command("migrate")
def lake_migrate() -> None:
    """Convert a lake written before Delta Lake (hive-partitioned Parquet files) into Delta tables, in
    place: nothing is rewritten; each table's files become its first version."""
    converted = _answer(lambda lake, _: lake.migrate(), needs_tables=False)
    if not converted:
        console.print("[red]nothing to convert: no hive-Parquet table without a Delta log[/red]")
        raise typer.Exit(1)
    console.print(f"converted to Delta tables: {', '.join(converted)}", highlight=False)


@app.command()
def rejects(
    day: DayOption = None,
    reason: Annotated[RejectReason | None, typer.Option("--reason", help="Only this reason.")] = None,
    as_json: JsonOption = False,
    as_of: AsOfOption = None,
) -> None:
    """The uploads the waves of a day rejected, with the reason and its detail."""
    from graywave.service.operations import rejects_of

    def question(lake: Lake, settings: Settings) -> tuple[date, Any]:
        when = day or settings.today()
        return when, rejects_of(lake, when, None if reason is None else reason.value, as_of=as_of)

    when, frame = _answer(question)
    _print(frame, as_json, f"{frame.height} rejects of {when}" + (f" ({reason.value})" if reason else ""))


@server_app.command("start")
def server_start(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the API and the UI.")] = 4200,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Start Prefect's server in the background, with graywave's PREFECT_HOME and telemetry off, and
    install graywave's automations on it (a run whose heartbeats stop is marked Crashed)."""
    from graywave.flows.automations import use_graywave_heartbeat

    heartbeat_s = use_graywave_heartbeat()
    _settings_only()
    from graywave.cli import server

    if (local := server.running()) is None:
        try:
            local = server.start(host, port)
        except RuntimeError as error:
            console.print(f"[red]the Prefect server did not start:[/red] {error}")
            raise typer.Exit(1) from None
        started = True
    else:
        started = False
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
        f"stop it with: {_me()} server stop",
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
        console.print(f"[red]the local Prefect server did not stop:[/red] {error}")
        raise typer.Exit(1) from None
    if not stopped:
        console.print("[red]no local Prefect server was running[/red]")
        raise typer.Exit(1)
    console.print("the local Prefect server is stopped")


@server_app.command("status")
def server_status() -> None:
    """Whether the local Prefect server runs, and where its UI is (exit 1 when it does not run)."""
    from graywave.cli import server

    server.use_prefect_home(Settings().prefect_home)  # a read: it creates no Prefect home

    local = server.running()
    if local is None:
        console.print(f"no local Prefect server is running: {_me()} server start", highlight=False)
        raise typer.Exit(1)
    console.print(f"running: the UI at {local.ui_url}, the API at {local.api_url}", highlight=False)


@app.command("settings")
def show_settings() -> None:
    """Print the configuration in force (from GRAYWAVE_* variables and defaults)."""
    settings = Settings()
    for key, value in settings.model_dump().items():
        console.print(f"GRAYWAVE_{key.upper()}={value}", highlight=False)
    console.print(f"# a wave's batches run on: {settings.batch_runner}", highlight=False)


def main() -> None:
    app()
