"""Every route, every error and access control across two users, through HTTP.

Most tests reach the app in this process (the ``api`` fixture: ``httpx.ASGITransport``, no socket), on
the embedded default and on S3 + MongoDB. The last ones, from ``test_bodies_are_refused_before_they_are_read``
on, run under a real uvicorn (``live_api``): they need a socket and a server, a body streamed or cut
off while it is sent, requests in flight at once on the server's threads, or uvicorn's ``--root-path``.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pymongo
import pytest
from PIL import Image

from graywave.api.errors import REJECTED_MESSAGES
from graywave.cli.asgi import create_app
from graywave.config import Settings
from graywave.flows.analytics import analytics_flow
from graywave.flows.wave import wave_flow
from graywave.records import image_id_for
from graywave.service.backends import Backends
from graywave.service.samples import encode, synthetic_photo
from graywave.service.tokens import issue_token
from graywave.storage.mongo import MongoCatalog
from tests.helpers import SERVER_TIMEOUT_S, api_app, free_port, in_process, in_process_client, png_header, serving

PHOTO = encode(synthetic_photo(320, 240, seed=1), "JPEG", quality=90)
DARK = encode(synthetic_photo(320, 240, seed=2, brightness=-0.8), "JPEG", quality=90)
pytestmark = pytest.mark.anyio  # the async tests, on the in-process app


def upload(client, user: str, data: bytes = PHOTO, wait: bool = False, name: str = "IMG_0001.jpg"):
    """The upload's answer; from an ``httpx.AsyncClient``, the awaitable of it."""
    return client.post(f"/images/{user}", params={"wait": wait}, files={"file": (name, data, "image/jpeg")})


def error_of(response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "status"}
    assert body["error"]["status"] == response.status_code and body["error"]["message"]
    return response.status_code, body["error"]["code"]


