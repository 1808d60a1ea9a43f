"""The wave without Prefect (``service.wave.run_wave``): the settle window that drains a burst."""

from __future__ import annotations

import math
import os
import threading
import time
from datetime import date, timedelta
from itertools import pairwise

import pytest

from graywave.config import Settings
from graywave.errors import InvalidInput
from graywave.flows.markdown import wave_markdown
from graywave.service import wave
from graywave.service.backends import Backends
from graywave.service.images import Images
from graywave.service.samples import encode, synthetic_photo
from graywave.service.wave import Drain, Latency, drain_of, plan_wave, run_batches_in_threads, run_wave
from tests.helpers import DAY, Clock, lake_of, put_uploads, sample_jpeg


def handled_keys(settings: Settings) -> list[str]:
    lake = lake_of(settings)
    return sorted(
        lake.read("images").column("source_key").to_pylist() + lake.read("rejects").column("source_key").to_pylist()
    )


class Producer(threading.Thread):
    """Uploads one photo every ``every_s`` seconds, ``count`` of them, as a phone burst would."""

    def __init__(self, settings: Settings, count: int, every_s: float, day: date = DAY):
        super().__init__(name="producer")
        self.settings, self.count, self.every_s, self.day = settings, count, every_s, day
        self.keys: list[str] = []

    def run(self) -> None:
        for k in range(self.count):
            self.keys += put_uploads(
                self.settings.blob_url, self.day, {f"user{k % 3}/burst-{k:03}.jpg": sample_jpeg(k)}
            )
            time.sleep(self.every_s)


@pytest.fixture
def quiet_logs() -> list[str]:
    """The wave's log lines, kept instead of printed."""
    return []


def test_a_draining_wave_processes_what_arrives_while_it_runs_and_leaves_what_comes_after(settings, quiet_logs):
    first = put_uploads(settings.blob_url, DAY, {"early/a.jpg": sample_jpeg(100), "early/b.jpg": sample_jpeg(101)})
    producer = Producer(settings, count=12, every_s=0.25)
    producer.start()  # 3 s of uploads, against a 1.5 s settle window polled every 0.2 s
    summary = run_wave(
        settings, DAY, "morning", drain=Drain(settle_s=1.5, max_duration_s=60, poll_s=0.2), log=quiet_logs.append
    )
    producer.join()
    late = put_uploads(settings.blob_url, DAY, {"late/c.jpg": sample_jpeg(200)})

    inside = sorted(first + producer.keys)
    assert handled_keys(settings) == inside  # each once, the late one not at all
    assert summary.processed == len(inside) and summary.rejected == 0
    assert len(summary.rounds) > 1 and sum(r.new for r in summary.rounds) == len(inside)
    assert summary.rounds[0].new >= 2
    assert any(line.startswith("round 2:") for line in quiet_logs)
    assert summary.latency is not None and 0 <= summary.latency.p50 <= summary.latency.p95 <= summary.latency.max
    assert "upload to processed: p50" in summary.line() and f"in {len(summary.rounds)} rounds" in summary.line()

    following = run_wave(settings, DAY, "evening", log=quiet_logs.append)
    assert (following.processed, following.skipped) == (1, len(inside))
    assert handled_keys(settings) == sorted(inside + late)


