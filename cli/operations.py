"""``graywave status``, ``graywave rejects`` and ``graywave settings``: what an operator looks at."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Annotated, Any

import typer

from graywave.cli.common import CommandFailed, answer, commits_frame, console, me, print_frame, where
from graywave.cli.options import AsOfOption, DayOption, JsonOption
from graywave.config import Settings
from graywave.errors import GraywaveError, RejectReason

if TYPE_CHECKING:
    from graywave.service.graywave import Graywave


def status() -> None:
    """Recent waves with their counts, uploads pending now, and the latest commits to the lake's images.
    Exit 1, naming where it looked, when the blob store is not there (run from another folder, a
    volume not mounted): an empty report would read as an idle system."""
    from graywave.service import Graywave

    settings = Settings()
    blobs, lake = where(settings.blob_url), where(settings.lake_url)
    with Graywave(settings) as graywave:
        try:
            graywave.operations.check_blob_store()
        except GraywaveError as error:
            raise CommandFailed(
                "no graywave data found",
                f"{error}. Looked for uploads in {blobs} (GRAYWAVE_BLOB_URL) and for the lake in {lake}"
                f" (GRAYWAVE_LAKE_URL): run from the deployment's folder, or set those (`{me()} settings` prints"
                " them)",
                highlight=False,
            ) from error
        found = graywave.operations.status()
    console.print(f"uploads: {blobs}; lake: {lake}", highlight=False)
    print_frame(found.waves, False, "waves of the last 7 days")
    console.print(f"pending now: {found.pending} uploads for a wave of {settings.today()}")
    if found.commits:
        print_frame(commits_frame(found.commits), False, "latest commits to images")
    else:
        console.print("the lake: no commit yet")


def rejects(
    day: DayOption = None,
    reason: Annotated[RejectReason | None, typer.Option("--reason", help="Only this reason.")] = None,
    as_json: JsonOption = False,
    as_of: AsOfOption = None,
) -> None:
    """The uploads the waves of a day rejected, with the reason and its detail."""

    def question(graywave: Graywave) -> tuple[date, Any]:
        when = day or graywave.settings.today()
        return when, graywave.operations.rejects(when, None if reason is None else reason.value, as_of=as_of)

    when, frame = answer(question)
    print_frame(frame, as_json, f"{frame.height} rejects of {when}" + (f" ({reason.value})" if reason else ""))


def show_settings() -> None:
    """Print the configuration in force (from GRAYWAVE_* variables and defaults)."""
    settings = Settings()
    for key, value in settings.model_dump().items():
        console.print(f"GRAYWAVE_{key.upper()}={value}", highlight=False)
    console.print(f"# a wave's batches run on: {settings.batch_runner}", highlight=False)