async def test_tokens_are_required_and_checked(api):
    anonymous, forged = api.client(None), api.client(None)
    forged.headers["Authorization"] = "Bearer gw_not-a-real-token"
    for client in (anonymous, forged):
        response = await client.get("/images/alice")
        assert error_of(response) == (401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"


async def test_routes_that_need_no_token_ignore_a_bad_one(api):
    """The probes and an unknown path authenticate nothing (``api.auth``): a bad token sent to them
    changes nothing, where a middleware that authenticates every request (Starlette's
    ``AuthenticationMiddleware``) would answer 401."""
    forged = api.client(None)
    forged.headers["Authorization"] = "Bearer gw_not-a-real-token"
    assert (await forged.get("/healthz")).json() == {"status": "ok"}
    assert (await forged.get("/readyz")).status_code == 200
    assert error_of(await forged.get("/no-such-resource")) == (404, "not_found")


async def test_a_user_reaches_only_their_own_images(api):
    alice, bob, admin = api.client("alice"), api.client("bob"), api.client("admin")
    created = (await upload(alice, "alice")).json()
    image = f"/images/alice/{created['image_id']}"
    for response in (
        await bob.get("/images/alice"),
        await bob.get(image),
        await bob.get(f"{image}/processed"),
        await bob.delete(image),
        await upload(bob, "alice"),
        await bob.put("/images/alice"),
        await bob.delete("/images/alice"),
        await bob.get("/users/alice/weekly"),
        await bob.get("/images/similarity/alice/3"),
        await bob.get("/images"),
        await bob.delete("/images"),
    ):
        assert error_of(response) == (403, "forbidden"), response.request.url
    assert (await alice.get(image)).status_code == 200
    assert (await admin.get(image)).status_code == 200
    assert [i["image_id"] for i in (await admin.get("/images")).json()["items"]] == [created["image_id"]]
    assert (await bob.get("/images/bob")).json()["total"] == 0


async def test_a_wait_upload_left_pending_says_why(api, monkeypatch):
    """The prober found it: a ?wait=true answered 202 with nothing saying why it was not processed."""
    from graywave.errors import BackendUnavailable

    def unavailable(*args, **kwargs):
        raise BackendUnavailable("the lake at /somewhere/secret could not be written")

    monkeypatch.setattr(Backends, "record", unavailable)
    alice = api.client("alice")
    response = await upload(alice, "alice", wait=True)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "pending"
    assert body["pending"] == "a storage backend is unavailable now: the next wave processes it"
    assert "secret" not in response.text  # the backend's own words stay in the log
    assert "wait=true" in (await upload(alice, "alice")).json()["pending"]


async def test_upload_is_pending_until_a_wave_or_processed_at_once(api):
    alice = api.client("alice")
    response = await upload(alice, "alice")
    assert response.status_code == 202
    pending = response.json()
    assert pending["status"] == "pending" and pending["links"]["processed"] is None
    assert (await alice.get(f"/images/alice/{pending['image_id']}")).json()["status"] == "pending"

    response = await upload(alice, "alice", wait=True)
    assert response.status_code == 200
    done = response.json()
    assert done["status"] == "processed" and done["format"] == "JPEG"
    assert sum(done["histogram"]) == done["pixel_count"] == 320 * 240
    assert (done["width"], done["height"]) == (320, 240)
    processed = await alice.get(done["links"]["processed"], follow_redirects=True)  # S3's own URL: over the network
    assert processed.status_code == 200
    assert Image.open(io.BytesIO(processed.content)).mode == "L"
    if api.settings.blob_url.startswith("s3://"):
        assert (await alice.get(done["links"]["processed"])).status_code == 307  # a presigned S3 URL
    listing = (await alice.get("/images/alice")).json()
    assert {i["status"] for i in listing["items"]} == {"pending", "processed"} and listing["total"] == 2


async def test_bad_uploads_get_clear_errors_and_change_nothing(api):
    alice = api.client("alice")
    assert error_of(await upload(alice, "alice", b"not an image")) == (415, "unsupported_media_type")
    assert error_of(await upload(alice, "alice", encode(synthetic_photo(64, 64, 1), "GIF"))) == (
        415,
        "unsupported_media_type",
    )
    assert error_of(await upload(alice, "alice", b"")) == (400, "empty")
    assert error_of(await upload(alice, "alice", b"\xff" * 2_000_001)) == (413, "too_large")
    # Within the pixel limit, over the memory budget: refused from its header, before any decode.
    over_budget = await upload(alice, "alice", png_header(16000, 16000, "RGBA"))
    assert error_of(over_budget) == (413, "too_large") and "RGBA" in over_budget.json()["error"]["message"]
    assert error_of(await upload(alice, "bad.id")) == (400, "invalid_id")
    assert error_of(await alice.post("/images/alice")) == (422, "invalid")  # no file
    assert (await alice.get("/images/alice")).json()["total"] == 0


async def test_methods_the_table_does_not_allow(api):
    admin = api.client("admin")
    assert error_of(await admin.post("/images")) == (405, "method_not_allowed")
    assert error_of(await admin.post("/images/alice/0123456789abcdef0123")) == (405, "method_not_allowed")


async def test_missing_images_and_invalid_parameters(api):
    alice = api.client("alice")
    assert error_of(await alice.get("/images/alice/0123456789abcdef0123")) == (404, "not_found")
    assert error_of(await alice.get("/images/alice", params={"limit": 0})) == (422, "invalid")
    assert error_of(await alice.get("/users/alice/similar", params={"metric": "cosine"})) == (422, "invalid")
    assert error_of(await alice.get("/users/alice/weekly", params={"week": "48"})) == (400, "bad_request")


async def test_lists_paginate(api):
    alice = api.client("alice")
    ids = [(await upload(alice, "alice", name=f"{k}.jpg")).json()["image_id"] for k in range(3)]
    first = (await alice.get("/images/alice", params={"limit": 2})).json()
    assert (first["total"], len(first["items"]), first["next"]) == (3, 2, "/images/alice?limit=2&offset=2")
    second = (await alice.get(first["next"])).json()
    assert second["next"] is None
    assert sorted(i["image_id"] for i in first["items"] + second["items"]) == sorted(ids)


async def test_put_replaces_an_image_and_reprocesses(api):
    alice = api.client("alice")
    bright = (await upload(alice, "alice", wait=True)).json()
    replaced = await alice.put(f"/images/alice/{bright['image_id']}", files={"file": ("x.jpg", DARK, "image/jpeg")})
    assert replaced.status_code == 200
    after = replaced.json()
    assert after["image_id"] == bright["image_id"] and after["histogram"] != bright["histogram"]
    assert np.average(range(16), weights=after["histogram"]) < np.average(range(16), weights=bright["histogram"])
    done = {"count": 1, "processed": 1, "rejected": 0, "failed": []}
    assert (await alice.put("/images/alice")).json() == done
    assert (await api.client("admin").put("/images")).json() == done
    assert (await alice.get("/images/alice")).json()["total"] == 1  # reprocessing never duplicates
    with Backends.open(api.settings) as backends:
        assert len(backends.lake.read("images")) == 1


async def test_delete_removes_an_image_everywhere(api):
    alice = api.client("alice")
    doc = (await upload(alice, "alice", wait=True)).json()
    keep = (await upload(alice, "alice", wait=True, name="keep.jpg")).json()
    with Backends.open(api.settings) as backends:
        row = next(r for r in backends.lake.read("images").to_pylist() if r["image_id"] == doc["image_id"])
        assert (await alice.delete(f"/images/alice/{doc['image_id']}")).status_code == 204
        assert error_of(await alice.get(f"/images/alice/{doc['image_id']}")) == (404, "not_found")
        assert [r["image_id"] for r in backends.lake.read("images").to_pylist()] == [keep["image_id"]]
        for key in (row["source_key"], row["processed_key"]):
            assert key not in {b.key for b in backends.blobs.list(key)}
        if isinstance(backends.catalog, MongoCatalog):
            assert backends.catalog.images.count_documents({"_id": doc["image_id"]}) == 0
    assert (await alice.delete("/images/alice")).json() == {"count": 1}
    assert (await alice.get("/images/alice")).json()["total"] == 0
    await upload(api.client("bob"), "bob")
    assert (await api.client("admin").delete("/images")).json() == {"count": 1}


async def test_writes_during_a_draining_wave_are_answered_and_every_upload_ends_once(api):
    """No refusal because a wave runs: an upload with wait=true is processed in its request, a
    replace reprocesses, a delete deletes, while a wave drains the burst; then each upload has one
    record, and the deleted one none."""
    from graywave.service.wave import Drain, run_wave

    alice, bob = api.client("alice"), api.client("bob")
    done = (await upload(alice, "alice", wait=True)).json()
    gone = (await upload(bob, "bob", wait=True)).json()
    for _ in range(6):
        await upload(bob, "bob")  # pending: the wave's
    logs: list[str] = []
    draining = threading.Thread(
        target=run_wave,
        args=(api.settings, api.settings.today(), "morning"),
        kwargs={"drain": Drain(settle_s=2.0, max_duration_s=60, poll_s=0.2), "log": logs.append},
    )
    draining.start()
    try:
        waited = await upload(alice, "alice", wait=True)
        assert waited.status_code == 200 and waited.json()["status"] == "processed", waited.text
        replaced = await alice.put(f"/images/alice/{done['image_id']}", files={"file": ("new.jpg", DARK, "image/jpeg")})
        assert replaced.status_code == 200, replaced.text
        assert (await bob.delete(f"/images/bob/{gone['image_id']}")).status_code == 204
        assert (await alice.put("/images/alice")).status_code in (200, 202)  # every image of alice, reprocessed
    finally:
        draining.join(120)
    assert (await alice.get(f"/images/alice/{done['image_id']}")).json()["histogram"] != done["histogram"]
    assert error_of(await bob.get(f"/images/bob/{gone['image_id']}")) == (404, "not_found")
    with Backends.open(api.settings) as backends:
        keys = backends.lake.read("images").column("source_key").to_pylist()
    assert len(keys) == len(set(keys)) == 2 + 6
    items = (await api.client("admin").get("/images", params={"limit": 100})).json()["items"]
    assert len(items) == 8 and {item["status"] for item in items} == {"processed"}


async def test_the_analytical_queries_and_their_design_document_aliases(api):
    alice, bob = api.client("alice"), api.client("bob")
    await upload(alice, "alice", wait=True)
    await upload(bob, "bob", DARK, wait=True)
    await upload(api.client("admin"), "carol", wait=True)
    day = api.settings.today().isoformat()
    analytics_flow(day=api.settings.today(), top_n=2, metric="design")
    weekly = (await alice.get("/users/alice/weekly")).json()
    assert len(weekly["images"]) == 1 and weekly["user_id"] == "alice"
    assert (await alice.get("/images/weekly/alice")).json() == weekly
    median = (await alice.get("/analytics/median", params={"date": day})).json()
    assert median["users"] == 3 and len(median["histogram"]) == 16
    assert (await bob.get("/images/day/median")).json() == median
    similar = (await alice.get("/users/alice/similar", params={"n": 2, "metric": "l1"})).json()
    assert [n["user_id"] for n in similar["neighbours"]] == ["carol", "bob"]  # carol uploaded the same photo
    assert similar["neighbours"][0]["distance"] == 0.0
    alias = (await alice.get("/images/similarity/alice/2", params={"metric": "l1"})).json()
    assert alias == similar
    assert error_of(await alice.get("/analytics/median", params={"date": "2020-01-01"})) == (404, "not_found")


async def test_presigned_upload_urls_need_s3(api):
    alice = api.client("alice")
    response = await alice.post("/images/alice/upload-url", json={"content_type": "image/jpeg"})
    if not api.settings.blob_url.startswith("s3://"):
        assert error_of(response) == (400, "not_supported")
        return
    post = response.json()
    assert post["key"].startswith(f"uploads/{api.settings.today().isoformat()}/alice/")
    assert post["image_id"] == image_id_for(post["key"])

    sent = httpx.post(
        post["url"], data=post["fields"], files={"file": ("p.jpg", PHOTO, "image/jpeg")}, timeout=SERVER_TIMEOUT_S
    )
    assert sent.status_code in (200, 204)
    assert (await alice.get(f"/images/alice/{post['image_id']}")).json()["status"] == "pending"
    assert error_of(await alice.post("/images/alice/upload-url", json={"content_type": "text/html"})) == (
        415,
        "unsupported_media_type",
    )


async def test_openapi_documents_every_route_with_examples(api):
    client = api.client(None)
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    routes = {(path, method) for path, methods in spec["paths"].items() for method in methods}
    assert {
        ("/images", "get"),
        ("/images", "put"),
        ("/images", "delete"),
        ("/images/{user_id}", "post"),
        ("/images/{user_id}/{image_id}", "put"),
        ("/images/day/median", "get"),
    } <= routes
    assert all(op.get("summary") for methods in spec["paths"].values() for op in methods.values())
    assert spec["components"]["schemas"]["Image"]["examples"]


async def test_pages_run_through_handled_then_pending_images(api):
    bob = api.client("bob")
    handled = [(await upload(bob, "bob", wait=True, name=f"h{k}.jpg")).json()["image_id"] for k in range(2)]
    pending = [(await upload(bob, "bob", name=f"p{k}.jpg")).json()["image_id"] for k in range(2)]
    first = (await bob.get("/images/bob", params={"limit": 3})).json()
    assert first["total"] == 4
    assert [i["status"] for i in first["items"]] == ["processed", "processed", "pending"]
    second = (await bob.get(first["next"])).json()
    assert second["next"] is None and [i["status"] for i in second["items"]] == ["pending"]
    seen = [i["image_id"] for i in first["items"] + second["items"]]
    assert sorted(seen[:2]) == sorted(handled) and sorted(seen[2:]) == sorted(pending)  # S3 times are in seconds


async def test_deleting_one_image_of_a_file_that_holds_several_is_seen_by_every_read(api):
    """The bug of issue 9: a delete rewrote a lake file under the same name, and the embedded API's
    caches (keyed by file names) went on serving the deleted image and the old analytics."""
    alice = api.client("alice")
    photos = [
        encode(synthetic_photo(160, 120, seed=10 + k, brightness=0.2 * k - 0.3), "JPEG", quality=90) for k in range(4)
    ]
    ids = [(await upload(alice, "alice", data, name=f"{k}.jpg")).json()["image_id"] for k, data in enumerate(photos)]
    today = api.settings.today()
    wave_flow(day=today, name="morning")  # the four rows land in one lake file
    with Backends.open(api.settings) as backends:
        assert len(backends.lake.files("images")) == 1
    before = {
        "list": (await alice.get("/images/alice")).json(),
        "weekly": (await alice.get("/users/alice/weekly")).json(),
        "median": (await alice.get("/analytics/median")).json(),
        "one": (await alice.get(f"/images/alice/{ids[0]}")).json(),
    }  # read once first, so that any cache is filled with the four images
    assert (
        before["list"]["total"] == 4 and len(before["weekly"]["images"]) == 4 and before["one"]["status"] == "processed"
    )

    assert (await alice.delete(f"/images/alice/{ids[0]}")).status_code == 204

    assert error_of(await alice.get(f"/images/alice/{ids[0]}")) == (404, "not_found")
    listing = (await alice.get("/images/alice")).json()
    assert listing["total"] == 3 and sorted(i["image_id"] for i in listing["items"]) == sorted(ids[1:])
    weekly = (await alice.get("/users/alice/weekly")).json()
    assert sorted(i["image_id"] for i in weekly["images"]) == sorted(ids[1:])
    kept = [(await alice.get(f"/images/alice/{i}")).json()["histogram"] for i in ids[1:]]
    counts = np.sum(kept, axis=0)
    median = (await alice.get("/analytics/median")).json()  # alice is the day's only user: her histogram is the median
    assert median["users"] == 1
    assert np.allclose(median["histogram"], counts / counts.sum())
    assert not np.allclose(before["median"]["histogram"], median["histogram"])
    assert wave_flow(day=today, name="evening").processed == 0  # a later wave changes nothing
    assert (await alice.get("/images/alice")).json()["total"] == 3


async def test_a_reprocessing_reports_what_it_cannot_reprocess_and_forgets_nothing(api):
    """PUT on a user whose original is gone used to forget the records first, then fail: lost for good.
    Now the image that cannot be reprocessed is named in the answer and keeps its record, and the
    others are reprocessed."""
    alice = api.client("alice")
    gone = (await upload(alice, "alice", wait=True)).json()
    kept = (await upload(alice, "alice", DARK, wait=True)).json()
    with Backends.open(api.settings) as backends:
        [image] = [r for r in backends.lake.read("images").to_pylist() if r["image_id"] == gone["image_id"]]
        backends.blobs.delete(image["source_key"])  # the original vanishes
    answer = await alice.put("/images/alice")
    assert answer.status_code == 200
    report = answer.json()
    assert (report["count"], report["processed"], report["rejected"]) == (2, 1, 0)
    [failure] = report["failed"]
    assert (failure["image_id"], failure["source_key"], failure["reason"]) == (
        gone["image_id"],
        image["source_key"],
        "vanished",
    )
    assert (await alice.get(f"/images/alice/{gone['image_id']}")).json()["histogram"] == gone["histogram"]
    reprocessed = (await alice.get(f"/images/alice/{kept['image_id']}")).json()
    assert reprocessed["histogram"] == kept["histogram"] and reprocessed["processed_at"] > kept["processed_at"]
    with Backends.open(api.settings) as backends:
        assert sorted(backends.lake.read("images").column("image_id").to_pylist()) == sorted(
            [gone["image_id"], kept["image_id"]]
        )


async def test_reprocessing_many_images_needs_a_prefect_server_and_changes_nothing_without_one(api, monkeypatch):
    alice = api.client("alice")
    first = (await upload(alice, "alice", wait=True)).json()
    await upload(alice, "alice", DARK, wait=True)
    monkeypatch.setenv("GRAYWAVE_API_INLINE_REPROCESS_MAX", "1")
    # The same deployment, reprocessing inline at most 1 image:
    async with in_process(api_app(Settings())) as app, in_process_client(app, api.tokens["alice"]) as client:
        answer = await client.put("/images/alice")
    # 2 images > 1: a background job, and this test process has no PREFECT_API_URL
    assert error_of(answer) == (503, "jobs_unavailable") and "PREFECT_API_URL" in answer.json()["error"]["message"]
    assert (await alice.get(f"/images/alice/{first['image_id']}")).json()["processed_at"] == first["processed_at"]
    assert error_of(await alice.get(f"/jobs/{uuid.uuid4()}")) == (404, "not_found")  # no Prefect server, no jobs


async def test_a_damaged_token_store_answers_a_json_503_not_a_crash(api):
    if api.settings.mongodb_uri is None:
        where = str(api.settings.api_tokens_db_path)
        torn = api.settings.api_tokens_db_path.read_bytes()[:50]
        for stale in ("", "-wal", "-shm"):
            Path(f"{where}{stale}").unlink(missing_ok=True)
        Path(where).write_bytes(torn)  # a torn copy restored in its place
    else:  # a document that is not a token's, in place of alice's
        where = "api_tokens"
        client = pymongo.MongoClient(api.settings.mongodb_uri.get_secret_value())
        digest = hashlib.sha256(api.tokens["alice"].encode()).hexdigest()
        client[api.settings.mongodb_database]["api_tokens"].replace_one({"_id": digest}, {"label": 7})
        client.close()
    response = await api.client("alice").get("/images/alice")
    assert error_of(response) == (503, "unavailable")
    assert "token store" in response.json()["error"]["message"]
    assert where not in response.text  # where it is is the log's business


async def test_error_messages_keep_the_servers_internals_to_the_server(api, monkeypatch):
    """Decoder internals and unexpected exceptions stay in the log; the JSON shape stays."""
    from graywave.service.images import Images

    alice = api.client("alice")
    garbage = await upload(alice, "alice", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    assert error_of(garbage)[0] == 415
    assert garbage.json()["error"]["message"] in {
        f"not an accepted image ({reason}): {text}" for reason, text in REJECTED_MESSAGES.items()
    }

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(Images, "store_upload", broken)
    crashed = await upload(alice, "alice")
    assert error_of(crashed) == (500, "error") and "secret" not in crashed.json()["error"]["message"]


async def test_a_405_names_every_documented_method_and_huge_offsets_are_refused(api):
    admin = api.client("admin")
    refused = await admin.request("OPTIONS", "/images/alice")
    assert error_of(refused) == (405, "method_not_allowed")
    assert refused.headers["allow"] == "DELETE, GET, POST, PUT"
    assert (await admin.request("PATCH", "/images/day/median")).headers["allow"] == "GET"
    assert error_of(await admin.get("/images", params={"offset": 2**64})) == (422, "invalid")  # once a 500 on MongoDB


async def test_a_trailing_slash_is_not_redirected_to_the_host_a_client_names(api):
    client = api.client("alice")
    response = await client.get("/images/alice/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert error_of(response) == (404, "not_found") and "location" not in response.headers


async def test_the_probes_answer_without_a_token_and_name_an_unavailable_backend(api):
    anonymous = api.client(None)
    assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
    ready = await anonymous.get("/readyz")
    expected = {"blob_store", "lake"} | ({"mongodb"} if api.settings.mongodb_uri else set())
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": dict.fromkeys(expected, "ok")}
    if api.settings.blob_url.startswith("s3://"):
        return
    await upload(api.client("alice"), "alice", wait=True)
    shutil.rmtree(api.settings.blob_url)  # the blob folder is gone while the lake has records: not mounted
    unready = await anonymous.get("/readyz")
    assert error_of(unready) == (503, "unavailable")
    assert "blob_store unavailable" in unready.json()["error"]["message"]
    assert "lake ok" in unready.json()["error"]["message"]
    assert api.settings.blob_url not in unready.text  # where it is stays in the log
    assert (await anonymous.get("/healthz")).status_code == 200  # alive all the same


async def test_a_fresh_install_with_no_blob_folder_yet_is_ready(settings, tmp_path, monkeypatch):
    """The prober found it: a fresh install answered 503 until the first upload made the folder."""
    monkeypatch.setenv("GRAYWAVE_API_TOKENS_FILE", str(tmp_path / "tokens.json"))
    monkeypatch.setenv("GRAYWAVE_BLOB_URL", str(tmp_path / "fresh" / "blobs"))
    monkeypatch.setenv("GRAYWAVE_LAKE_URL", str(tmp_path / "fresh" / "lake"))
    (tmp_path / "fresh").mkdir()
    token = issue_token(Settings(), "alice", admin=False)
    async with in_process(api_app(Settings())) as app, in_process_client(app) as client:
        assert (await client.get("/readyz")).status_code == 200
        assert not (tmp_path / "fresh" / "blobs").exists()
        client.headers["Authorization"] = f"Bearer {token}"
        assert (await upload(client, "alice", wait=True)).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_readyz_says_when_the_lake_cannot_be_read(api):
    """Every read of a lake whose log cannot be read answers 503; so does the probe, naming the lake."""
    alice = api.client("alice")
    await upload(alice, "alice", wait=True)
    if api.settings.lake_url.startswith("s3://"):
        return
    log = Path(api.settings.lake_url) / "images" / "_delta_log"
    latest = max(int(path.stem) for path in log.glob("*.json"))
    (log / f"{latest + 1:020d}.json").write_text("this is not a commit\n")
    assert error_of(await alice.get("/images/alice")) == (503, "unavailable")
    unready = await api.client(None).get("/readyz")
    assert error_of(unready) == (503, "unavailable")
    assert "lake unavailable" in unready.json()["error"]["message"]


async def test_readyz_names_mongodb_when_it_cannot_be_reached(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAYWAVE_API_TOKENS_FILE", str(tmp_path / "tokens.json"))
    monkeypatch.setenv("GRAYWAVE_MONGODB_URI", f"mongodb://127.0.0.1:{free_port()}/?directConnection=true")
    monkeypatch.setenv("GRAYWAVE_BACKEND_RETRY_S", "1")
    async with in_process(api_app(Settings())) as app, in_process_client(app) as client:
        started = time.monotonic()
        unready = await client.get("/readyz")
        assert time.monotonic() - started < 8  # a short ping, not the driver's server selection
        assert (await client.get("/healthz")).status_code == 200
    assert error_of(unready) == (503, "unavailable")
    message = unready.json()["error"]["message"]
    assert "mongodb unavailable" in message and "blob_store ok" in message
    assert "127.0.0.1" not in unready.text and "mongodb://" not in unready.text  # no URI


async def test_a_lake_unreadable_at_start_up_is_one_warning_not_a_thread_traceback(
    settings, tmp_path, monkeypatch, caplog
):
    """The API opens the lake's tables in a background thread at start-up (its lifespan); a lake it
    cannot read then (an S3 bucket not yet reachable) killed that thread with a traceback."""
    monkeypatch.setenv("GRAYWAVE_API_TOKENS_FILE", str(tmp_path / "tokens.json"))
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("GRAYWAVE_LAKE_URL", str(tmp_path / "a-file" / "lake"))  # cannot be listed
    died: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", died.append)
    async with in_process(api_app(Settings())) as app, in_process_client(app) as client:
        assert error_of(await client.get("/readyz")) == (503, "unavailable")  # the probe names it meanwhile
        deadline = time.monotonic() + 10
        while "not opened" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not died, died[0].exc_value if died else None
    assert "the lake's tables were not opened at start-up" in caplog.text


async def test_the_charts_are_pngs_under_the_access_rules_of_their_json_twins(api):
    alice, bob, admin = api.client("alice"), api.client("bob"), api.client("admin")
    await upload(alice, "alice", wait=True)
    await upload(alice, "alice", DARK, wait=True, name="dark.jpg")
    await upload(bob, "bob", DARK, wait=True)
    day = api.settings.today().isoformat()
    charts = {
        "median": await alice.get("/analytics/median.png", params={"date": day}),
        "weekly": await alice.get("/users/alice/weekly.png"),
        "weekly of another week": await alice.get("/users/alice/weekly.png", params={"week": "2020-W10"}),
        "weekly by an admin": await admin.get("/users/alice/weekly.png"),
    }
    for name, chart in charts.items():
        assert chart.status_code == 200 and chart.headers["content-type"] == "image/png", name
        picture = Image.open(io.BytesIO(chart.content))
        assert picture.format == "PNG" and 400 <= picture.width <= 2000 and 300 <= picture.height <= 2000, name
    assert charts["weekly"].content != charts["weekly of another week"].content  # two lines, or none
    assert error_of(await bob.get("/users/alice/weekly.png")) == (403, "forbidden")
    assert error_of(await api.client(None).get("/analytics/median.png")) == (401, "unauthorized")
    assert error_of(await alice.get("/analytics/median.png", params={"date": "2020-01-01"})) == (404, "not_found")
    assert error_of(await alice.get("/users/alice/weekly.png", params={"week": "48"})) == (400, "bad_request")
    assert error_of(await alice.get("/users/bad.id/weekly.png")) == (400, "invalid_id")


async def test_an_upload_keeps_its_file_name_made_safe_and_its_key_stays_unique(api):
    """file_name is "as uploaded" (docs/data.md, the images table), made safe: never a random hex name."""
    alice = api.client("alice")
    first = (await upload(alice, "alice", name="IMG_0001.HEIC")).json()
    second = (await upload(alice, "alice", DARK, name="IMG_0001.HEIC", wait=True)).json()
    hostile = (await upload(alice, "alice", name="../../etc/x\u202ey\u200b.jpg")).json()  # folders, format characters
    assert (first["file_name"], second["file_name"]) == ("IMG_0001.HEIC", "IMG_0001 (2).HEIC")
    assert hostile["file_name"] == "xy.jpg"
    assert len({first["image_id"], second["image_id"], hostile["image_id"]}) == 3
    listed = {i["file_name"]: i for i in (await alice.get("/images/alice")).json()["items"]}
    assert set(listed) == {"IMG_0001.HEIC", "IMG_0001 (2).HEIC", "xy.jpg"}
    assert listed["IMG_0001 (2).HEIC"]["status"] == "processed"


# --- under a real uvicorn (``live_api``): what needs a socket, a server's threads, its --root-path -----


def _spooled(folder) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_bodies_are_refused_before_they_are_read(live_api, tmp_path, monkeypatch):
    """No token, or too many bytes: refused from the headers (or cut off), nothing big spooled."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where the server would spool the body
    peak = [0]
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            peak[0] = max(peak[0], _spooled(spool))
            time.sleep(0.01)

    def body(megabytes: int):
        envelope = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'
        yield envelope
        for _ in range(megabytes):
            yield b"\xff" * 1_000_000

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    anonymous = live_api.client(None)
    try:
        refused = anonymous.post("/images/alice", content=body(200), headers=headers)
        assert error_of(refused) == (401, "unauthorized")
    except httpx.TransportError:
        pass  # the server answered and closed while the client was still sending: refused too
    alice = live_api.client("alice")
    too_long = alice.post("/images/alice", content=b"x" * 3_000_000, headers={**headers, "Content-Length": "3000000"})
    assert error_of(too_long) == (413, "too_large")
    try:
        chunked = alice.post("/images/alice", content=body(20), headers=headers)  # no Content-Length
        assert error_of(chunked) == (413, "too_large")
    except httpx.TransportError:
        pass
    watching.set()
    watcher.join()
    assert peak[0] < 10_000_000, f"{peak[0]} bytes were spooled"
    assert alice.get("/images/alice").json()["total"] == 0


@pytest.fixture
def one_request_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    """One request may wait for a processing slot, and a user may have all four of the test in flight
    (the per-user limit is test_fairness's) (name it in ``usefixtures``, before ``live_api``)."""
    monkeypatch.setenv("GRAYWAVE_API_PROCESSING_QUEUE", "1")
    monkeypatch.setenv("GRAYWAVE_API_USER_INFLIGHT", "4")


@pytest.mark.usefixtures("one_request_queued")
def test_processing_runs_off_the_event_loop_in_bounded_slots_and_a_queue(live_api, monkeypatch):
    """While uploads process, other requests are served; past the slots a request waits its turn (a
    burst is queued, not refused); past the queue, 503 with Retry-After."""
    from graywave.service.images import Images

    release, inside = threading.Event(), threading.Semaphore(0)
    real = Images.upload_now

    def slow(*args, **kwargs):
        inside.release()
        release.wait(30)  # stands for a huge image being decoded
        return real(*args, **kwargs)

    monkeypatch.setattr(Images, "upload_now", slow)
    alice, bob = live_api.client("alice"), live_api.client("bob")
    results: dict[str, httpx.Response] = {}

    def start(name: str) -> threading.Thread:
        thread = threading.Thread(target=lambda: results.setdefault(name, upload(alice, "alice", wait=True)))
        thread.start()
        return thread

    threads = [start("first"), start("second")]
    assert inside.acquire(timeout=30) and inside.acquire(timeout=30)  # slots: 2 (the default), both taken
    threads += [start("third"), start("fourth")]  # one waits for a slot, the other finds the queue full
    quick = httpx.Client(base_url=live_api.url, headers=bob.headers, timeout=10)  # fails if the loop were blocked
    assert quick.get("/images/bob").status_code == 200
    assert quick.get("/analytics/median").status_code in (200, 404)
    deadline = time.monotonic() + 30
    while not results and time.monotonic() < deadline:  # the refusal comes while both slots are taken
        time.sleep(0.05)
    [(refused_name, refused)] = results.items()
    assert refused_name in ("third", "fourth")
    assert error_of(refused) == (503, "busy") and refused.headers["retry-after"] == "5"
    assert not inside.acquire(timeout=0.5), "the queued request must not run while both slots are taken"
    release.set()
    for thread in threads:
        thread.join(60)
    # The other three were processed: API writes of one server wait for each other, they are not a wave.
    assert sorted(r.status_code for r in results.values()) == [200, 200, 200, 503]
    assert alice.get("/images/alice").json()["total"] == 3  # the refused one stored nothing


def test_a_405_behind_a_root_path_still_names_the_documented_methods(live_api):
    """Behind a proxy prefix (uvicorn's ``--root-path``) the request's path carries the prefix, the
    documented paths do not: the ``Allow`` header once came out empty there."""
    admin = {"Authorization": f"Bearer {live_api.tokens['admin']}"}
    with (
        serving(create_app(live_api.settings), root_path="/graywave") as url,
        httpx.Client(base_url=url, headers=admin, timeout=SERVER_TIMEOUT_S) as client,
    ):
        refused = client.request("OPTIONS", "/images/alice")  # what the proxy passes on of /graywave/images/alice
        assert error_of(refused) == (405, "method_not_allowed")
        assert refused.headers["allow"] == "DELETE, GET, POST, PUT"
        assert client.request("PATCH", "/images/day/median").headers["allow"] == "GET"


def test_the_docs_pages_load_every_asset_from_the_api_itself(live_api):
    anonymous = live_api.client(None)
    for page, kinds in (("/docs", {"javascript", "css", "png"}), ("/redoc", {"javascript", "png"})):
        html = anonymous.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html.text)
        urls += re.findall(r"""url:\s*["']([^"']+)["']""", html.text)  # Swagger UI's openapi.json
        assert "http://" not in html.text and "https://" not in html.text, page  # no CDN, no fonts
        assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
        seen = set()
        for url in urls:
            asset = anonymous.get(url)
            assert asset.status_code == 200, url
            seen |= {kind for kind in ("javascript", "css", "png", "json") if kind in asset.headers["content-type"]}
        assert kinds <= seen, page
    # Behind a proxy prefix (uvicorn's --root-path) the pages name the prefixed URLs.
    with (
        serving(create_app(live_api.settings), root_path="/graywave") as url,
        httpx.Client(base_url=url, timeout=SERVER_TIMEOUT_S) as client,
    ):
        html = client.get("/docs").text
        assert '"/graywave/docs-assets/swagger-ui-bundle.js"' in html and "'/graywave/openapi.json'" in html
        assert '"/graywave/docs-assets/redoc.standalone.js"' in client.get("/redoc").text


def test_fifty_writes_waiting_on_the_lake_during_a_drain_do_not_hold_other_users_reads(live_api, monkeypatch):
    """Writes never hold the shared thread pool while they wait: 50 deletes, each held up inside its
    lake write (standing for commits retried after lost races) until the test lets them go, while a
    wave drains; another user's 40 GETs are all answered while every delete is still held. Run on
    the shared pool (40 threads), the 50 waiting writes took every thread and the GETs waited for
    them, past their timeout. (No latency bound: it would measure the machine's load.)"""
    from graywave.service.images import Images
    from graywave.service.wave import Drain, run_wave

    alice, bob = live_api.client("alice"), live_api.client("bob")
    ids = [upload(alice, "alice", name=f"IMG_{k}.jpg").json()["image_id"] for k in range(50)]
    upload(bob, "bob", wait=True)
    release = threading.Event()
    real = Images.delete

    def held(*args, **kwargs):
        release.wait(120)
        return real(*args, **kwargs)

    monkeypatch.setattr(Images, "delete", held)
    draining = threading.Thread(
        target=run_wave,
        args=(live_api.settings, live_api.settings.today(), "morning"),
        kwargs={"drain": Drain(settle_s=3.0, max_duration_s=60, poll_s=0.2), "log": lambda _: None},
    )
    draining.start()
    # The 50 commit one after another once released (each retried after the races it loses): on a
    # loaded machine the last is answered minutes later, past a client's 60 s. Each status is kept.
    writer = httpx.Client(base_url=live_api.url, headers=alice.headers, timeout=2 * SERVER_TIMEOUT_S)
    with writer, ThreadPoolExecutor(len(ids)) as pool:
        deletes = [pool.submit(writer.delete, f"/images/alice/{i}") for i in ids]
        time.sleep(1.0)  # the 50 are in the server, waiting
        quick = httpx.Client(base_url=live_api.url, headers=bob.headers, timeout=60)  # the writes wait 120 s
        answered = [quick.get("/images/bob").status_code for _ in range(40)]
        still_held = sum(not delete.done() for delete in deletes)
        release.set()
        deleted = [delete.result().status_code for delete in deletes]
    draining.join(120)
    assert answered == [200] * 40
    assert still_held == 50  # every GET was answered while all 50 writes still waited
    assert deleted == [204] * 50
    assert alice.get("/images/alice").json()["total"] == 0  # every delete was answered and done
