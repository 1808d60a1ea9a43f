"""The API load benchmark (``make bench``): 50 concurrent clients on the embedded default.

A lake of 1,000 users with one processed image each (rows recorded directly: one ``Lake.record``
commit), served by ``graywave api`` (uvicorn, one worker) on 127.0.0.1; clients and server share
this machine.
Measured: requests/s and p50/p99 latency of GET /images/{user}/{image_id} and of the daily median.
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from graywave.config import Settings
from graywave.records import ImageRecord, image_id_for
from graywave.service.tokens import issue_token
from graywave.storage.blobs import LocalBlobStore
from graywave.storage.lake import CommitInfo, Lake
from graywave.storage.layout import upload_key

USERS = 1_000
CLIENTS = 50
REQUESTS = 3_000
OUT = Path(__file__).with_name("out")


def seed_lake(lake: Lake, day) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    now = datetime.now(UTC)
    rows, ids = [], []
    for u in range(USERS):
        user = f"user{u:04d}"
        key = upload_key(day, user, "IMG_0001.jpg")
        histogram = rng.multinomial(12_000_000, rng.dirichlet(np.ones(16))).tolist()
        rows.append(
            ImageRecord(
                image_id=image_id_for(key),
                user_id=user,
                upload_date=day,
                file_name="IMG_0001.jpg",
                source_key=key,
                processed_key=f"processed/{day}/{user}/{image_id_for(key)}.jpg",
                uploaded_at=now,
                processed_at=now,
                width=4000,
                height=3000,
                format="JPEG",
                pixel_count=12_000_000,
                source_bytes=2_000_000,
                processed_bytes=1_500_000,
                histogram=tuple(histogram),
            )
        )
        ids.append((user, image_id_for(key)))
    info = CommitInfo("record", day, "morning")
    lake.record("images", ImageRecord.to_arrow(rows), day=day, wave="morning", among=[day], info=info)
    return ids


async def load(base: str, paths: list[tuple[str, str]]) -> tuple[float, np.ndarray]:
    """(requests/s, latencies in ms) of ``REQUESTS`` GETs spread over ``CLIENTS`` concurrent clients."""
    latencies: list[float] = []
    queue = list(paths)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            while queue:
                path, token = queue.pop()
                start = time.perf_counter()
                response = await http.get(path, headers={"Authorization": f"Bearer {token}"})
                latencies.append((time.perf_counter() - start) * 1000)
                response.raise_for_status()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return len(latencies) / (time.perf_counter() - start), np.array(latencies)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def deployment_env(folder: str, **extra: str) -> dict[str, str]:
    """This environment with an embedded deployment of graywave (blobs, lake, tokens, Prefect's
    state) under ``folder``, and ``extra`` variables."""
    return os.environ | {
        "GRAYWAVE_BLOB_URL": f"{folder}/blobs",
        "GRAYWAVE_LAKE_URL": f"{folder}/lake",
        "GRAYWAVE_API_TOKENS_FILE": f"{folder}/tokens.json",
        "PREFECT_HOME": f"{folder}/prefect",
        **extra,
    }


@contextmanager
def running_api(env: dict[str, str]) -> Iterator[str]:
    """``graywave api`` (uvicorn, one worker) in a process of its own with ``env``; its base URL once it answers."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("graywave")), "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/openapi.json", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = deployment_env(tmp)
        settings = Settings(blob_url=env["GRAYWAVE_BLOB_URL"], lake_url=env["GRAYWAVE_LAKE_URL"])
        day = settings.today()
        ids = seed_lake(Lake(LocalBlobStore(settings.lake_url)), day)
        token_settings = Settings(api_tokens_file=Path(env["GRAYWAVE_API_TOKENS_FILE"]), mongodb_uri=None)
        tokens = {user: issue_token(token_settings, user, admin=False) for user, _ in ids[:200]}
        with running_api(env) as base:
            users = list(tokens)
            metadata = [(f"/images/{u}/{dict(ids)[u]}", tokens[u]) for u in users] * (REQUESTS // len(users))
            median = [(f"/analytics/median?date={day}", tokens[users[k % len(users)]]) for k in range(REQUESTS // 3)]
            lines = [
                f"Machine: {platform.machine()}, {os.cpu_count()} cores; `graywave api` (uvicorn, 1 worker) and "
                f"{CLIENTS} concurrent clients on the same machine; {USERS:,} users with one processed image each.",
                "",
                "| route | requests | requests/s | p50 | p99 |",
                "|---|---|---|---|---|",
            ]
            for name, paths in (("GET /images/{user}/{image_id}", metadata), ("GET /analytics/median", median)):
                asyncio.run(load(base, paths[:100]))  # warm up
                rate, latencies = asyncio.run(load(base, paths))
                lines.append(
                    f"| {name} | {len(latencies)} | {rate:.0f} | {np.percentile(latencies, 50):.0f} ms "
                    f"| {np.percentile(latencies, 99):.0f} ms |"
                )
                print(lines[-1], flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "api.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
