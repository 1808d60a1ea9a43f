"""Inputs that ended in a 500 or froze the API (issue 21): a file name with mathtext in a chart, weeks
outside the calendar or in other digits, a token store that cannot be read, a lake or blob store
that refuses writes. Each is now an answer of the API's error shape, quickly.

The app is reached in this process (``api``: ``httpx.ASGITransport``) but for two tests: a token store
whose read could hang is asked through a real uvicorn (``live_api``) with a client timeout, and a lake on
a read-only mount is served by a ``graywave api`` process of its own."""

from __future__ import annotations

import errno
import io
import logging
import os
import shlex
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import deltalake
import httpx
import pytest
from deltalake.exceptions import DeltaError
from PIL import Image

from tests.api.test_api import error_of, upload
from tests.helpers import GRAYWAVE, SERVER_TIMEOUT_S
from tests.service.test_tokens import DAMAGED

EMBEDDED = pytest.mark.parametrize("api", ["embedded"], indirect=True)
LIVE_EMBEDDED = pytest.mark.parametrize("live_api", ["embedded"], indirect=True)


@EMBEDDED
@pytest.mark.anyio
async def test_a_file_name_with_mathtext_is_drawn_as_written_in_its_weeks_chart(api):
    """``$a^$.jpg`` made matplotlib parse mathtext and fail: that week's chart was a 500 for good."""
    alice = api.client("alice")
    for name in ("$a^$.jpg", "$\\frac{1}{0}$.jpg", "x_{$}.jpg"):
        assert (await upload(alice, "alice", wait=True, name=name)).status_code == 200
    chart = await alice.get("/users/alice/weekly.png")
    assert chart.status_code == 200, chart.text
    assert Image.open(io.BytesIO(chart.content)).format == "PNG"
    assert (await alice.get("/analytics/median.png")).status_code == 200


@EMBEDDED
@pytest.mark.parametrize(
    "week",
    [
        "9999-W52",  # its Sunday is in the year 10000: an OverflowError, a 500
        "２026-W01",  # fullwidth digits, which int() reads
        "2026-W٠١",  # Arabic-Indic digits
        "+2026-W01",
        "2_026-W10",
        "2026-w10",
        " 2026-W10",
        "2025-W53",  # 2025 has 52 weeks
        "0000-W01",
        "2026-W00",
    ],
)
@pytest.mark.anyio
async def test_a_week_that_is_not_one_is_a_400_on_the_json_and_the_chart(api, week):
    alice = api.client("alice")
    for route in ("/users/alice/weekly", "/users/alice/weekly.png", "/images/weekly/alice"):
        response = await alice.get(route, params={"week": week})
        assert error_of(response) == (400, "bad_request"), (route, response.text)
        assert "ISO week" in response.json()["error"]["message"]


@EMBEDDED
@pytest.mark.parametrize(
    ("route", "value"),
    [
        ("/users/alice/similar?date={}", "2026-11-25T00:00:00"),  # pydantic reads a midnight datetime as a day
        ("/users/alice/similar?date={}", "20261125"),
        ("/users/alice/similar?date={}", "２026-11-25"),
        ("/analytics/median?date={}", "2026-11-25T00:00"),
        ("/users/alice/similar?n={}", "1_0"),  # int() and pydantic read these as 10, 5, 5, 5
        ("/users/alice/similar?n={}", "+5"),
        ("/users/alice/similar?n={}", " 5"),
        ("/users/alice/similar?n={}", "５"),
        ("/images/similarity/alice/{}", "1_0"),
        ("/images/alice?limit={}", "+5"),
        ("/images/alice?offset={}", "0_0"),
    ],
)
@pytest.mark.anyio
async def test_a_number_or_a_day_in_another_form_is_refused(api, route, value):
    """The API reads numbers and days in one form each, as the CLI does: ``?date=2026-11-25T00:00:00``,
    ``n=1_0`` and ``+5`` were answered as if they were ``2026-11-25``, 10 and 5."""
    answer = await api.client("alice").get(route.format(value))
    assert error_of(answer) == (422, "invalid"), answer.text


@EMBEDDED
@pytest.mark.anyio
async def test_the_plain_forms_of_numbers_and_days_are_answered(api):
    alice = api.client("alice")
    assert (await upload(alice, "alice", wait=True)).status_code == 200
    assert (await alice.get("/images/alice?limit=05&offset=0")).status_code == 200
    today = (await alice.get("/images/alice")).json()["items"][0]["date"]
    for route in (
        f"/users/alice/similar?n=10&date={today}",
        "/images/similarity/alice/3",
        f"/analytics/median?date={today}",
    ):
        assert (await alice.get(route)).status_code in (200, 404), route  # 404: no analytics for the day yet


