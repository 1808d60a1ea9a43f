"""The GPU benchmark (issue #6): run on a machine with an NVIDIA GPU, CuPy and nvImageCodec
(``uv sync --extra gpu``), as ``python bench/gpu_bench.py``. Not part of ``make bench``: this
project's own machines have no GPU. Status: written without a GPU; not yet run.

In one run on the same machine: the batch path of 12 MP photos (1, 2 and 10 MB classes) on the CPU
(``process_uploads``, all cores) and on the GPU (``process_uploads_batched`` with nvImageCodec), from
and to a local folder; the all-pairs top-10 of 100,000 users on the GPU against the CPU kernel; and
the projected wall time of a 100,000-upload burst from these figures.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import cupy as cp
import numpy as np
from similarity_bench import synthetic_day
from wave_bench import DAY, PHONE_12MP, samples

from graywave.config import Settings
from graywave.kernels import select_device
from graywave.kernels.similarity import all_pairs_nearest
from graywave.service.batch import Upload, luma_batch_codec, process_uploads, process_uploads_batched
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.layout import parse_upload_key, upload_key

UPLOADS = 256
BATCH = 64


def uploads_of(root: Path, files: list[bytes]) -> tuple[LocalBlobStore, list[Upload]]:
    store = LocalBlobStore(root)
    for i in range(UPLOADS):
        store.write(upload_key(DAY, f"user{i:04d}", "photo.jpg"), files[i % len(files)], "image/jpeg")
    blobs = {blob.key: blob for blob in store.list("uploads/")}
    return store, [Upload(parse_upload_key(key), blob) for key, blob in sorted(blobs.items())]


def main() -> None:
    settings = Settings(device="gpu")
    gpu, cpu = select_device("gpu"), select_device("cpu")
    codec = luma_batch_codec(gpu)
    assert codec is not None, "nvImageCodec is not installed"
    cores = os.cpu_count() or 1
    megapixels = PHONE_12MP[0] * PHONE_12MP[1] / 1e6
    print(f"GPU: {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}, CPU cores: {cores}")
    print("| 12 MP JPEG | CPU, all cores | GPU batch path | GPU / CPU |")
    print("|---|---|---|---|")
    gpu_rates = {}
    for label, files in samples().items():
        with tempfile.TemporaryDirectory() as tmp:
            store, uploads = uploads_of(Path(tmp), files)
            batches = [uploads[i : i + BATCH] for i in range(0, len(uploads), BATCH)]
            process_uploads_batched(batches[0][:4], store, settings, gpu, codec)  # warm up
            start = time.perf_counter()
            with ThreadPoolExecutor(cores) as pool:
                list(
                    pool.map(
                        lambda b, store=store: process_uploads(b, store, settings, cpu),
                        [uploads[w::cores] for w in range(cores)],
                    )
                )
            cpu_rate = len(uploads) / (time.perf_counter() - start)
            start = time.perf_counter()
            for batch in batches:
                process_uploads_batched(batch, store, settings, gpu, codec)
            gpu_rates[label] = len(uploads) / (time.perf_counter() - start)
        print(
            f"| {label} | {cpu_rate:.0f} img/s ({cpu_rate * megapixels:.0f} MP/s) "
            f"| {gpu_rates[label]:.0f} img/s ({gpu_rates[label] * megapixels:.0f} MP/s) | {gpu_rates[label] / cpu_rate:.1f}x |"
        )
    fractions = synthetic_day(100_000)
    all_pairs_nearest(cp.asarray(fractions[:2000]), 10, "design")
    for metric in ("design", "l1"):
        start = time.perf_counter()
        gpu_result = all_pairs_nearest(cp.asarray(fractions), 10, metric)
        gpu_s = time.perf_counter() - start
        start = time.perf_counter()
        cpu_result = all_pairs_nearest(fractions, 10, metric)
        cpu_s = time.perf_counter() - start
        same = np.array_equal(gpu_result[0], cpu_result[0]) and np.array_equal(gpu_result[1], cpu_result[1])
        print(f"all-pairs top-10 of 100,000 ({metric}): GPU {gpu_s:.2f} s, CPU {cpu_s:.1f} s, identical: {same}")
    burst = 100_000 / gpu_rates["2 MB"]
    print(f"projected 100,000-upload burst (2 MB class, one GPU): {burst / 60:.1f} min of processing")


if __name__ == "__main__":
    main()
