"""The GPU benchmark: for the first machine with an NVIDIA GPU (``uv sync --extra gpu``, or the image
of ``Dockerfile.gpu``), as ``python bench/gpu_bench.py``. Not part of ``make bench``: this project's
machines have no GPU, and without one it says so and exits 2.

Status: its GPU code is the code CI executes under numba-cuda's simulator and on nvImageCodec's
CPU backend (``tests/kernels/gpu_sim``, ``tests/kernels/test_gpu_codecs.py``); this script itself
has not run on a device yet.

In one run, on the same machine, each GPU figure against the CPU's:

1. the kernels: histograms of a batch of 64 12 MP planes in one launch (``histogram_batch``) and
   the luma of a 12 MP RGB image, on device arrays, against the CPU kernels on all cores;
2. the batch path of 12 MP photos (1, 2 and 10 MB classes): ``process_uploads`` on all CPU cores
   against ``process_uploads`` with nvImageCodec (nvJPEG), from and to a local folder, with
   the fallbacks it counted (there must be none: these are plain JPEGs), and the GPU's histograms
   against the CPU's (pixels in another bin: nvJPEG's IDCT is not libjpeg-turbo's);
3. the all-pairs top-10 of 100,000 users on the GPU against the CPU kernel (identical results);
4. the cost of a photo on the GPU, for ``bench/burst.py --gpu-photo-ms``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np

from graywave.config import Settings
from graywave.kernels import gpu_available, histogram_batch, luma_from_rgb, select_device
from graywave.kernels.codecs import CpuLumaCodec, luma_batch_codec
from graywave.service.batch import Upload, process_uploads
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.layout import parse_upload_key, upload_key

UPLOADS = 256
BATCH = 64
OUT = Path(__file__).with_name("out")


def uploads_of(root: Path, files: list[bytes]) -> tuple[LocalBlobStore, list[Upload]]:
    from wave_bench import DAY

    store = LocalBlobStore(root)
    for i in range(UPLOADS):
        store.write(upload_key(DAY, f"user{i:04d}", "photo.jpg"), files[i % len(files)], "image/jpeg")
    blobs = {blob.key: blob for blob in store.list("uploads/")}
    return store, [Upload(parse_upload_key(key), blob) for key, blob in sorted(blobs.items())]


def best_of(runs: int, work) -> float:
    """The least seconds of ``runs`` calls of ``work`` (after one to warm up)."""
    work()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def kernels(cp, lines: list[str]) -> None:
    from wave_bench import PHONE_12MP

    width, height = PHONE_12MP
    rng = np.random.default_rng(0)
    planes = [rng.integers(0, 256, (height, width), dtype=np.uint8) for _ in range(BATCH)]
    device_planes = [cp.asarray(plane) for plane in planes]

    def on_gpu() -> None:
        histogram_batch(device_planes)
        cp.cuda.get_current_stream().synchronize()

    gpu_s = best_of(5, on_gpu)
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        cpu_s = best_of(3, lambda: list(pool.map(lambda p: histogram_batch([p]), planes)))
    same = np.array_equal(cp.asnumpy(histogram_batch(device_planes)), histogram_batch(planes))
    lines.append(
        f"| histograms of {BATCH} 12 MP planes | {gpu_s * 1e3:.1f} ms | {cpu_s * 1e3:.0f} ms | {cpu_s / gpu_s:.0f}x | identical: {same} |"
    )
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    device_rgb = cp.asarray(rgb)

    def luma_on_gpu() -> None:
        luma_from_rgb(device_rgb)
        cp.cuda.get_current_stream().synchronize()

    gpu_s, cpu_s = best_of(5, luma_on_gpu), best_of(3, lambda: luma_from_rgb(rgb))
    same = np.array_equal(cp.asnumpy(luma_from_rgb(device_rgb)), luma_from_rgb(rgb))
    lines.append(
        f"| luma of a 12 MP RGB image | {gpu_s * 1e3:.2f} ms | {cpu_s * 1e3:.1f} ms (1 core) | {cpu_s / gpu_s:.0f}x | identical: {same} |"
    )


def batch_path(lines: list[str]) -> float:
    """The batch path's table rows; returns the GPU's milliseconds per photo of the 2 MB class."""
    from wave_bench import PHONE_12MP, samples

    settings = Settings(device="gpu")
    gpu, cpu = select_device("gpu"), select_device("cpu")
    codec = luma_batch_codec(gpu)
    assert not isinstance(codec, CpuLumaCodec), codec.instead_of  # nvImageCodec missing, or cannot start
    cores = os.cpu_count() or 1
    megapixels = PHONE_12MP[0] * PHONE_12MP[1] / 1e6
    per_photo_ms = 0.0
    for label, files in samples().items():
        with tempfile.TemporaryDirectory() as tmp:
            store, uploads = uploads_of(Path(tmp), files)
            batches = [uploads[i : i + BATCH] for i in range(0, len(uploads), BATCH)]
            process_uploads(batches[0][:4], store, settings, gpu, codec)  # warm up: compile, allocate
            start = time.perf_counter()
            with ThreadPoolExecutor(cores) as pool:
                cpu_results = list(
                    pool.map(
                        lambda b, store=store: process_uploads(b, store, settings, cpu),
                        [uploads[w::cores] for w in range(cores)],
                    )
                )
            cpu_rate = len(uploads) / (time.perf_counter() - start)
            start = time.perf_counter()
            gpu_results = [process_uploads(batch, store, settings, gpu, codec) for batch in batches]
            gpu_rate = len(uploads) / (time.perf_counter() - start)
        fallbacks = sum(len(result.fallbacks) for result in gpu_results)
        cpu_rows = {row.source_key: row.histogram for result in cpu_results for row in result.images}
        moved = [
            np.abs(np.array(row.histogram) - cpu_rows[row.source_key]).sum() / 2 / row.pixel_count
            for result in gpu_results
            for row in result.images
        ]
        if label == "2 MB":
            per_photo_ms = 1e3 / gpu_rate
        lines.append(
            f"| batch path, 12 MP JPEG, {label} | {gpu_rate:.0f} img/s ({gpu_rate * megapixels:.0f} MP/s) "
            f"| {cpu_rate:.0f} img/s on {cores} cores | {gpu_rate / cpu_rate:.1f}x "
            f"| fallbacks: {fallbacks}; pixels in another bin: max {100 * max(moved):.3f}% |"
        )
    return per_photo_ms


def similarity(cp, lines: list[str]) -> None:
    from similarity_bench import synthetic_day

    from graywave.kernels.similarity import all_pairs_nearest

    fractions = synthetic_day(100_000)
    all_pairs_nearest(cp.asarray(fractions[:2000]), 10, "design")  # compile
    for metric in ("design", "l1", "correlation"):
        start = time.perf_counter()
        gpu_result = all_pairs_nearest(cp.asarray(fractions), 10, metric)
        gpu_s = time.perf_counter() - start
        start = time.perf_counter()
        cpu_result = all_pairs_nearest(fractions, 10, metric)
        cpu_s = time.perf_counter() - start
        same = np.array_equal(gpu_result[0], cpu_result[0]) and np.array_equal(gpu_result[1], cpu_result[1])
        lines.append(
            f"| all-pairs top-10 of 100,000 users ({metric}) | {gpu_s:.2f} s | {cpu_s:.1f} s | {cpu_s / gpu_s:.0f}x | identical: {same} |"
        )


def main() -> int:
    if not gpu_available():
        print("bench/gpu_bench.py needs an NVIDIA GPU with CuPy and numba-cuda (the gpu extra): none is usable here")
        return 2
    import cupy as cp

    name = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    lines = [
        f"GPU: {name}; CPU: {os.cpu_count()} cores.",
        "",
        "| work | GPU | CPU | GPU / CPU | check |",
        "|---|---|---|---|---|",
    ]
    kernels(cp, lines)
    per_photo_ms = batch_path(lines)
    similarity(cp, lines)
    lines += [
        "",
        f"GPU cost per photo (2 MB class, batch path): {per_photo_ms:.2f} ms: `bench/burst.py --gpu-photo-ms {per_photo_ms:.2f}`",
    ]
    OUT.mkdir(exist_ok=True)
    (OUT / "gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
