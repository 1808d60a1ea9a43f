"""The Markdown that a flow run shows an operator in the Prefect UI (its artifacts): a wave's summary
and a day's median histogram. The service hands over the figures (``WaveSummary``, the median row);
only the flows know that they are read as Markdown, and where (``flows.artifacts`` publishes them).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from graywave.service.wave import WaveSummary


def wave_markdown(summary: WaveSummary, where: str) -> str:
    """The wave's summary an operator reads (the Prefect UI's artifact); ``where``: where the rows went."""
    reasons = "\n".join(f"| `{reason}` | {count} |" for reason, count in sorted(summary.reasons.items()))
    fallbacks = "\n".join(f"| {label} | {count} |" for label, count in sorted(summary.fallbacks.items()))
    rounds = f"{len(summary.rounds)} rounds, " if len(summary.rounds) > 1 else ""
    handled = summary.processed + summary.rejected
    return "\n".join(
        [
            f"# Wave {summary.wave} of {summary.date}",
            "",
            "| outcome | uploads |",
            "|---|---|",
            f"| processed | {summary.processed} |",
            f"| rejected | {summary.rejected} |",
            f"| skipped (handled before) | {summary.skipped} |",
            "",
            f"{rounds}{summary.seconds:.1f} s ({summary.rate()}).",
            "",
            f"Upload to processed: {summary.latency.line().split(': ', 1)[1]}." if summary.latency else "",
            "",
            *(["| reject reason | uploads |", "|---|---|", reasons, ""] if summary.reasons else []),
            *(
                [
                    f"{summary.fell_back} uploads fell back from the device's codec to the CPU's:",
                    "",
                    "| stage: reason | fallbacks |",
                    "|---|---|",
                    fallbacks,
                    "",
                ]
                if summary.fallbacks
                else []
            ),
            f"Rows: {where}. Lake: {summary.recorded} rows recorded in {summary.commits} flushes"
            + (
                f" ({handled - summary.recorded} were recorded already by another writer)"
                if summary.recorded < handled
                else ""
            )
            + ".",
        ]
    )


def median_markdown(day: date, median: dict[str, Any]) -> str:
    """The day's median histogram as Markdown: a table of the bins (their grey-level ranges) with a
    bar for each, drawn in text so that any Markdown viewer (the Prefect UI's) shows it."""
    histogram = median["histogram"]
    width = 256 // len(histogram)
    top = max(histogram) or 1.0
    rows = [
        f"| {k * width}-{(k + 1) * width - 1} | {share:.4f} | {'█' * round(40 * share / top)} |"
        for k, share in enumerate(histogram)
    ]
    return "\n".join(
        [
            f"# Median histogram of {day}",
            "",
            f"Across {median['users']} users: each bin is the median of the users' shares of pixels in it.",
            "",
            "| grey levels | share | |",
            "|---|---|---|",
            *rows,
        ]
    )
