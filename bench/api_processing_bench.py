"""Processing inside API requests (``make bench``), on ``graywave api``
(uvicorn, one worker, the embedded default) on 127.0.0.1:

1. **Other users' reads while the worst-case image processes.** One client reads an image's
   document (``GET /images/{user}/{id}``) over and over: first alone, then while another user's
   ``?wait=true`` upload of the largest accepted photo (16000x16000, 256 MP, the pixel limit)
   is decoded, histogrammed and encoded. Target: p99 of the reads < 500 ms during the upload.
2. **``?wait=true`` latency against the size of the lake.** 150 uploads of a 12 MP-class photo one
   after the other, each processed in its request (each adds lake files). Target: the last
   uploads within 1.5x of the first (medians of the first and last 10, and the 150th against the 1st).
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from api_bench import deployment_env, running_api

from graywave.config import Settings
from graywave.service.samples import encode, synthetic_photo
from graywave.service.tokens import issue_token

OUT = Path(__file__).with_name("out")
UPLOADS = 150


def worst_case_jpeg(side: int = 16000) -> bytes:
    """The largest photo the defaults accept: ``side``x``side`` pixels (256 MP), an RGB JPEG."""
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    noise = np.random.default_rng(0).integers(0, 24, (side, side), dtype=np.uint8)
    luma = (np.add.outer(ramp, ramp) / 2).astype(np.uint8) // 2 + noise
    rgb = np.stack([luma, luma[::-1], luma[:, ::-1]], axis=-1)
    return encode(rgb, "JPEG", quality=80)


def percentiles(ms: list[float]) -> str:
    return f"p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms"


def reads_while(base: str, path: str, token: str, busy: threading.Event | None, seconds: float) -> list[float]:
    """Latencies of back-to-back GETs of ``path``: for ``seconds``, or while ``busy`` is set."""
    latencies: list[float] = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
        end = time.monotonic() + seconds
        while (busy.is_set() if busy is not None else time.monotonic() < end) or not latencies:
            start = time.perf_counter()
            http.get(path).raise_for_status()
            latencies.append((time.perf_counter() - start) * 1000)
            time.sleep(0.01)
    return latencies


def main() -> None:
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; `graywave api` (uvicorn, 1 worker, embedded "
        "default) and its clients on the same machine.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        env = deployment_env(tmp, GRAYWAVE_DEVICE="cpu")
        token_settings = Settings(api_tokens_file=Path(env["GRAYWAVE_API_TOKENS_FILE"]), mongodb_uri=None)
        tokens = {who: issue_token(token_settings, who, admin=False) for who in ("reader", "big")}
        with running_api(env) as base:

            def upload(who: str, data: bytes) -> tuple[httpx.Response, float]:
                start = time.perf_counter()
                response = httpx.post(
                    f"{base}/images/{who}?wait=true",
                    files={"file": ("photo.jpg", data, "image/jpeg")},
                    headers={"Authorization": f"Bearer {tokens[who]}"},
                    timeout=600,
                )
                return response, (time.perf_counter() - start) * 1000

            photo = encode(synthetic_photo(4000, 3000, seed=1), "JPEG", quality=90)
            first, _ = upload("reader", photo)
            assert first.status_code == 200, first.text
            path = f"/images/reader/{first.json()['image_id']}"

            # 1. Reads while the worst case processes.
            big = worst_case_jpeg()
            idle = reads_while(base, path, tokens["reader"], None, 5)
            busy = threading.Event()
            busy.set()
            outcome: dict[str, object] = {}

            def big_upload() -> None:
                outcome["response"], outcome["ms"] = upload("big", big)
                busy.clear()

            uploader = threading.Thread(target=big_upload)
            uploader.start()
            during = reads_while(base, path, tokens["reader"], busy, 0)
            uploader.join()
            response = outcome["response"]
            assert isinstance(response, httpx.Response) and response.status_code == 200, response
            lines += [
                f"**Reads while the worst case processes.** A 16000x16000 RGB JPEG ({len(big) / 1e6:.1f} MB) "
                f"uploaded with `?wait=true` took {float(outcome['ms']) / 1000:.1f} s (`bench/api_processing_bench.py`).",
                "",
                "| another user's `GET /images/{user}/{id}` | reads | latency |",
                "|---|---|---|",
                f"| alone | {len(idle)} | {percentiles(idle)} |",
                f"| during the upload | {len(during)} | {percentiles(during)} |",
                "",
                f"Target p99 < 500 ms during the upload: {np.percentile(during, 99):.0f} ms.",
                "",
            ]
            print("\n".join(lines), flush=True)
            part_two = len(lines)

            # 2. ?wait=true latency as the lake grows.
            photos = [encode(synthetic_photo(1600, 1200, seed=k), "JPEG", quality=90) for k in range(UPLOADS)]
            latencies = []
            for data in photos:
                response, ms = upload("reader", data)
                assert response.status_code == 200, response.text
                latencies.append(ms)
            head, tail = statistics.median(latencies[:10]), statistics.median(latencies[-10:])
            lines += [
                f"**`?wait=true` latency as the lake grows.** {UPLOADS} uploads of a 1600x1200 JPEG, one after "
                "the other, each processed in its request and written to the lake.",
                "",
                "| | latency |",
                "|---|---|",
                f"| 1st upload | {latencies[0]:.0f} ms |",
                f"| {UPLOADS}th upload | {latencies[-1]:.0f} ms |",
                f"| median of the first 10 | {head:.0f} ms |",
                f"| median of the last 10 | {tail:.0f} ms |",
                "",
                f"Last 10 / first 10: **{tail / head:.2f}x**; {UPLOADS}th / 1st: {latencies[-1] / latencies[0]:.2f}x "
                "(target ≤ 1.5x).",
            ]
    OUT.mkdir(exist_ok=True)
    (OUT / "api_processing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[part_two:]))


if __name__ == "__main__":
    main()
