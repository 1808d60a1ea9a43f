"""The lake-read benchmark (``make bench``): the API on the embedded default over a lake of
2,000,000 image rows in 30 days, built synthetically on disk as waves would write it.

100,000 users, two waves a day; each wave appends its rows in files of ``GRAYWAVE_LAKE_FLUSH_ROWS``
(8,192) rows, as ``Backends.record`` does, so the lake has 300 image files. Measured, with
``graywave api`` (uvicorn, one worker) on 127.0.0.1 and one client sending requests one at a time:

- start-up: from starting the server to its first answer, on this lake and on an empty lake;
- ``GET /images/{user}/{id}`` and a user's first list page (``GET /images/{user}``): the first
  request, then p50/p99 of the following ones (the lake's indexes are built in the background
  after start-up: the first request may wait for them);
- the baseline, in the same run: the same reads as plain ``pyarrow.dataset`` scans with the
  filter pushed down (``Lake.scan``), without the index.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from graywave.records import ImageRecord
from graywave.service.tokens import issue_token
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.lake import Lake

ROWS = 2_000_000
DAYS = 30
USERS = 100_000
FLUSH_ROWS = 8192
SAMPLES = 200
BASELINE_SAMPLES = 21
LAST_DAY = date(2026, 11, 25)


def build_lake(root: Path) -> list[tuple[str, str]]:
    """Write the synthetic lake; return (user, image_id) pairs to ask for, spread over the lake."""
    rng = np.random.default_rng(0)
    lake = Lake(LocalBlobStore(root))
    per_wave = ROWS // (DAYS * 2)
    wanted: list[tuple[str, str]] = []
    for d in range(DAYS):
        day = LAST_DAY - timedelta(days=DAYS - 1 - d)
        for w, wave in enumerate(("morning", "evening")):
            users = np.char.add("user", np.char.zfill(rng.integers(0, USERS, per_wave).astype(str), 6))
            ids = np.char.zfill(np.char.mod("%x", rng.integers(0, 2**62, per_wave)), 20)
            keys = np.char.add(np.char.add(f"uploads/{day}/", users), np.char.add("/", np.char.add(ids, ".jpg")))
            at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=10 + 7 * w)
            counts = rng.integers(0, 750_000, (per_wave, 16))
            for start in range(0, per_wave, FLUSH_ROWS):
                part = slice(start, start + FLUSH_ROWS)
                n = len(users[part])
                table = pa.table(
                    {
                        "image_id": ids[part],
                        "user_id": users[part],
                        "upload_date": pa.array([day] * n, pa.date32()),
                        "file_name": np.char.add(ids[part], ".jpg"),
                        "source_key": keys[part],
                        "processed_key": np.char.replace(keys[part], "uploads/", "processed/"),
                        "uploaded_at": pa.array([at] * n, pa.timestamp("us", tz="UTC")),
                        "processed_at": pa.array([at] * n, pa.timestamp("us", tz="UTC")),
                        "width": np.full(n, 4000, np.int32),
                        "height": np.full(n, 3000, np.int32),
                        "format": ["JPEG"] * n,
                        "pixel_count": counts[part].sum(axis=1),
                        "source_bytes": np.full(n, 2_000_000),
                        "processed_bytes": np.full(n, 1_500_000),
                        "histogram": pa.FixedSizeListArray.from_arrays(counts[part].ravel(), 16).cast(
                            pa.list_(pa.int64())
                        ),
                    }
                )
                lake.append("images", table.cast(ImageRecord.ARROW_SCHEMA), day=day, wave=wave)
            wanted += [(str(users[i]), str(ids[i])) for i in rng.integers(0, per_wave, SAMPLES // (DAYS * 2) + 1)]
    return wanted[:SAMPLES]


def serve(data: Path, lake: Path, port: int) -> tuple[subprocess.Popen[bytes], float]:
    """Start ``graywave api``; return it and the seconds until it first answered."""
    env = {
        **os.environ,
        "GRAYWAVE_LAKE_URL": str(lake),
        "GRAYWAVE_BLOB_URL": str(data / "blobs"),
        "GRAYWAVE_API_TOKENS_FILE": str(data / "tokens.json"),
        "PREFECT_HOME": str(data / "prefect"),
    }
    started = time.perf_counter()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("graywave")), "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
            return server, time.perf_counter() - started
        except httpx.TransportError:
            assert server.poll() is None, "graywave api exited"
            time.sleep(0.02)


def rss_mb(process: subprocess.Popen[bytes]) -> float:
    """Resident memory of a process (Linux), in MB."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(call, samples) -> tuple[float, np.ndarray]:
    """(first call in ms, the others' latencies in ms)."""
    latencies = []
    for sample in samples:
        started = time.perf_counter()
        call(sample)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies[0], np.array(latencies[1:])


