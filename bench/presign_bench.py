"""Presigned-upload requests at 100,000 users (``make bench``).

The first call every phone makes in a burst is ``POST /images/{user}/upload-url``: a bearer token
checked, a SigV4 presigned POST signed (no S3 request: boto3 signs locally). This benchmark sends
a burst of them from 500 distinct users at concurrency 64 to ``graywave api`` (one uvicorn
worker, the embedded token store holding 100,000 tokens) and, in the same run, to a floor: a
minimal FastAPI app that only looks the bearer token's SHA-256 up in a dict and makes the same
boto3 presigned POST. Both serve on 127.0.0.1 beside the clients, on this machine.

Reported: requests/s, p50 and p99 of each, the ratio of throughputs (target: graywave at least
0.6x the floor), and from graywave's rate how many API cores serve 100,000 phones asking for their
upload URL within 2 minutes.

    .venv/bin/python bench/presign_bench.py
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np

from graywave.config import Settings
from graywave.service.tokens import open_token_store

TOKENS = 100_000
USERS = 500
CONCURRENCY = 64
REQUESTS = 3_000
WARM_UP = 200
PHONES = 100_000
WINDOW_S = 120
S3_ENV = {
    "GRAYWAVE_BLOB_URL": "s3://graywave-bench/uploads",
    # Presigning is local; nothing listens here and nothing is asked of it.
    "GRAYWAVE_S3_ENDPOINT_URL": "http://127.0.0.1:9",
    "GRAYWAVE_S3_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
}

FLOOR_APP = textwrap.dedent(
    '''
    """The floor: a bearer token checked in a dict, one boto3 SigV4 presigned POST."""
    import hashlib, json, os, uuid
    import boto3
    from botocore.config import Config
    from fastapi import FastAPI, Header, HTTPException

    DIGESTS = json.loads(open(os.environ["FLOOR_TOKENS"]).read())
    client = boto3.client(
        "s3",
        endpoint_url=os.environ["GRAYWAVE_S3_ENDPOINT_URL"],
        region_name="us-east-1",
        config=Config(signature_version="s3v4"),
    )
    app = FastAPI()

    @app.post("/images/{user_id}/upload-url")
    def upload_url(user_id: str, body: dict, authorization: str = Header("")):
        user = DIGESTS.get(hashlib.sha256(authorization.removeprefix("Bearer ").encode()).hexdigest())
        if user != user_id:
            raise HTTPException(401)
        key = f"uploads/date=2026-12-05/user={user_id}/{uuid.uuid4().hex}.jpg"
        post = client.generate_presigned_post(
            Bucket="graywave-bench", Key=key, Fields={"Content-Type": body["content_type"]},
            Conditions=[{"Content-Type": body["content_type"]}, ["content-length-range", 1, 50_000_000]],
            ExpiresIn=300,
        )
        return {"url": post["url"], "fields": post["fields"], "key": key}
    '''
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(command: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    process = subprocess.Popen(  # nosec B603 - our own interpreter and arguments
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/docs", timeout=2)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"{command} did not serve within 300 s")


async def _burst(url: str, tokens: list[tuple[str, str]]) -> tuple[float, np.ndarray]:
    latencies: list[float] = []
    queue = list(range(WARM_UP + REQUESTS))
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def one(i: int) -> None:
            user, token = tokens[i % len(tokens)]
            started = time.perf_counter()
            answer = await client.post(
                f"/images/{user}/upload-url",
                json={"content_type": "image/jpeg"},
                headers={"Authorization": f"Bearer {token}"},
            )
            if answer.status_code != 200 or "x-amz-signature" not in answer.json()["fields"]:
                raise SystemExit(f"{url}: {answer.status_code} {answer.text[:300]}")
            if i >= WARM_UP:
                latencies.append(time.perf_counter() - started)

        async def worker() -> None:
            while queue:
                await one(queue.pop())

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))  # the warm-up is among the first
        queue.extend(range(WARM_UP, WARM_UP + REQUESTS))
        latencies.clear()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    return REQUESTS / elapsed, np.array(latencies) * 1000


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="graywave-presign-") as folder:
        root = Path(folder)
        env = {**os.environ, **S3_ENV, "PYTHONDONTWRITEBYTECODE": "1"}
        os.environ.update(S3_ENV)
        store = open_token_store(Settings(api_tokens_file=root / "data" / "api-tokens.json"))
        users = [f"phone{i:06d}" for i in range(TOKENS)]
        issued: list[tuple[str, str]] = []
        for chunk in store.issue_many(users):
            issued.extend(chunk)
        store.close()
        tokens = issued[:: TOKENS // USERS][:USERS]  # 500 distinct users spread over the store
        import hashlib
        import json

        (root / "floor_tokens.json").write_text(
            json.dumps({hashlib.sha256(t.encode()).hexdigest(): u for u, t in issued})
        )
        (root / "floor_app.py").write_text(FLOOR_APP)
        graywave_env = {**env, "GRAYWAVE_API_TOKENS_FILE": str(root / "data" / "api-tokens.json")}
        floor_env = {**env, "FLOOR_TOKENS": str(root / "floor_tokens.json"), "PYTHONPATH": str(root)}
        results = {}
        for name, command, run_env in (
            ("floor", [sys.executable, "-m", "uvicorn", "floor_app:app", "--log-level", "warning"], floor_env),
            ("graywave", [str(Path(sys.executable).with_name("graywave")), "api"], graywave_env),
        ):
            process, url = _serve(command, run_env, root)
            try:
                results[name] = asyncio.run(_burst(url, tokens))
            finally:
                process.terminate()
                process.wait(30)
    print(f"presigned uploads: {USERS} users, {TOKENS} tokens stored, concurrency {CONCURRENCY}, {REQUESTS} requests")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; clients and server share it")
    for name, (rate, ms) in results.items():
        print(
            f"  {name:8s} {rate:7.1f} req/s  p50 {np.percentile(ms, 50):6.1f} ms  p99 {np.percentile(ms, 99):6.1f} ms"
        )
    ratio = results["graywave"][0] / results["floor"][0]
    print(f"  graywave / floor throughput: {ratio:.2f}x (target >= 0.6x)")
    needed = PHONES / WINDOW_S
    cores = math.ceil(needed / results["graywave"][0])
    print(
        f"  {PHONES} phones in {WINDOW_S} s = {needed:.0f} req/s: {cores} API worker processes (cores) at"
        f" {results['graywave'][0]:.0f} req/s each"
    )


if __name__ == "__main__":
    main()
