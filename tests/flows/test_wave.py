import json
import re
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import graywave.service.batch as batch_module
from graywave.config import Settings
from graywave.errors import BackendUnavailable
from graywave.flows.wave import wave_flow
from graywave.service.wave import split_batches
from graywave.storage.blobs import LocalBlobStore
from tests.helpers import DAY, EXPECTED_REJECTS, lake_of, put_uploads


def lake_snapshot(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def assert_exactly_once(settings: Settings, keys: list[str]) -> None:
    lake = lake_of(settings)
    images = lake.read("images").column("source_key").to_pylist()
    rejects = lake.read("rejects").column("source_key").to_pylist()
    assert sorted(images + rejects) == sorted(keys)


def test_a_wave_handles_every_upload_once_and_a_rerun_changes_nothing(settings, phone_files, data_dir):
    keys = put_uploads(settings.blob_url, DAY, phone_files)
    summary = wave_flow(day=DAY, name="morning")
    assert (summary.processed, summary.rejected, summary.skipped) == (7, len(EXPECTED_REJECTS), 0)
    assert summary.images_per_s > 0
    assert_exactly_once(settings, keys)

    lake = lake_of(settings)
    rejects = {row["source_key"].split("/", 2)[2]: row for row in lake.read("rejects").to_pylist()}
    assert {key: row["reason"] for key, row in rejects.items()} == EXPECTED_REJECTS
    assert all(row["wave"] == "morning" and row["date"] == DAY and row["detail"] for row in rejects.values())
    images = lake.read("images").to_pylist()
    processed_dir = Path(settings.blob_url) / "processed" / DAY.isoformat()
    assert sorted(p.relative_to(Path(settings.blob_url)).as_posix() for p in processed_dir.rglob("*.jpg")) == sorted(
        row["processed_key"] for row in images
    )

    before = lake_snapshot(data_dir)
    again = wave_flow(day=DAY, name="morning")
    assert (again.processed, again.rejected, again.skipped) == (0, 0, len(keys))
    assert lake_snapshot(data_dir) == before


def test_a_wave_takes_the_day_and_the_day_before_and_never_twice(settings, phone_files):
    plain = {"ann/a.jpg": phone_files["ann/plain.jpg"]}
    old = put_uploads(settings.blob_url, DAY - timedelta(days=2), plain)
    yesterday = put_uploads(settings.blob_url, DAY - timedelta(days=1), plain)
    today = put_uploads(settings.blob_url, DAY, {"bob/b.jpg": phone_files["bob/rotated.jpg"]})

    first = wave_flow(day=DAY, name="evening")
    assert first.processed == 2
    assert_exactly_once(settings, yesterday + today)

    tomorrow = put_uploads(settings.blob_url, DAY + timedelta(days=1), plain)
    second = wave_flow(day=DAY + timedelta(days=1), name="morning")
    assert (second.processed, second.skipped) == (1, 1)  # today's upload was handled by the earlier wave
    assert_exactly_once(settings, yesterday + today + tomorrow)
    assert old[0] not in lake_of(settings).source_keys("images", [DAY - timedelta(days=2)])


def test_keys_off_the_layout_are_rejected_not_skipped(settings, phone_files):
    bad = ["uploads/2026-11-25/not.a.user/a.jpg"]
    LocalBlobStore(settings.blob_url).write(bad[0], phone_files["ann/plain.jpg"], "image/jpeg")
    summary = wave_flow(day=DAY, name="morning")
    assert summary.rejected == 1
    rows = lake_of(settings).read("rejects").to_pylist()
    assert [(r["source_key"], r["reason"], r["user_id"]) for r in rows] == [(bad[0], "bad_key", None)]


def test_wave_names_must_not_look_like_numbers(settings):
    with pytest.raises(ValueError, match="must start with a letter"):
        wave_flow(day=DAY, name="1000")


def test_a_failing_batch_fails_the_wave_but_keeps_what_was_done(settings, phone_files, monkeypatch):
    monkeypatch.setenv("GRAYWAVE_WORKERS", "1")
    monkeypatch.setenv("GRAYWAVE_BATCH_SIZE", "1")
    files = {f"u{i}/p.jpg": phone_files["ann/plain.jpg"] for i in range(4)}
    keys = put_uploads(settings.blob_url, DAY, files)
    real = batch_module.process_uploads

    def fail_on_the_last(uploads, store, settings, device):
        if uploads[0].key.key == keys[-1]:
            raise OSError("disk full")
        return real(uploads, store, settings, device)

    monkeypatch.setattr(batch_module, "process_uploads", fail_on_the_last)
    with pytest.raises(OSError, match="disk full"):
        wave_flow(day=DAY, name="morning")
    done = lake_of(settings).source_keys("images", [DAY])
    assert done == set(keys[:-1])

    monkeypatch.setattr(batch_module, "process_uploads", real)
    rerun = wave_flow(day=DAY, name="morning")
    assert (rerun.processed, rerun.skipped) == (1, 3)
    assert_exactly_once(settings, keys)


def test_an_error_on_purpose_fails_the_run_with_its_reason_and_no_traceback(settings, caplog, monkeypatch):
    """A ``GraywaveError`` is an answer (here: an upload folder that is not there), not a bug; raised
    through Prefect it was logged with its whole traceback."""
    missing = Path(settings.blob_url) / "not-there"
    monkeypatch.setenv("GRAYWAVE_BLOB_URL", str(missing))
    state = wave_flow(day=DAY, name="morning", return_state=True)
    assert state.is_failed()
    assert state.message == f"BackendUnavailable: the blob store {missing} is not a folder on this machine"
    with pytest.raises(BackendUnavailable, match="is not a folder"):  # to a caller in this process (the CLI)
        wave_flow(day=DAY, name="morning")
    assert "is not a folder" in caplog.text  # Prefect's log of the run's end: one line, no traceback
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    ("count", "workers", "max_size", "sizes"),
    [(0, 2, 64, []), (3, 2, 64, [1, 1, 1]), (300, 2, 64, [38] * 7 + [34]), (10_000, 2, 64, [64] * 156 + [16])],
)
def test_batches_are_small_enough_to_balance_and_large_enough_to_amortise(count, workers, max_size, sizes):
    batches = split_batches(list(range(count)), workers, max_size)
    assert [len(b) for b in batches] == sizes
    assert [x for b in batches for x in b] == list(range(count))


