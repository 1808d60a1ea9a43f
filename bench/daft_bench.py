"""graywave against a peer batch engine, Daft (``make bench``).

The same 240 photos (120 of 4 MP and 120 of 12 MP, photo-like JPEGs of about 1 and 2 MB) in a blob
folder, on this machine's cores, each side a fresh process timed from its start to its exit:

- graywave: ``graywave wave run`` against the running local Prefect server (``graywave server
  start``): start-up, listing, decode to luma, 16-bin histograms, the processed grayscale JPEGs
  written beside the originals, the rows recorded in the Delta lake;
- Daft: ``daft.from_glob_path`` -> ``download`` -> ``decode_image(mode="L")`` -> a histogram UDF
  (``numpy.bincount``, the same 16 bins) -> ``write_parquet``, with its native runner on all cores.
  It writes no processed images: it does less than the wave.

Target: Daft's time at least 1.5x graywave's. Each side runs ``RUNS`` times (a fresh lake, and no
processed images, before each wave), the median is reported. Both must count every pixel of every
photo (checked), and their histograms are compared: they differ by a few percent of the pixels,
because Daft's ``mode="L"`` is the image crate's BT.709 luma (pure red is 54), graywave's is BT.601's,
the JPEG's own Y plane and Pillow's ``convert("L")`` (pure red is 76).
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
from api_bench import deployment_env, free_port
from startup_bench import once

from graywave.config import Settings
from graywave.service.samples import PHONE_12MP, jpeg_near_size, synthetic_photo
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.layout import upload_key

RUNS = 3
PHOTOS = 240
PHONE_4MP = (2304, 1728)
SIZES = {"4 MP": (PHONE_4MP, 1_000_000, 3.0), "12 MP": (PHONE_12MP, 2_000_000, 4.0)}
"""Class -> ((width, height), target bytes, sensor noise)."""
DISTINCT = 3
OUT = Path(__file__).with_name("out")
BIN = Path(sys.executable).parent

DAFT_PIPELINE = """
import sys

import daft
import numpy as np
from daft import col
from daft.functions import decode_image, download

BINS = 16


@daft.func.batch(return_dtype=daft.DataType.list(daft.DataType.int64()))
def histogram(images: daft.Series) -> list[list[int]]:
    return [np.bincount(np.asarray(image).reshape(-1) >> 4, minlength=BINS).tolist() for image in images.to_pylist()]


