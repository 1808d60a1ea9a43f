"""The wave benchmark (``make bench``): graywave's CPU path against a naive baseline and the codec floors.

Measured in one run, on photo-like 12 MP JPEGs of about 1, 2 and 10 MB made by the project:

  (a)  naive baseline: Pillow RGB decode, convert("L"), numpy.histogram, save the JPEG to disk
  (b)  decode floor:   libjpeg-turbo straight to gray + histogram, nothing else (bytes in memory)
  (b') output floor:  (b) + encoding the processed grayscale JPEG (in memory)
  (c)  graywave without Prefect: histograms only (decode_luma + histogram), and the whole batch path
       (read the upload from the blob folder, decode, histogram, write the processed JPEG), 1 and 2 workers
  (d)  a whole ``graywave wave run`` (CLI, Prefect, the Delta lake) of 320 uploads on all cores, its fixed
       start-up (a run with nothing pending) measured on its own and taken out of the per-image figure;
       with blobs and lake in a local folder, then on a local S3 server (moto's server mode)

Figures are images/s and MP/s; "per core" rows run on one thread. Ratios compare rows of this run.
"""

from __future__ import annotations

import io
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

from graywave.config import Settings
from graywave.kernels import histogram, select_device
from graywave.kernels.codecs import decode_luma
from graywave.service.batch import Upload, process_uploads
from graywave.service.samples import PHONE_12MP, jpeg_near_size, synthetic_photo
from graywave.storage.blobs import LocalBlobStore, open_blob_store
from graywave.storage.layout import parse_upload_key, upload_key

OUT = Path(__file__).with_name("out")
SIZES = {"1 MB": (1_000_000, 2.0), "2 MB": (2_000_000, 4.0), "10 MB": (10_000_000, 14.0)}
"""Size class -> (target bytes, sensor noise of the synthetic photo)."""
DISTINCT = 3
REPEAT = 4
WAVE_UPLOADS = 320
DAY = date(2026, 11, 25)


def samples() -> dict[str, list[bytes]]:
    """``DISTINCT`` JPEGs per size class, cached in bench/out/samples."""
    cache = OUT / "samples"
    result: dict[str, list[bytes]] = {}
    for label, (target, noise) in SIZES.items():
        files = []
        for i in range(DISTINCT):
            path = cache / f"{label.replace(' ', '')}-{i}.jpg"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(jpeg_near_size(synthetic_photo(*PHONE_12MP, seed=100 + i, noise=noise), target))
            files.append(path.read_bytes())
        result[label] = files
    return result


def rate(work: Callable[[bytes], object], images: Sequence[bytes], workers: int = 1) -> float:
    """Images per second over ``REPEAT`` passes of ``images`` (best of 3), on ``workers`` threads."""
    batch = list(images) * REPEAT
    best = 0.0
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, images))  # warm up: JIT, caches
        for _ in range(3):
            start = time.perf_counter()
            list(pool.map(work, batch))
            best = max(best, len(batch) / (time.perf_counter() - start))
    return best


def naive(out_dir: Path) -> Callable[[bytes], object]:
    def run(data: bytes) -> object:
        gray = Image.open(io.BytesIO(data)).convert("RGB").convert("L")
        counts, _ = np.histogram(np.asarray(gray), bins=16, range=(0, 256))
        gray.save(out_dir / f"naive-{threading.get_ident()}.jpg", quality=90)
        return counts

    return run


def decode_floor(data: bytes) -> object:
    return histogram(simplejpeg.decode_jpeg(data, colorspace="GRAY")[..., 0])


def output_floor(data: bytes) -> object:
    plane = simplejpeg.decode_jpeg(data, colorspace="GRAY")
    counts = histogram(plane[..., 0])
    simplejpeg.encode_jpeg(plane, quality=90, colorspace="GRAY")
    return counts


def graywave_histograms(data: bytes) -> object:
    return histogram(decode_luma(data, 10**9).plane)


def graywave_batch_rate(root: Path, images: Sequence[bytes], workers: int, settings: Settings) -> float:
    """The batch path of a wave (no Prefect), ``workers`` batches at once, from and to the blob folder."""
    store = LocalBlobStore(root)
    uploads = []
    for i, data in enumerate(list(images) * REPEAT):
        key = upload_key(DAY, f"user{i:04d}", "photo.jpg")
        store.write(key, data, "image/jpeg")
    blobs = {blob.key: blob for blob in store.list("uploads/")}
    uploads = [Upload(parse_upload_key(key), blob) for key, blob in sorted(blobs.items())]
    device = select_device("cpu")
    process_uploads(uploads[: len(images)], store, settings, device)  # warm up
    shards = [uploads[w::workers] for w in range(workers)]
    best = 0.0
    with ThreadPoolExecutor(workers) as pool:
        for _ in range(3):
            start = time.perf_counter()
            list(pool.map(lambda shard: process_uploads(shard, store, settings, device), shards))
            best = max(best, len(uploads) / (time.perf_counter() - start))
    return best


