"""GET /metrics: the Prometheus text format of the API's counts, parsed by prometheus-client's own
parser; who may scrape it; the sum of two uvicorn workers (``graywave api --workers 2``); the metric
names of docs/operations.md's alert rules are the ones exported.

The app is reached in this process (``api``: ``httpx.ASGITransport``), but for the busy slots (requests
held in flight at once on a real uvicorn, ``live_api``) and the two workers (a ``graywave api`` process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from graywave.api.metrics import UNMATCHED
from graywave.service.images import Images, UploadedNow
from graywave.service.samples import encode, synthetic_photo
from graywave.service.tokens import issue_token
from tests.helpers import GRAYWAVE, SERVER_TIMEOUT_S, free_port, in_process, in_process_client, wait_for

EMBEDDED = pytest.mark.parametrize("api", ["embedded"], indirect=True)
LIVE_EMBEDDED = pytest.mark.parametrize("live_api", ["embedded"], indirect=True)
PHOTO = encode(synthetic_photo(64, 48, seed=1), "JPEG", quality=90)
OPERATIONS = Path(__file__).parents[2] / "docs" / "operations.md"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, token: str) -> Samples:
    return samples_of(httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=60))


def samples_of(answer: httpx.Response) -> Samples:
    """The samples of a scrape's answer."""
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests(samples: Samples, method: str, route: str, status: int) -> float:
    return value(samples, "graywave_http_requests_total", method=method, route=route, status=str(status))


@EMBEDDED
@pytest.mark.anyio
async def test_requests_are_counted_by_route_template_and_status(api):
    alice, anonymous, admin = api.client("alice"), api.client(None), api.client("admin")
    for _ in range(3):
        assert (await alice.get("/images/alice")).status_code == 200
    assert (await alice.get("/images/alice/no-such-image")).status_code == 404
    assert (await alice.get("/no/such/path/alice")).status_code == 404
    assert (await anonymous.get("/images/alice")).status_code == 401
    assert (await anonymous.post("/images/alice", files={"file": ("a.jpg", PHOTO, "image/jpeg")})).status_code == 401
    assert (await alice.post("/images/alice", files={"file": ("a.jpg", PHOTO, "image/jpeg")})).status_code == 202
    replayed = {"Idempotency-Key": "metrics-test-1"}
    for _ in range(2):  # the retry gets the first answer: one upload stored, not two
        sent = await alice.post("/images/alice", files={"file": ("b.jpg", PHOTO, "image/jpeg")}, headers=replayed)
        assert sent.status_code == 202, sent.text

    samples = samples_of(await admin.get("/metrics"))
    assert requests(samples, "GET", "/images/{user_id}", 200) == 3
    assert requests(samples, "GET", "/images/{user_id}/{image_id}", 404) == 1
    assert requests(samples, "GET", UNMATCHED, 404) == 1
    assert requests(samples, "GET", "/images/{user_id}", 401) == 1
    assert requests(samples, "POST", "/images/{user_id}", 401) == 1  # refused before routing
    assert requests(samples, "POST", "/images/{user_id}", 202) == 3
    assert not any("alice" in str(labels) or "no-such" in str(labels) for _, labels in samples)  # templates only
    duration = "graywave_http_request_duration_seconds"
    assert value(samples, f"{duration}_count", method="GET", route="/images/{user_id}") == 4
    assert value(samples, f"{duration}_bucket", method="GET", route="/images/{user_id}", le="30.0") == 4
    assert value(samples, "graywave_http_requests_in_flight") == 1  # the scrape itself
    assert value(samples, "graywave_uploads_stored_total") == 2
    assert value(samples, "graywave_processing_slots") == api.settings.api_processing_slots
    assert value(samples, "graywave_processing_slots_busy") == 0
    again = samples_of(await admin.get("/metrics"))
    assert requests(again, "GET", "/metrics", 200) == 1  # the first scrape, counted once it was answered


@EMBEDDED
@pytest.mark.anyio
async def test_the_route_needs_an_admin_token_and_is_not_in_the_schema(api):
    assert (await api.client(None).get("/metrics")).status_code == 401
    assert (await api.client("alice").get("/metrics")).status_code == 403
    assert "/metrics" not in (await api.client("admin").get("/openapi.json")).json()["paths"]


@pytest.fixture
def one_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAYWAVE_API_PROCESSING_SLOTS", "1")
    monkeypatch.setenv("GRAYWAVE_API_PROCESSING_QUEUE", "0")
    monkeypatch.setenv("GRAYWAVE_API_USER_INFLIGHT", "1")
    monkeypatch.setenv("GRAYWAVE_METRICS", "public")


@LIVE_EMBEDDED
@pytest.mark.usefixtures("one_slot")
def test_busy_slots_and_refusals_by_reason(live_api, monkeypatch):
    """Alice's ?wait=true upload holds the one processing slot until the test lets it go: her second
    is her limit's 429, Bob's the full queue's 503 ``busy``."""
    entered, release = threading.Event(), threading.Event()

    def held_upload(images: Images, user_id: str, data: bytes, content_type: str, name: Any = None):
        key = images.store_upload(user_id, data, content_type, name)
        entered.set()
        assert release.wait(120)
        return UploadedNow(key, "held by the test")

    monkeypatch.setattr(Images, "upload_now", held_upload)
    photo = {"file": ("a.jpg", PHOTO, "image/jpeg")}
    answers: list[httpx.Response] = []
    first = threading.Thread(
        target=lambda: answers.append(live_api.client("alice").post("/images/alice?wait=true", files=photo))
    )
    first.start()
    try:
        assert entered.wait(120)
        assert live_api.client("alice").post("/images/alice?wait=true", files=photo).status_code == 429
        assert live_api.client("bob").post("/images/bob?wait=true", files=photo).status_code == 503
        anyone = httpx.get(f"{live_api.url}/metrics", timeout=60)  # GRAYWAVE_METRICS=public: no token
        assert anyone.status_code == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(anyone.text)
            for s in family.samples
        }
    finally:
        release.set()
        first.join(120)
    assert [a.status_code for a in answers] == [202]
    assert value(samples, "graywave_processing_slots_busy") == 1
    assert value(samples, "graywave_processing_slots") == 1
    assert value(samples, "graywave_http_requests_in_flight") == 2  # the held upload and the scrape
    assert value(samples, "graywave_http_refusals_total", status="429", reason="too_many_requests") == 1
    assert value(samples, "graywave_http_refusals_total", status="503", reason="busy") == 1
    assert requests(samples, "POST", "/images/{user_id}", 503) == 1