def line(name: str, first: float, latencies: np.ndarray) -> str:
    p50, p99 = np.percentile(latencies, [50, 99])
    return f"| {name} | {first:.0f} | {p50:.1f} | {p99:.1f} |"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="graywave-lake-bench-") as tmp:
        data = Path(tmp)
        started = time.perf_counter()
        wanted = build_lake(data / "lake")
        lake = Lake(LocalBlobStore(data / "lake"))
        built = time.perf_counter() - started
        files = len(lake.files("images"))
        print(f"lake: {ROWS:,} image rows, {DAYS} days, {files} files, built in {built:.0f} s")
        token = issue_token(data / "tokens.json", "bench", admin=True)

        empty_start, empty_rss = serve_and_stop(data, data / "empty-lake", token)
        server, full_start = serve(data, data / "lake", 8798)
        try:
            with httpx.Client(base_url="http://127.0.0.1:8798", headers={"Authorization": f"Bearer {token}"}) as api:

                def get(pair: tuple[str, str]) -> None:
                    assert api.get(f"/images/{pair[0]}/{pair[1]}").status_code == 200

                def page(pair: tuple[str, str]) -> None:
                    assert api.get(f"/images/{pair[0]}", params={"limit": 100}).json()["total"] >= 1

                get_first, get_lat = timed(get, wanted)
                page_first, page_lat = timed(page, wanted)
            full_rss = rss_mb(server)
        finally:
            server.terminate()
            server.wait(30)

        def scan_get(pair: tuple[str, str]) -> None:
            found = lake.scan("images", filter=(ds.field("user_id") == pair[0]) & (ds.field("image_id") == pair[1]))
            assert found.num_rows == 1

        def scan_user(pair: tuple[str, str]) -> None:
            assert lake.scan("images", filter=ds.field("user_id") == pair[0]).num_rows >= 1

        scan_first, scan_lat = timed(scan_get, wanted[:BASELINE_SAMPLES])
        user_first, user_lat = timed(scan_user, wanted[:BASELINE_SAMPLES])

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"API start-up: {full_start:.2f} s on this lake, {empty_start:.2f} s on an empty lake "
        f"(ratio {full_start / empty_start:.2f})"
    )
    print(
        f"API resident memory: {full_rss:.0f} MB on this lake after the requests, {empty_rss:.0f} MB on an empty lake"
    )
    print("| read | first (ms) | p50 (ms) | p99 (ms) |")
    print("|---|---|---|---|")
    print(line("API GET /images/{user}/{id}", get_first, get_lat))
    print(line("API GET /images/{user} (first page)", page_first, page_lat))
    print(line("baseline: Lake.scan, user_id and image_id pushed down", scan_first, scan_lat))
    print(line("baseline: Lake.scan, user_id pushed down", user_first, user_lat))
    print(
        f"GET p50 vs baseline: {np.median(scan_lat) / np.median(get_lat):.0f}x faster; "
        f"list p50 vs baseline: {np.median(user_lat) / np.median(page_lat):.0f}x faster"
    )


def serve_and_stop(data: Path, lake: Path, token: str) -> tuple[float, float]:
    """(start-up seconds, resident MB after one image request) of the API on ``lake``."""
    server, seconds = serve(data, lake, 8797)
    try:
        answer = httpx.get("http://127.0.0.1:8797/images/nobody/0", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 404
        return seconds, rss_mb(server)
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