def wave_cli(blob_url: str, lake_url: str, images: Sequence[bytes], extra_env: dict[str, str]) -> tuple[float, float]:
    """Seconds of a ``graywave wave run`` with nothing pending, and of one with ``WAVE_UPLOADS`` uploads."""
    env = (
        os.environ
        | extra_env
        | {
            "GRAYWAVE_BLOB_URL": blob_url,
            "GRAYWAVE_LAKE_URL": lake_url,
            "GRAYWAVE_DEVICE": "cpu",
            "PREFECT_HOME": str(OUT / "prefect"),
        }
    )
    command = [str(Path(sys.executable).with_name("graywave")), "wave", "run", "--date", DAY.isoformat()]
    if "://" not in blob_url:
        Path(blob_url).mkdir(parents=True, exist_ok=True)  # a wave fails on a missing upload folder

    def timed(name: str) -> float:
        start = time.perf_counter()
        subprocess.run([*command, "--name", name], env=env, check=True, capture_output=True)
        return time.perf_counter() - start

    timed("warmup")  # the first run creates Prefect's database under PREFECT_HOME
    startup = min(timed("empty") for _ in range(2))
    store = open_blob_store(blob_url, extra_env.get("GRAYWAVE_S3_ENDPOINT_URL"))
    for i in range(WAVE_UPLOADS):
        store.write(upload_key(DAY, f"user{i:04d}", "photo.jpg"), images[i % len(images)], "image/jpeg")
    return startup, timed("bench")


def s3_wave(images: Sequence[bytes]) -> tuple[float, float]:
    """The same wave with blobs and lake on moto's S3 server, on 127.0.0.1 in this process."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(credentials)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    try:
        return wave_cli(
            "s3://bench/blobs", "s3://bench/lake", images, credentials | {"GRAYWAVE_S3_ENDPOINT_URL": endpoint}
        )
    finally:
        server.stop()


def markdown(
    rows: list[tuple[str, float, dict[str, float]]], waves: dict[str, tuple[float, float]], wave_label: str
) -> str:
    megapixels = PHONE_12MP[0] * PHONE_12MP[1] / 1e6
    lines = [
        "| 12 MP JPEG | (a) naive | (b) decode floor | (b') output floor | (c) histograms only | (c) batch, 1 worker | (c) batch, 2 workers |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, mean_mb, f in rows:
        cells = [f"{f[k]:.1f} img/s ({f[k] * megapixels:.0f} MP/s)" for k in ("a", "b", "b'", "c-hist", "c", "c2")]
        lines.append(f"| {label} (mean {mean_mb:.2f} MB) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| ratio (target) | " + " | ".join(label for label, _, _ in rows) + " |",
        "|---|" + "---|" * len(rows),
        "| (c) histograms only / (b), per core (>= 0.9) | "
        + " | ".join(f"{f['c-hist'] / f['b']:.2f}" for _, _, f in rows)
        + " |",
        "| (c) batch with outputs / (a), per core (>= 1.5) | "
        + " | ".join(f"{f['c'] / f['a']:.2f}" for _, _, f in rows)
        + " |",
        "| (c) 2 workers / 1 worker (>= 1.8) | " + " | ".join(f"{f['c2'] / f['c']:.2f}" for _, _, f in rows) + " |",
    ]
    floor = dict((label, f) for label, _, f in rows)[wave_label]["b'2"]
    lines += [
        "",
        f"(d) `graywave wave run` of {WAVE_UPLOADS} uploads of the {wave_label} class on all cores; "
        f"(b') on all cores: {floor:.1f} img/s.",
        "",
        "| blobs and lake | wave, in all | fixed start-up (nothing pending) | per image | ratio to (b') (target >= 0.8) |",
        "|---|---|---|---|---|",
    ]
    for where, (startup, wave_s) in waves.items():
        wave_rate = WAVE_UPLOADS / (wave_s - startup)
        lines.append(
            f"| {where} | {wave_s:.1f} s | {startup:.1f} s | {wave_rate:.1f} img/s ({wave_rate * megapixels:.0f} MP/s) "
            f"| {wave_rate / floor:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    cores = os.cpu_count() or 1
    machine = f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"
    images = samples()
    settings = Settings(device="cpu", jpeg_quality=90)
    rows = []
    for label, files in images.items():
        mean_mb = sum(map(len, files)) / len(files) / 1e6
        with tempfile.TemporaryDirectory() as tmp:
            figures = {
                "a": rate(naive(Path(tmp)), files),
                "b": rate(decode_floor, files),
                "b'": rate(output_floor, files),
                "c-hist": rate(graywave_histograms, files),
                "c": graywave_batch_rate(Path(tmp) / "c1", files, 1, settings),
                "c2": graywave_batch_rate(Path(tmp) / "c2", files, 2, settings),
                "b'2": rate(output_floor, files, workers=cores),
            }
        rows.append((label, mean_mb, figures))
        print(label, {k: round(v, 2) for k, v in figures.items()}, flush=True)
    wave_label = "2 MB"
    with tempfile.TemporaryDirectory() as tmp:
        waves = {"local folder": wave_cli(f"{tmp}/blobs", f"{tmp}/lake", images[wave_label], {})}
    waves["S3 (moto server on 127.0.0.1)"] = s3_wave(images[wave_label])
    table = f"Machine: {machine}.\n\n" + markdown(rows, waves, wave_label)
    (OUT / "results.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
