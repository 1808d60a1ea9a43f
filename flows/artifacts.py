"""What a flow run shows an operator in the Prefect UI: artifacts (a summary, a table of rejects, a
progress bar) and tags. The figures are the service's (``WaveSummary``...), their Markdown
``flows.markdown``'s; this module publishes them.

Summaries and tables carry keys (``wave-summary``, ``wave-rejects``, ``analytics-median``...), so
the UI's Artifacts page shows each one's history across runs.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from graywave.config import Settings
from graywave.flows.markdown import median_markdown, wave_markdown
from graywave.service.wave import WaveSummary

if TYPE_CHECKING:
    import polars as pl

WAVE_SUMMARY = "wave-summary"
WAVE_REJECTS = "wave-rejects"
ANALYTICS_MEDIAN = "analytics-median"
ANALYTICS_NEIGHBOURS = "analytics-neighbours"
NEIGHBOUR_SAMPLE_USERS = 10


def run_day(settings: Settings, day: date | None) -> date:
    """The day a flow run works on: ``day``, else the day of its scheduled start in GRAYWAVE_TIMEZONE
    (an evening run that starts late, past midnight, still does its own day; a run started by hand
    is scheduled now)."""
    return day or settings.day_of(flow_run.scheduled_start_time)


def tag_this_run(*tags: str) -> None:
    """Add ``tags`` (``day:2026-11-25``, ``wave:morning``) to the running flow run, so that the UI's
    runs list can be filtered by them (a deployment's runs are created before their day is known)."""
    run_id = flow_run.id
    if run_id is None:
        return
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(UUID(run_id)).tags
        client.update_flow_run(UUID(run_id), tags=sorted({*current, *tags}))


class Progress:
    """A progress artifact of the running flow run, created at the first update and updated as
    batches finish (at most once per percent)."""

    def __init__(self, description: str):
        self.description = description
        self.artifact: UUID | None = None
        self.shown = -1.0

    def update(self, done: int, total: int) -> None:
        percent = round(100.0 * done / total, 0) if total else 100.0
        if percent == self.shown:
            return
        if self.artifact is None:  # sync-compatible: called from sync code, it returns the id itself
            self.artifact = cast(UUID, create_progress_artifact(percent, description=self.description))
        else:
            update_progress_artifact(self.artifact, percent)
        self.shown = percent


def where_rows_go(settings: Settings) -> str:
    """Where a run's rows are recorded, for its summary (never a credential)."""
    where = f"the lake at `{settings.lake_url}`"
    if settings.mongodb_uri is not None:
        where += f" and the MongoDB database `{settings.mongodb_database}`"
    return where


def publish_wave(summary: WaveSummary, settings: Settings) -> None:
    """The wave's summary and its rejects (the first ``REPORTED_REJECTS``), as keyed artifacts."""
    create_markdown_artifact(
        wave_markdown(summary, where_rows_go(settings)),
        key=WAVE_SUMMARY,
        description=summary.line(),
    )
    rows: list[dict[str, Any]] = [
        {"key": r.source_key, "user": r.user_id, "reason": r.reason, "detail": r.detail} for r in summary.rejects
    ]
    create_table_artifact(
        rows or [{"key": "", "user": "", "reason": "", "detail": "no rejects"}],
        key=WAVE_REJECTS,
        description=f"Rejects of wave {summary.wave} of {summary.date}: "
        + (", ".join(f"{reason} {count}" for reason, count in sorted(summary.reasons.items())) or "none")
        + (f" (the first {len(rows)} of {summary.rejected} listed)" if len(rows) < summary.rejected else ""),
    )


def publish_analytics(day: date, median: dict[str, Any], similar: pl.DataFrame) -> None:
    """The day's median histogram (a table with a bar chart) and the nearest users of a sample of users."""
    import polars as pl  # only the analytics need Polars: a wave's start-up does not import it

    create_markdown_artifact(
        median_markdown(day, median), key=ANALYTICS_MEDIAN, description=f"Median histogram of {day}"
    )
    sample = sorted(similar.get_column("user_id").unique().to_list())[:NEIGHBOUR_SAMPLE_USERS]
    rows = similar.filter(pl.col("user_id").is_in(sample)).sort("user_id", "rank").to_dicts()
    create_table_artifact(
        rows or [{"user_id": "", "rank": 0, "neighbour_id": "", "distance": 0.0}],
        key=ANALYTICS_NEIGHBOURS,
        description=f"Nearest users of {len(sample)} users of {day} (a sample; all are in the lake)",
    )