@EMBEDDED
@pytest.mark.anyio
async def test_metrics_off_is_no_route(api, monkeypatch):
    from graywave.api.app import create_app

    monkeypatch.setenv("GRAYWAVE_METRICS", "off")
    from graywave.config import Settings

    async with in_process(create_app(Settings())) as app, in_process_client(app, api.tokens["admin"]) as admin:
        answer = await admin.get("/metrics")
        assert answer.status_code == 404


def test_two_workers_are_summed_whichever_answers_the_scrape(settings, tmp_path):
    """``graywave api --workers 2``, real processes: every scrape, whichever worker answers it, counts
    every request of both workers (and both did answer some: their files in the metrics folder)."""
    admin = issue_token(settings, "ops", admin=True)
    port = free_port()
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = os.environ | {"TMPDIR": str(temporary)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "api.log").open("w+")
    process = subprocess.Popen(
        [GRAYWAVE, "api", "--port", str(port), "--workers", "2"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{url}/healthz", timeout=SERVER_TIMEOUT_S).status_code == 200,
            "the API starts",
            120,
            [process],
        )
        [folder] = temporary.glob("graywave-metrics-*")
        sent = 0
        while len(_workers_that_answered(folder)) < 2:  # fresh connections: the kernel spreads them
            assert sent < 2000, "one worker answered every request"
            assert httpx.get(f"{url}/healthz", timeout=SERVER_TIMEOUT_S).status_code == 200
            sent += 1
        counts = set()
        for _ in range(6):
            samples = scrape(url, admin)
            counts.add(requests(samples, "GET", "/healthz", 200))
        assert counts == {sent + 1}  # the readiness probe's one 200 too
        assert value(samples, "graywave_http_requests_in_flight") == 1
    finally:
        process.terminate()
        process.wait(60)
        log.seek(0)
        output = log.read()
    assert not list(temporary.glob("graywave-metrics-*")), output  # the command removes its folder


def _workers_that_answered(folder: Path) -> set[str]:
    """The pids whose counter files hold a count of a /healthz request."""
    from prometheus_client.mmap_dict import MmapedDict

    answered = set()
    for file in folder.glob("counter_*.db"):
        for key, count, _, _ in MmapedDict.read_all_values_from_file(str(file)):
            if "graywave_http_requests" in key and "/healthz" in key and count > 0:
                answered.add(file.stem.rpartition("_")[2])
    return answered


@pytest.mark.anyio
async def test_the_alert_rules_use_exported_metrics(api_metric_names):
    """docs/operations.md's scrape configuration and alert rules are YAML, and every metric their
    expressions name is one that a scrape shows."""
    blocks = re.findall(r"```yaml\n(.*?)```", OPERATIONS.read_text(), re.S)
    documents = [yaml.safe_load(block) for block in blocks]
    rules = [rule for doc in documents if "groups" in doc for group in doc["groups"] for rule in group["rules"]]
    assert {"GraywaveApi5xxRate", "GraywaveApiP99Latency", "GraywaveApiBusy"} <= {r["alert"] for r in rules}
    assert any("scrape_configs" in doc for doc in documents)
    for rule in rules:
        named = set(re.findall(r"\bgraywave_[a-z_]+", rule["expr"]))
        assert named and named <= api_metric_names, rule["expr"]


@pytest.fixture
async def api_metric_names(settings, tmp_path, monkeypatch) -> set[str]:
    from graywave.api.app import create_app

    monkeypatch.setenv("GRAYWAVE_METRICS", "public")
    from graywave.config import Settings

    async with in_process(create_app(Settings())) as app, in_process_client(app) as anyone:
        assert (await anyone.get("/healthz")).status_code == 200
        assert (await anyone.get("/no/such/path")).status_code == 404
        text = (await anyone.get("/metrics")).text
    names = set()
    for family in text_string_to_metric_families(text):  # a labelled counter with no sample yet has its TYPE
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes} | {sample.name for sample in family.samples}
    return names


def test_a_scrape_forgets_the_live_gauges_of_workers_that_are_gone(tmp_path):
    """uvicorn has no worker-exit hook: the in-flight count of a worker killed mid-request would stay
    in the sum forever. A scrape drops the live gauge files of pids that are gone; a live one's stay."""
    from prometheus_client.mmap_dict import MmapedDict

    from graywave.api.metrics import forget_dead_workers

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for pid in (gone.pid, os.getpid()):
        values = MmapedDict(str(tmp_path / f"gauge_livesum_{pid}.db"))
        values.write_value('["graywave_http_requests_in_flight", "", {}, ""]', 3.0, 0.0)
        values.close()
    forget_dead_workers(str(tmp_path))
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"gauge_livesum_{os.getpid()}.db"]