@EMBEDDED
@pytest.mark.anyio
async def test_the_calendars_first_and_last_whole_weeks_and_a_53rd_are_answered(api):
    alice = api.client("alice")
    for week, monday in (("0001-W01", "0001-01-01"), ("9999-W51", "9999-12-20"), ("2026-W53", "2026-12-28")):
        answer = await alice.get("/users/alice/weekly", params={"week": week})
        assert answer.status_code == 200 and answer.json()["week"] == week and answer.json()["monday"] == monday
        assert (await alice.get("/users/alice/weekly.png", params={"week": week})).status_code == 200


@LIVE_EMBEDDED
@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", [name for name in DAMAGED if name != "a file for a folder"])
def test_a_token_store_that_cannot_be_read_is_a_quick_503_naming_it(live_api, damage, caplog):
    """A non-UTF-8 file, a folder, a link to /dev/zero, a FIFO or a huge file was a 500 or froze the
    API (every request's thread waiting on the read). Now a 503 that names the token store, not its
    path (the log has it), on a route (its dependency) and on an upload (the early-refusal middleware).
    Under a real server: a read that froze is the client's timeout, not a test that hangs."""
    path = live_api.settings.api_tokens_db_path
    kept = path.with_name("kept.db")
    with sqlite3.connect(path) as live, sqlite3.connect(kept) as copy:
        live.backup(copy)  # a whole copy, whatever is still in the write-ahead log
    for stale in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        stale.unlink(missing_ok=True)
    DAMAGED[damage](path)
    alice = httpx.Client(base_url=live_api.url, headers=live_api.client("alice").headers, timeout=10)
    with caplog.at_level(logging.ERROR, logger="graywave.api"):
        started = time.monotonic()
        for response in (alice.get("/images/alice"), upload(alice, "alice"), alice.get("/users/alice/weekly")):
            assert error_of(response) == (503, "unavailable"), response.text
            assert "token store" in response.json()["error"]["message"]
            assert str(path) not in response.text and "tokens.db" not in response.text
        assert time.monotonic() - started < 5
    assert str(path) in caplog.text  # the operator's log says which file
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.write_bytes(kept.read_bytes())  # repaired: the same server answers again
    assert alice.get("/images/alice").status_code == 200


# What delta-rs 1.x raised when the lake's folder was mounted read-only (a real mount, see
# test_a_read_only_lake_and_blob_store_under_a_real_api): a MERGE, and a DELETE.
MERGE_REFUSED = DeltaError(
    "Failed to parse parquet: External: Generic LocalFileSystem error: Unable to open file"
    " /srv/lake/images/date=2026-11-25/part-00000-c000.zstd.parquet#1: Read-only file system (os error 30)"
)
DELETE_REFUSED = OSError(
    "Generic LocalFileSystem error\n          \x1b[31m↳\x1b[0m Unable to open file"
    " /srv/lake/images/_delta_log/00000000000000000002.json#1\n           \x1b[31m↳\x1b[0m Read-only file system"
    " (os error 30)"
)


def _refused(error: Exception):
    def refuse(*args, **kwargs):
        raise error

    return refuse


@EMBEDDED
@pytest.mark.anyio
async def test_a_lake_that_refuses_writes_is_a_503_never_a_500(api, monkeypatch):
    """A read-only lake: delta-rs's own errors escaped as 500s. Patched at delta-rs's calls, the
    lowest level (tests run as root, whom a chmod does not stop)."""
    alice, admin = api.client("alice"), api.client("admin")
    kept = (await upload(alice, "alice", wait=True)).json()["image_id"]
    assert (await upload(api.client("bob"), "bob", wait=True)).status_code == 200
    monkeypatch.setattr(deltalake.table.TableMerger, "execute", _refused(MERGE_REFUSED))
    monkeypatch.setattr(deltalake.DeltaTable, "delete", _refused(DELETE_REFUSED))
    waited = await upload(alice, "alice", name="IMG_0002.jpg", wait=True)
    assert waited.status_code == 202 and waited.json()["pending"], waited.text  # kept pending, saying why
    listed = {i["file_name"]: i["status"] for i in (await alice.get("/images/alice")).json()["items"]}
    assert listed["IMG_0002.jpg"] == "pending"  # stored: the next wave processes it
    for response in (await alice.delete(f"/images/alice/{kept}"), await admin.delete("/images/bob")):
        assert error_of(response) == (503, "unavailable"), response.text
        assert "/srv/lake" not in response.text
    monkeypatch.undo()
    assert (await alice.delete(f"/images/alice/{kept}")).status_code == 204  # the retry of the delete works