def test_a_second_wave_started_while_one_drains_runs_and_every_upload_is_recorded_once(settings, quiet_logs):
    """No lock: a manual wave during a draining one runs at once, and the insert-only MERGE keeps one
    row per upload, whichever of the two processed it (or both did)."""
    put_uploads(settings.blob_url, DAY, {f"u/{k}.jpg": sample_jpeg(k) for k in range(6)})
    draining = threading.Thread(
        target=run_wave,
        args=(settings, DAY, "morning"),
        kwargs={"drain": Drain(settle_s=2.0, max_duration_s=60, poll_s=0.2), "log": quiet_logs.append},
    )
    draining.start()
    deadline = time.monotonic() + 60
    while not any(line.startswith("round 1:") for line in quiet_logs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(line.startswith("round 1:") for line in quiet_logs), quiet_logs
    put_uploads(settings.blob_url, DAY, {f"v/{k}.jpg": sample_jpeg(10 + k) for k in range(4)})
    manual = run_wave(settings, DAY, "manual", log=quiet_logs.append)
    draining.join(120)
    assert manual.processed >= 4
    keys = handled_keys(settings)
    assert len(keys) == len(set(keys)) == 10


def test_a_wave_stops_collecting_at_its_maximum_duration_while_uploads_still_arrive(settings, quiet_logs):
    """A simulated clock: every listing finds something new, so only the maximum duration ends the wave."""
    clock = Clock(0.0)
    uploaded = [0]

    def sleep(seconds: float) -> None:
        clock.now += seconds
        uploaded[0] += 1
        put_uploads(settings.blob_url, DAY, {f"u/{uploaded[0]:03}.jpg": sample_jpeg(uploaded[0])})

    summary = run_wave(
        settings,
        DAY,
        "morning",
        drain=Drain(settle_s=30, max_duration_s=100, poll_s=10),
        log=quiet_logs.append,
        clock=clock,
        sleep=sleep,
    )
    # Listings at 10, 20, ..., 100 s: each found the one upload of the sleep before it.
    assert [r.new for r in summary.rounds] == [0] + [1] * 10
    assert summary.processed == 10 == len(handled_keys(settings))
    assert clock.now == 100
    assert "stopped collecting after 100 s" in "\n".join(quiet_logs)


def test_the_settle_window_closes_a_settle_after_the_last_new_upload(settings, quiet_logs):
    clock = Clock(0.0)
    listings: list[float] = []

    def sleep(seconds: float) -> None:
        clock.now += seconds
        listings.append(clock.now)
        if clock.now == 20:  # one upload, seen by the listing at 20 s
            put_uploads(settings.blob_url, DAY, {"u/late.jpg": sample_jpeg(7)})

    summary = run_wave(
        settings,
        DAY,
        "morning",
        drain=Drain(settle_s=25, max_duration_s=1000, poll_s=10),
        log=quiet_logs.append,
        clock=clock,
        sleep=sleep,
    )
    assert listings == [10, 20, 30, 40, 45]  # the last poll is shortened to end at 20 + 25 s
    assert [r.new for r in summary.rounds] == [0, 1]


def test_a_trickle_is_listed_every_poll_and_recorded_in_a_few_commits(settings, monkeypatch, quiet_logs):
    """One upload a second, and rounds of a second each (a Prefect round costs about that). Listing
    again as soon as a round ended found one new upload each time, and every round made a lake
    commit (and file) of its own: 20 commits for 20 uploads."""
    clock = Clock(0.0)
    listings: list[float] = []
    uploads = 20

    def advance(seconds: float) -> None:  # the trickle: upload k at k s, for k < 20
        for second in range(math.floor(clock.now) + 1, math.floor(clock.now + seconds) + 1):
            if second < uploads:
                put_uploads(settings.blob_url, DAY, {f"u/{second:03}.jpg": sample_jpeg(second)})
        clock.now += seconds

    def rounds_of_a_second(batches, settings):
        results = list(run_batches_in_threads(batches, settings))
        advance(1.0)
        yield from results

    def listing(*args, **kwargs):
        listings.append(clock.now)
        return plan_wave(*args, **kwargs)

    monkeypatch.setattr(wave, "plan_wave", listing)
    put_uploads(settings.blob_url, DAY, {"u/000.jpg": sample_jpeg(0)})
    summary = run_wave(
        settings,
        DAY,
        "morning",
        drain=Drain(settle_s=30, max_duration_s=1000, poll_s=10),
        run_batches=rounds_of_a_second,
        log=quiet_logs.append,
        clock=clock,
        sleep=advance,
    )
    assert summary.commits <= 3, f"{summary.commits} commits for {uploads} uploads"
    assert len(lake_of(settings).files("images")) == summary.commits
    assert summary.recorded == uploads
    assert all(later - earlier >= 10 for earlier, later in pairwise(listings)), listings
    assert len(summary.rounds) <= 4
    assert summary.processed == uploads == len(set(handled_keys(settings))) == len(handled_keys(settings))


def test_one_pass_without_a_drain_and_settings_give_the_scheduled_window(settings, monkeypatch, quiet_logs):
    put_uploads(settings.blob_url, DAY, {"u/a.jpg": sample_jpeg(1)})

    def no_sleep(seconds: float) -> None:
        raise AssertionError("a one-pass wave never waits")

    summary = run_wave(settings, DAY, "morning", log=quiet_logs.append, sleep=no_sleep)
    assert len(summary.rounds) == 1 and summary.processed == 1
    assert not any(line.startswith("round") for line in quiet_logs)

    assert drain_of(Settings()) == Drain(settle_s=600, max_duration_s=3600, poll_s=10)
    monkeypatch.setenv("GRAYWAVE_WAVE_SETTLE_S", "120")
    assert drain_of(Settings(), max_duration_s=900) == Drain(settle_s=120, max_duration_s=900, poll_s=10)
    with pytest.raises(InvalidInput):
        Drain(settle_s=-1, max_duration_s=10)


def test_latency_percentiles():
    assert Latency.of([]) is None
    assert Latency.of([3.0]) == Latency(3.0, 3.0, 3.0)
    latency = Latency.of([float(s) for s in range(1, 101)])
    assert latency is not None
    assert (round(latency.p50, 2), round(latency.p95, 2), latency.max) == (50.5, 95.05, 100.0)


def test_hostile_entries_in_the_upload_folder_each_become_one_reject_and_the_wave_goes_on(
    settings, tmp_path, monkeypatch, quiet_logs
):
    """Links (broken, out of the store, to /dev/zero), a FIFO, a name that is not UTF-8 and a file
    over the byte limit: one reject row each with a stable reason, next to the one good photo."""
    monkeypatch.setenv("GRAYWAVE_MAX_UPLOAD_BYTES", "200000")
    settings = Settings()
    user = tmp_path / "blobs" / "uploads" / DAY.isoformat() / "mallory"
    put_uploads(settings.blob_url, DAY, {"mallory/good.jpg": sample_jpeg(1)})
    (tmp_path / "secret.jpg").write_bytes(sample_jpeg(2))
    (user / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (user / "escape.jpg").symlink_to(tmp_path / "secret.jpg")
    (user / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(user / "pipe.jpg")
    with open(os.fsencode(user) + b"/caf\xe9.jpg", "wb") as file:
        file.write(sample_jpeg(3))
    (user / "huge.jpg").write_bytes(encode(synthetic_photo(1200, 900, seed=4, noise=40.0), "PNG"))
    assert (user / "huge.jpg").stat().st_size > 200_000

    summary = run_wave(settings, DAY, "morning", log=quiet_logs.append)
    lake = lake_of(settings)
    reasons = {row["source_key"].rsplit("/", 1)[1]: row["reason"] for row in lake.read("rejects").to_pylist()}
    assert reasons == {
        "broken.jpg": "not_a_file",
        "escape.jpg": "not_a_file",
        "zero.jpg": "not_a_file",
        "pipe.jpg": "not_a_file",
        "caf\\xe9.jpg": "bad_key",
        "huge.jpg": "too_large",
    }
    assert lake.read("images").column("file_name").to_pylist() == ["good.jpg"]
    assert (summary.processed, summary.rejected) == (1, 6)
    again = run_wave(settings, DAY, "evening", log=quiet_logs.append)
    assert (again.processed, again.rejected, again.skipped) == (0, 0, 7)  # exactly once


def test_rerunning_a_past_wave_after_a_reprocess_changes_nothing(settings, quiet_logs):
    """Reprocessed rows stay in the partition of the wave that handled them, where every wave that
    lists the upload looks (and whose day's analytics they count in)."""
    past = DAY - timedelta(days=3)
    keys = put_uploads(settings.blob_url, past, {"alice/a.jpg": sample_jpeg(1), "alice/b.jpg": b"not a photo"})
    handled_on = past + timedelta(days=1)  # the next day's wave picks up the day before's uploads
    run_wave(settings, handled_on, "morning", log=quiet_logs.append)
    with Backends.open(settings) as backends:  # e.g. PUT /images/alice: both handled again, now
        report = Images(settings, backends).reprocess(Images(settings, backends).entries(DAY, "alice"))
    assert (report.count, report.processed, report.rejected, report.failed) == (2, 1, 1, ())
    for day in (past, handled_on):  # each wave whose upload days include them
        again = run_wave(settings, day, "evening", log=quiet_logs.append)
        assert (again.processed, again.rejected, again.skipped) == (0, 0, 2)
    assert handled_keys(settings) == sorted(keys)  # one row each, no duplicate
    lake = lake_of(settings)
    rows = [(row["wave"], row["date"]) for table in ("images", "rejects") for row in lake.read(table).to_pylist()]
    assert rows == [("api", handled_on), ("api", handled_on)]  # still in the day that counted them


def test_uploads_that_fall_back_from_the_device_codec_are_counted_in_the_summary_and_the_log(
    settings, phone_files, monkeypatch
):
    """The batch path with nvImageCodec (here on its CPU backend): the containers it does not decode
    are done on the CPU, and the wave says so, by reason, instead of reporting them as the device's."""
    from graywave.kernels import Device
    from graywave.kernels.gpu_codecs import NvImageCodecLuma
    from graywave.service import batch

    codecs = threading.local()  # one per batch thread, like luma_batch_codec's

    def codec_of_this_thread(device):
        if not hasattr(codecs, "codec"):
            codecs.codec = NvImageCodecLuma(Device("cpu"))
        return codecs.codec

    monkeypatch.setattr(batch, "luma_batch_codec", codec_of_this_thread)
    put_uploads(settings.blob_url, DAY, phone_files)
    logs: list[str] = []
    summary = run_wave(settings, DAY, "morning", log=logs.append)
    assert summary.processed == 7 and summary.fell_back == 4  # HEIC, PNG (twice, one named .jpg), WebP
    assert sum(summary.fallbacks.values()) == 4  # decodes only: nvImageCodec encoded all seven
    assert sum(count for label, count in summary.fallbacks.items() if "not PNG" in label) == 2
    assert "4 fell back to the CPU" in summary.line()
    assert "4 uploads fell back from the device's codec to the CPU's" in wave_markdown(summary, "the lake")
    assert sum(int(line.split()[0]) for line in logs if "fell back to the CPU:" in line) == 4


def test_a_signal_after_a_flush_was_written_records_nothing_twice(settings, monkeypatch, quiet_logs):
    """The cause of the duplicate row that the SIGTERM test found 2 times in 3 (issue 20): Prefect's
    SIGTERM handler raised in the main thread after a flush's rows were written but before the
    buffer was emptied, and ``run_wave``'s ``finally`` flushed the same rows again. Recording is an
    insert-only MERGE by source key now: the second flush inserts nothing."""
    from graywave.service.backends import Backends as RealBackends

    monkeypatch.setenv("GRAYWAVE_LAKE_FLUSH_ROWS", "1")  # as in that test: a flush per row, during the run
    monkeypatch.setenv("GRAYWAVE_WORKERS", "1")
    monkeypatch.setenv("GRAYWAVE_BATCH_SIZE", "1")
    settings = Settings()
    put_uploads(settings.blob_url, DAY, {f"u/{k}.jpg": sample_jpeg(k) for k in range(3)})
    real_record = RealBackends.record
    calls: list[int] = []

    def record_then_signalled(self, *args, **kwargs):
        inserted = real_record(self, *args, **kwargs)
        calls.append(inserted)
        if len(calls) == 1:
            raise KeyboardInterrupt("SIGTERM, as Prefect's handler raises it")  # the rows are in the lake
        return inserted

    monkeypatch.setattr(RealBackends, "record", record_then_signalled)
    with pytest.raises(KeyboardInterrupt):
        run_wave(settings, DAY, "manual", log=quiet_logs.append)
    assert calls == [1, 0]  # the finally's flush wrote the same row again, and the lake inserted none
    keys = handled_keys(settings)
    assert len(keys) == len(set(keys)) == 1


def test_a_settle_windows_rate_counts_the_time_spent_processing_not_the_waits():
    """The prober found it: a draining wave's "images/s" divided by its idle time too (36 images in
    3 rounds of 3.2 s in all, over an 11 s window, read 3.2 images/s)."""
    from graywave.service.wave import RoundSummary, WaveSummary

    rounds = [RoundSummary(1, 24, 24, 0, 1.9), RoundSummary(2, 11, 10, 1, 1.1), RoundSummary(3, 1, 1, 0, 0.2)]
    summary = WaveSummary("2026-11-25", "morning", 36, 35, 1, 0, seconds=11.1, megapixels=432.0, rounds=rounds)
    assert summary.processing_s == pytest.approx(3.2)
    assert summary.images_per_s == pytest.approx(36 / 3.2)
    assert "(3.2 s processing: 11.2 images/s, 135 MP/s)" in summary.line()
    one_pass = WaveSummary("2026-11-25", "morning", 10, 10, 0, 0, seconds=2.0, megapixels=20.0)
    assert one_pass.images_per_s == 5.0 and "(5.0 images/s, 10 MP/s)" in one_pass.line()