frame = daft.from_glob_path(sys.argv[1])
frame = frame.with_column("image", decode_image(download(col("path")), mode="L"))
frame = frame.select(col("path"), histogram(col("image")).alias("histogram"))
frame.write_parquet(sys.argv[2])
"""


def samples() -> dict[str, list[bytes]]:
    """``DISTINCT`` JPEGs per class, cached in bench/out/samples."""
    cache = OUT / "samples"
    found: dict[str, list[bytes]] = {}
    for label, ((width, height), target, noise) in SIZES.items():
        files = []
        for i in range(DISTINCT):
            path = cache / f"peer-{label.replace(' ', '')}-{i}.jpg"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(jpeg_near_size(synthetic_photo(width, height, seed=200 + i, noise=noise), target))
            files.append(path.read_bytes())
        found[label] = files
    return found


def timed(command: list[str], env: dict[str, str], before: Callable[[], object]) -> list[float]:
    """Seconds of each of ``RUNS`` runs of ``command``, ``before()`` resetting the state each time."""
    seconds = []
    for _ in range(RUNS):
        before()
        seconds.append(once(command, env))
    return seconds


def main() -> None:
    photos = samples()
    with tempfile.TemporaryDirectory() as tmp:
        env = deployment_env(tmp, GRAYWAVE_DEVICE="cpu", DO_NOT_TRACK="1", DAFT_ANALYTICS_ENABLED="0")
        env.pop("PREFECT_API_URL", None)  # graywave finds its local server by itself
        store = LocalBlobStore(f"{tmp}/blobs")
        day = Settings(blob_url=f"{tmp}/blobs", lake_url=f"{tmp}/lake").today()
        megapixels = 0.0
        for k in range(PHOTOS):
            label = list(SIZES)[k % 2]
            data = photos[label][k // 2 % DISTINCT]
            store.write(upload_key(day, f"user{k % 60:03d}", f"IMG_{k:04d}.jpg"), data, "image/jpeg")
            width, height = SIZES[label][0]
            megapixels += width * height / 1e6
        uploads = f"{tmp}/blobs/uploads/**/*.jpg"
        mean_mb = statistics.mean(len(d) for files in photos.values() for d in files) / 1e6

        def fresh_lake() -> None:
            shutil.rmtree(f"{tmp}/lake", ignore_errors=True)
            shutil.rmtree(f"{tmp}/blobs/processed", ignore_errors=True)

        graywave = str(BIN / "graywave")
        port = free_port()
        started = subprocess.run([graywave, "server", "start", "--port", str(port)], env=env, capture_output=True)
        assert started.returncode == 0, started
        try:
            subprocess.run([graywave, "wave", "run"], env=env, check=True, capture_output=True)  # a first one: warm
            wave = timed([graywave, "wave", "run"], env, before=fresh_lake)
        finally:
            subprocess.run([graywave, "server", "stop"], env=env, capture_output=True)
        ours = pl.read_parquet(f"{tmp}/lake/images/**/*.parquet", hive_partitioning=True)

        script = Path(tmp, "daft_pipeline.py")
        script.write_text(DAFT_PIPELINE)
        out = Path(tmp, "daft-out")
        python = str(BIN / "python")
        daft = timed([python, str(script), uploads, str(out)], env, before=lambda: shutil.rmtree(out, True))
        theirs = pl.read_parquet(f"{out}/*.parquet")

    assert ours.height == PHOTOS and theirs.height == PHOTOS, (ours.height, theirs.height)
    our_counts = {Path(k).name: h for k, h in zip(ours["source_key"], ours["histogram"].to_list(), strict=True)}
    moved = []
    for path, counts in zip(theirs["path"], theirs["histogram"].to_list(), strict=True):
        mine = np.array(our_counts[Path(path).name])
        assert sum(counts) == mine.sum(), "both count every pixel"
        moved.append(np.abs(np.array(counts) - mine).sum() / 2 / mine.sum())
    wave_s, daft_s = statistics.median(wave), statistics.median(daft)
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; {PHOTOS} photos ({PHOTOS // 2} of 4 MP, "
        f"{PHOTOS // 2} of 12 MP, mean {mean_mb:.2f} MB, {megapixels:.0f} MP in all); medians of {RUNS} fresh processes.",
        "",
        "| pipeline | seconds (runs) | images/s | what it writes |",
        "|---|---|---|---|",
        f"| `graywave wave run`, local server running, start-up included | **{wave_s:.2f}** "
        f"({', '.join(f'{s:.2f}' for s in wave)}) | {PHOTOS / wave_s:.1f} | processed JPEGs + Delta table rows (one MERGE commit) |",
        f"| Daft {_daft_version()}: glob -> download -> decode_image(L) -> histogram UDF -> Parquet | **{daft_s:.2f}** "
        f"({', '.join(f'{s:.2f}' for s in daft)}) | {PHOTOS / daft_s:.1f} | Parquet rows |",
        "",
        f"Daft / graywave: **{daft_s / wave_s:.2f}x** (target >= 1.5x). Pixels in another bin than graywave's: "
        f"mean {100 * statistics.mean(moved):.2f}%, max {100 * max(moved):.2f}% of a photo (Daft's L is BT.709 "
        "luma, graywave's BT.601).",
    ]
    OUT.mkdir(exist_ok=True)
    (OUT / "daft.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _daft_version() -> str:
    from importlib.metadata import version

    return version("daft")


if __name__ == "__main__":
    main()