def _artifacts_of(client, run_id) -> dict:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    return {artifact.key or artifact.type: artifact for artifact in found}


def test_a_wave_run_is_named_tagged_and_publishes_what_an_operator_reads(settings, phone_files):
    """The UI used to show a random run name, tasks named process-batch-<hex>, and no artifact: the
    rejects and their reasons appeared nowhere but in a count in the log."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, TaskRunFilter, TaskRunFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort

    put_uploads(settings.blob_url, DAY, phone_files)
    wave_flow(day=DAY, name="morning")
    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"wave-morning-{DAY}"])),
            sort=FlowRunSort.START_TIME_DESC,  # the latest: earlier tests ran others of that name
            limit=1,
        )
        assert {f"day:{DAY}", "wave:morning"} <= set(run.tags)
        tasks = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run.id])))
        batches = [t.name for t in tasks if t.name.startswith("batch-")]
        assert batches and all(re.fullmatch(r"batch-\d+-of-\d+", name) for name in batches)
        artifacts = _artifacts_of(client, run.id)
    summary = artifacts["wave-summary"].data
    assert "| processed | 7 |" in summary and f"| rejected | {len(EXPECTED_REJECTS)} |" in summary
    assert "`over_decode_budget`" in summary and settings.lake_url in summary
    rejects = json.loads(artifacts["wave-rejects"].data)
    assert sorted(row["reason"] for row in rejects) == sorted(EXPECTED_REJECTS.values())
    assert {row["key"].rsplit("/", 2)[1] for row in rejects} == {"dan", "eve"}
    assert artifacts["progress"].data == 100.0


def test_a_scheduled_run_that_starts_late_does_the_day_it_was_scheduled_for(settings, phone_files):
    """A run's day used to be the clock's day when it started: an evening run that started late, past
    midnight, would process the wrong day."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled

    from graywave.flows.schedule import wave_deployments

    zone = ZoneInfo(settings.timezone)
    scheduled = datetime.combine(settings.today() - timedelta(days=3), time(17, 0), zone)
    put_uploads(settings.blob_url, scheduled.date(), phone_files)
    evening = wave_deployments(settings)[1]
    with get_client(sync_client=True) as client:
        created = client.create_flow_run_from_deployment(
            evening.apply(), parameters={"name": "evening"}, state=Scheduled(scheduled_time=scheduled)
        )
        late = client.read_flow_run(created.id)  # started now, three days late
    summary = run_flow(wave_flow, flow_run=late, parameters={"name": "evening"})
    assert summary.date == scheduled.date().isoformat() and summary.processed == 7
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(created.id).name == f"wave-evening-{scheduled.date()}"


def test_a_wave_that_cannot_run_creates_nothing_in_the_lake(data_dir, monkeypatch):
    """Run from another folder (no blob store where the settings point), a wave used to create the
    lake's folders before it failed (it does not any more: this holds it)."""
    monkeypatch.setenv("GRAYWAVE_BLOB_URL", str(data_dir / "elsewhere" / "blobs"))
    with pytest.raises(BackendUnavailable, match="is not a folder"):
        wave_flow(day=DAY, name="morning")
    assert not (data_dir / "lake").exists() and not (data_dir / "elsewhere").exists()
