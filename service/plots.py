"""Histograms as PNG charts (matplotlib's Agg renderer, no display): a day's median histogram and a
user's images of a week. Plain functions of the data that ``graywave.service.daily`` computes
(``median_row``, ``weekly_histograms``); the ``*_figure`` functions give the matplotlib ``Figure``,
the ``*_png`` ones its PNG bytes.

Each call draws on a figure of its own, never through pyplot's global state, so calls may run on
several threads at once: what matplotlib shares between figures is guarded by matplotlib itself
(``Figure.draw`` holds the class-wide ``Figure._render_lock``, and its FreeType fonts are cached per
thread), and a figure built here is touched by one thread only. Drawing is CPU work (tens of ms)
that callers keep off an event loop (the API: on threads of its own, ``api.deps.drawing``). Bin k
of B covers the grey levels k*256/B .. (k+1)*256/B-1, and the x axis says so ("0-15", "16-31", ...).

Every text of a chart (title, tick labels, legend, notes) is drawn as written: a file name is the
user's text, and ``$a^$.jpg`` read as matplotlib's mathtext failed to parse, which made that week's
chart an error for good. No text is parsed as mathtext or sent to TeX (``_as_written``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

GREY_LEVELS = 256
MAX_TICKS = 16
"""At most this many labelled bins on the x axis (every bin up to 16 bins, every k-th beyond)."""
MAX_LEGEND = 12
"""A week with more images than this is drawn without a legend (the title gives the count)."""
SIZE_INCHES = (8.0, 4.5)
DPI = 100


def bin_labels(bins: int) -> list[str]:
    """The grey levels of each bin: ``["0-15", "16-31", ..., "240-255"]`` for 16 bins."""
    if bins < 1 or GREY_LEVELS % bins:
        raise ValueError(f"{bins} bins do not divide {GREY_LEVELS} grey levels")
    width = GREY_LEVELS // bins
    return [f"{k * width}-{(k + 1) * width - 1}" if width > 1 else str(k) for k in range(bins)]


def _grey_axis(axes: Any, bins: int) -> None:
    step = max(1, bins // MAX_TICKS)
    ticks = list(range(0, bins, step))
    labels = bin_labels(bins)
    axes.set_xticks(ticks, [labels[k] for k in ticks], rotation=45, ha="right", fontsize=8)
    axes.set_xlim(-0.6, bins - 0.4)
    axes.set_xlabel("grey levels")
    axes.grid(axis="y", alpha=0.3)


def _as_written(figure: Figure) -> Figure:
    """Every text of the figure drawn as its characters, ``$`` included: never parsed as mathtext,
    never sent to TeX (whatever ``text.usetex`` an operator's matplotlibrc sets)."""
    for text in figure.findobj(Text):
        text.set_parse_math(False)
        text.set_usetex(False)
    return figure


def _figure() -> tuple[Figure, Any]:
    figure = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    return figure, figure.add_subplot()


def median_figure(day: date, median: Mapping[str, Any]) -> Figure:
    """A bar per bin of the day's median histogram (``median_row``: ``users``, ``histogram``)."""
    shares = np.asarray(median["histogram"], dtype=np.float64)
    figure, axes = _figure()
    axes.bar(np.arange(len(shares)), shares, width=0.85, color="0.35")
    axes.set_title(f"Median histogram of {day.isoformat()} across {median['users']} users")
    axes.set_ylabel("median share of a user's pixels")
    _grey_axis(axes, len(shares))
    return _as_written(figure)


def _shares(counts: Sequence[int]) -> np.ndarray:
    values = np.asarray(counts, dtype=np.float64)
    total = values.sum()
    return values / total if total > 0 else values


def weekly_figure(user_id: str, week: str, images: pl.DataFrame, bins: int) -> Figure:
    """A line per image of the week (``weekly_histograms``: ``file_name``, ``upload_date``,
    ``histogram`` counts), each normalised to the image's pixels so that photo size does not matter.
    ``bins`` draws the axis of a week without images."""
    figure, axes = _figure()
    rows = images.select("file_name", "upload_date", "histogram").to_dicts()
    for row in rows:
        shares = _shares(row["histogram"])
        bins = len(shares)
        axes.plot(np.arange(bins), shares, marker="o", markersize=3, linewidth=1.2, label=_label(row))
    count = f"{len(rows)} image{'' if len(rows) == 1 else 's'}"
    axes.set_title(f"Histograms of {user_id}'s images in {week} ({count})")
    axes.set_ylabel("share of the image's pixels")
    if not rows:
        axes.text(0.5, 0.5, "no images this week", transform=axes.transAxes, ha="center", va="center")
        axes.set_ylim(0, 1)
    elif len(rows) <= MAX_LEGEND:
        axes.legend(fontsize=7, loc="best")
    _grey_axis(axes, bins)
    return _as_written(figure)


def _label(row: Mapping[str, Any]) -> str:
    name = str(row["file_name"])
    name = name if len(name) <= 32 else f"{name[:29]}..."
    uploaded = row["upload_date"]
    return f"{name} ({uploaded.isoformat()})" if isinstance(uploaded, date) else name


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes, drawn by Agg."""
    out = io.BytesIO()
    FigureCanvasAgg(figure)  # the figure's canvas: Agg, whatever matplotlib's default backend
    figure.savefig(out, format="png")
    return out.getvalue()


def median_png(day: date, median: Mapping[str, Any]) -> bytes:
    return png(median_figure(day, median))


def weekly_png(user_id: str, week: str, images: pl.DataFrame, bins: int) -> bytes:
    return png(weekly_figure(user_id, week, images, bins))
