"""``graywave demo``: a week of uploads from a few users, processed by real waves and analytics, then a report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl
from PIL import Image

from graywave.config import Settings
from graywave.flows.analytics import run_analytics_flow
from graywave.flows.temporary_server import prefect_api
from graywave.flows.wave import run_wave_flow
from graywave.service import Graywave
from graywave.service.daily import AnalyticsSummary
from graywave.service.samples import encode, synthetic_photo
from graywave.service.tables import TABLES
from graywave.service.terms import upload_key
from graywave.service.wave import WaveSummary

DEMO_USERS = {"alice": -0.4, "bruno": -0.1, "chen": 0.0, "dara": 0.2, "emeka": 0.5}
"""Each demo user's typical brightness, so that their histograms differ."""
DEMO_SIZE = (1024, 768)
WAVES = ("morning", "evening")


@dataclass(frozen=True)
class SampleUpload:
    key: str
    data: bytes


def _oriented_jpeg(rgb: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(rgb, "JPEG", quality=88, exif=exif)


def _as_phone_file(rgb: np.ndarray, kind: int, number: int) -> tuple[str, bytes]:
    """One of the files phones send: plain, progressive or EXIF-rotated JPEG, HEIC, PNG or WebP."""
    if kind == 0:
        return "IMG.jpg", encode(rgb, "JPEG", quality=88)
    if kind == 1:
        return "IMG.jpg", encode(rgb, "JPEG", quality=85, progressive=True)
    if kind == 2:
        return "IMG.jpg", _oriented_jpeg(np.rot90(rgb, 1).copy(), 6)  # stored sideways, shown upright
    if kind == 3:
        return "IMG.heic", encode(rgb, "HEIF", quality=80)
    return ("IMG.png", encode(rgb, "PNG")) if number % 2 else ("IMG.webp", encode(rgb, "WEBP"))


def sample_uploads(day: date, wave: str, day_index: int) -> list[SampleUpload]:
    """The uploads of one wave: one photo per user, in the formats phones produce, plus a few bad files."""
    uploads = []
    for number, (user, brightness) in enumerate(DEMO_USERS.items()):
        seed = day.toordinal() * 100 + number * 10 + WAVES.index(wave)
        rgb = synthetic_photo(*DEMO_SIZE, seed=seed, brightness=brightness + 0.1 * (day_index % 3 - 1))
        name, data = _as_phone_file(rgb, (number + day_index + WAVES.index(wave)) % 5, number)
        uploads.append(SampleUpload(upload_key(day, user, f"{wave}-{name}"), data))
    if day_index == 2 and wave == "evening":
        good = encode(rgb, "JPEG", quality=88)
        uploads += [
            SampleUpload(upload_key(day, "chen", "half-sent.jpg"), good[: len(good) // 2]),
            SampleUpload(upload_key(day, "dara", "notes.jpg"), b"this is a text file, not a photo\n"),
            SampleUpload(upload_key(day, "emeka", "empty.jpg"), b""),
        ]
    return uploads


def _write(graywave: Graywave, uploads: list[SampleUpload]) -> None:
    for upload in uploads:
        graywave.images.receive(upload.key, upload.data)


def run_demo(settings: Settings, days: int = 7) -> list[WaveSummary | AnalyticsSummary]:
    """Upload and process ``days`` days of samples, ending today, as ``graywave serve`` would: each
    day's two waves, then that day's analytics, each a real Prefect flow run, on ``PREFECT_API_URL``
    or else one temporary server of this process that outlives a SIGTERM or Ctrl-C to the process
    group (``flows.temporary_server``)."""
    today = settings.today()
    summaries: list[WaveSummary | AnalyticsSummary] = []
    with prefect_api(), Graywave(settings) as graywave:
        for day_index in range(days):
            day = today - timedelta(days=days - 1 - day_index)
            for wave in WAVES:
                _write(graywave, sample_uploads(day, wave, day_index))
                summaries.append(run_wave_flow(settings, day, wave))
            summaries.append(run_analytics_flow(day=day, top_n=2, metric="design"))
    return summaries


def demo_report(settings: Settings) -> str:
    """What the lake holds after the demo, read back with Polars as an analyst would."""
    today = settings.today()
    with Graywave(settings) as graywave:
        lake = graywave.operations.lake_contents(today)
    per_day = (
        lake.images.group_by("date")
        .agg(
            pl.len().alias("images"),
            pl.col("user_id").n_unique().alias("users"),
            pl.col("format").unique().sort().str.join(","),
        )
        .sort("date")
    )
    rejects = lake.rejects.iter_rows(named=True)
    lines = [
        f"{lake.images.height} images processed, {lake.rejects.height} uploads rejected.",
        "",
        str(per_day),
        "",
        "Rejected uploads:",
        *(f"  {row['source_key']}: {row['reason']} ({row['detail'][:70]})" for row in rejects),
        "",
        f"Analytics of {today}: the median histogram (fractions of pixels per bin) and each user's 2 nearest:",
        "  " + " ".join(f"{value:.3f}" for value in lake.median or []),
        *(
            f"  {user}: {', '.join(f'{n} ({d:.2f})' for n, d in neighbours)}"
            for user, neighbours in lake.similar.items()
        ),
        "",
        f"Processed grayscale images: {lake.blobs_url}/processed/<date>/<user>/<image_id>.jpg",
        f"Delta lake:                 {lake.lake_url}/ ({', '.join(TABLES)})",
        "Read it with Polars (DuckDB, pyarrow: 'Reading the lake' in docs/data.md, offline, locally and on S3):",
        f"  {polars_hint(settings, lake.images_uri)}",
        f"What each wave wrote: graywave lake history images ({lake.images_versions} versions)",
    ]
    return "\n".join(lines)


def polars_hint(settings: Settings, images_uri: str) -> str:
    """A line of Python that reads the lake's ``images`` (at ``images_uri``) with Polars, as it is
    configured: an S3 lake off AWS needs the endpoint (the credentials come from the AWS_* variables,
    as for graywave)."""
    options = ""
    endpoint = settings.s3_endpoint_url
    if images_uri.startswith("s3://") and endpoint:
        allow_http = ", 'aws_allow_http': 'true'" if endpoint.startswith("http://") else ""
        options = f", storage_options={{'aws_endpoint_url': '{endpoint}'{allow_http}}}"
    return f"pl.scan_delta('{images_uri}'{options}).collect()"
