"""The PNG charts of ``graywave.service.plots``: titles, axis labels, grey-level ticks, and bytes
that decode and follow the data."""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest
from matplotlib.text import Text
from PIL import Image

from graywave.service.plots import bin_labels, median_figure, median_png, weekly_figure, weekly_png
from tests.helpers import DAY

FLAT = [1 / 16] * 16
DARK = [0.5, 0.3, 0.1, 0.1] + [0.0] * 12


def week_of(*histograms: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "file_name": [f"IMG_{k:04d}.jpg" for k in range(len(histograms))],
            "upload_date": [DAY] * len(histograms),
            "histogram": [list(h) for h in histograms],
        },
        schema={"file_name": pl.String, "upload_date": pl.Date, "histogram": pl.List(pl.Int64)},
    )


def ticks(figure) -> list[str]:
    return [label.get_text() for label in figure.axes[0].get_xticklabels()]


def test_bins_are_labelled_with_their_grey_levels():
    assert bin_labels(16)[:2] == ["0-15", "16-31"] and bin_labels(16)[-1] == "240-255"
    assert bin_labels(1) == ["0-255"] and bin_labels(256)[7] == "7"
    with pytest.raises(ValueError, match="do not divide"):
        bin_labels(12)


def test_the_median_chart_has_its_title_labels_and_a_bar_per_bin():
    figure = median_figure(DAY, {"users": 3, "histogram": DARK})
    axes = figure.axes[0]
    assert axes.get_title() == "Median histogram of 2026-11-25 across 3 users"
    assert axes.get_xlabel() == "grey levels" and "share" in axes.get_ylabel()
    assert ticks(figure) == bin_labels(16)
    assert [round(bar.get_height(), 6) for bar in axes.patches] == DARK


def test_the_weekly_chart_draws_a_normalised_line_per_image_with_a_legend():
    figure = weekly_figure("alice", "2026-W48", week_of([2] * 16, [4, 0, 0, 0] + [0] * 12), bins=16)
    axes = figure.axes[0]
    assert axes.get_title() == "Histograms of alice's images in 2026-W48 (2 images)"
    assert ticks(figure) == bin_labels(16) and axes.get_xlabel() == "grey levels"
    assert [list(line.get_ydata()) for line in axes.get_lines()] == [FLAT, [1.0] + [0.0] * 15]
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert legend == ["IMG_0000.jpg (2026-11-25)", "IMG_0001.jpg (2026-11-25)"]
    empty = weekly_figure("alice", "2026-W48", week_of(), bins=16)
    assert not empty.axes[0].get_lines() and ticks(empty) == bin_labels(16)
    assert "no images this week" in [text.get_text() for text in empty.axes[0].texts]
    many = weekly_figure("alice", "2026-W48", week_of(*[[1] * 256] * 20), bins=16)
    assert many.axes[0].get_legend() is None and len(ticks(many)) == 16  # 256 bins: every 16th labelled


def test_the_pngs_decode_and_follow_the_data():
    flat, dark = median_png(DAY, {"users": 2, "histogram": FLAT}), median_png(DAY, {"users": 2, "histogram": DARK})
    one, two = weekly_png("bob", "2026-W48", week_of([1] * 16), 16), weekly_png("bob", "2026-W48", week_of(), 16)
    for data in (flat, dark, one, two):
        picture = Image.open(io.BytesIO(data))
        assert picture.format == "PNG" and picture.size == (800, 450)
        assert np.asarray(picture.convert("L")).std() > 5  # something is drawn
    assert flat != dark and one != two


HOSTILE_NAMES = [
    "$a^$.jpg",
    "$\\frac{1}{0}$.png",
    "x_{$}.jpg",
    "$$.jpg",
    "100$ and 5$.jpg",
    "\\$\\.jpg",
    "a$b^c_d$e.jpg",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_file_names_are_drawn_as_text_never_as_mathtext(name):
    """A file name is the user's text: ``$a^$.jpg`` made matplotlib parse mathtext, fail, and every
    chart of that week answered 500. Every text of a chart is drawn as written."""
    images = week_of([1] * 16).with_columns(pl.lit(name).alias("file_name"))
    data = weekly_png("alice", "2026-W48", images, 16)
    assert Image.open(io.BytesIO(data)).format == "PNG"
    figure = weekly_figure("alice", "2026-W48", images, bins=16)
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == [f"{name if len(name) <= 32 else name[:29] + '...'} (2026-11-25)"]  # as written, not parsed
    texts = [text for text in figure.findobj(Text) if text.get_text()]
    assert texts and all(not text.get_parse_math() and not text.get_usetex() for text in texts)


def test_no_text_of_the_median_chart_is_mathtext():
    figure = median_figure(DAY, {"users": 3, "histogram": DARK})
    texts = [text for text in figure.findobj(Text) if text.get_text()]
    assert texts and all(not text.get_parse_math() and not text.get_usetex() for text in texts)


def test_charts_drawn_on_many_threads_at_once_are_those_drawn_one_at_a_time():
    """graywave keeps no drawing lock (the API draws on threads of its own): each chart is a figure of
    its own, and what matplotlib shares between figures it guards itself. Eight threads drawing four
    different charts over and over give, byte for byte, the PNGs drawn one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    charts = {
        "median": lambda: median_png(DAY, {"users": 3, "histogram": DARK}),
        "flat": lambda: median_png(DAY, {"users": 9, "histogram": FLAT}),
        "week": lambda: weekly_png("alice", "2026-W48", week_of([5, 1, 0, 9] * 4, [1] * 16), 16),
        "empty": lambda: weekly_png("bob", "2026-W48", week_of(), 16),
    }
    alone = {name: draw() for name, draw in charts.items()}
    assert len(set(alone.values())) == len(charts)
    with ThreadPoolExecutor(8) as pool:
        drawn = list(pool.map(lambda name: (name, charts[name]()), [name for name in charts for _ in range(6)]))
    assert all(data == alone[name] for name, data in drawn), [name for name, data in drawn if data != alone[name]]