@EMBEDDED
@pytest.mark.anyio
async def test_a_wait_upload_that_the_lake_refuses_stays_pending_and_says_why(api, monkeypatch):
    """The contract of ?wait=true (service.images.Images.upload_now): a backend that is unavailable leaves the
    stored upload pending, answered 202 with the reason, so that a client's retry does not duplicate it."""
    monkeypatch.setattr(deltalake.table.TableMerger, "execute", _refused(MERGE_REFUSED))
    waited = await upload(api.client("alice"), "alice", wait=True)
    assert waited.status_code == 202 and waited.json()["status"] == "pending" and waited.json()["pending"]


@EMBEDDED
@pytest.mark.anyio
async def test_a_blob_store_that_refuses_writes_is_a_503_never_a_500(api, monkeypatch):
    """A read-only upload folder: ``OSError(EROFS)`` from the local blob store was a 500."""
    alice = api.client("alice")
    kept = (await upload(alice, "alice")).json()["image_id"]
    root, real = str(api.settings.blob_url), Path.write_bytes

    def read_only(self, *args, **kwargs):  # the folder's own refusal, as a read-only mount gives it
        if str(self).startswith(root):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    for response in (await upload(alice, "alice", name="IMG_0003.jpg"), await alice.delete(f"/images/alice/{kept}")):
        assert error_of(response) == (503, "unavailable"), response.text
        assert str(api.settings.blob_url) not in response.text


def read_only(folder: Path, *command: str) -> list[str]:
    """``command`` in a mount namespace of its own where ``folder`` is mounted read-only: writes there
    fail with EROFS, even as root (whom a chmod does not stop), and nothing outside changes."""
    mount = f"mount --bind {shlex.quote(str(folder))} {shlex.quote(str(folder))}"
    remount = f"mount -o remount,ro,bind {shlex.quote(str(folder))}"
    return ["unshare", "--mount", "sh", "-c", f'{mount} && {remount} && exec "$@"', "sh", *command]


def _can_mount_read_only(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run([*read_only(probe, "sh", "-c", f"! touch {probe}/x")], capture_output=True, timeout=30)
    return done.returncode == 0 and not (probe / "x").exists()


@pytest.fixture
def read_only_mounts(tmp_path) -> None:
    if not _can_mount_read_only(tmp_path):
        pytest.skip("no private mount namespace here (unshare --mount needs CAP_SYS_ADMIN)")


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("read_only_mounts")
def test_a_read_only_lake_under_a_real_api_answers_503s(settings, tmp_path, monkeypatch):
    """The end-to-end case, on a real read-only mount: delta-rs's own errors of a lake it cannot write."""
    from graywave.service.samples import encode, synthetic_photo
    from graywave.service.tokens import issue_token
    from graywave.service.wave import run_wave
    from tests.helpers import DAY, free_port, lake_of, put_uploads

    put_uploads(settings.blob_url, DAY, {"alice/a.jpg": encode(synthetic_photo(64, 48, seed=1), "JPEG")})
    run_wave(settings, DAY, "morning", log=lambda _: None)
    kept = lake_of(settings).read("images", [DAY]).column("image_id")[0].as_py()
    version = lake_of(settings).version("images")
    tokens = tmp_path / "tokens.json"
    alice = issue_token(settings.model_copy(update={"api_tokens_file": tokens}), "alice", admin=False)
    port = free_port()
    env = {**os.environ, "GRAYWAVE_API_TOKENS_FILE": str(tokens)}
    with (tmp_path / "api.log").open("w") as log:
        server = subprocess.Popen(
            read_only(Path(settings.lake_url), GRAYWAVE, "api", "--port", str(port)), env=env, stdout=log, stderr=log
        )
    try:
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {alice}"}, timeout=SERVER_TIMEOUT_S
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "api.log").read_text()
            time.sleep(0.2)
        waited = upload(client, "alice", wait=True, name="b.jpg")
        assert waited.status_code == 202, waited.text  # stored, left pending, saying why
        deleted = client.delete(f"/images/alice/{kept}")
        assert error_of(deleted) == (503, "unavailable"), deleted.text
    finally:
        server.terminate()
        server.wait(30)
    assert "Read-only file system (os error 30)" in (tmp_path / "api.log").read_text()  # the log says why
    assert lake_of(settings).version("images") == version  # nothing was committed
