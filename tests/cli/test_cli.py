import json
import os
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

from typer.testing import CliRunner

from graywave.cli.main import app
from graywave.service import wave
from tests.helpers import DAY, EXPECTED_REJECTS, lake_of, put_uploads

runner = CliRunner()


def test_wave_run_prints_a_summary_and_exits_zero_with_rejects(settings, phone_files):
    put_uploads(settings.blob_url, DAY, phone_files)
    result = runner.invoke(app, ["wave", "run", "--date", DAY.isoformat(), "--name", "evening"])
    assert result.exit_code == 0, result.output
    assert f"7 processed, {len(EXPECTED_REJECTS)} rejected, 0 skipped" in result.output
    assert "images/s" in result.output
    assert len(lake_of(settings).read("images", [DAY])) == 7


def test_bad_arguments_exit_with_usage_errors(settings):
    assert runner.invoke(app, ["wave", "run", "--name", "1000"]).exit_code == 2
    wrong_format = runner.invoke(app, ["wave", "run", "--date", "25/11/2026"])
    assert wrong_format.exit_code == 2 and "write YYYY-MM-DD" in wrong_format.output
    assert runner.invoke(app, ["wave", "run", "--settle", "-1"]).exit_code == 2
    alone = runner.invoke(app, ["wave", "run", "--max-duration", "60"])
    assert alone.exit_code == 2 and "give --settle too" in alone.output


def test_commands_that_did_nothing_say_so_and_exit_1(settings, phone_files, tmp_path, monkeypatch):
    """Each of these used to exit 0: "0 processed", an empty table, "median written" over empty files,
    a token for a name the API cannot serve, and a wrong day reported as a wrong format."""
    put_uploads(settings.blob_url, DAY, phone_files)
    assert runner.invoke(app, ["wave", "run", "--date", DAY.isoformat()]).exit_code == 0

    invalid_day = runner.invoke(app, ["query", "median", "--date", "2026-02-30"])
    assert invalid_day.exit_code == 2 and "2026-02-30 is not a date of the calendar" in invalid_day.output
    nobody = runner.invoke(app, ["query", "weekly", "nobody", "--week", "2026-W48"])
    assert nobody.exit_code == 1 and "nobody has no processed images" in nobody.output
    reserved = runner.invoke(app, ["query", "weekly", "weekly"])
    assert reserved.exit_code == 2 and "reserved" in reserved.output

    empty_day = runner.invoke(app, ["analytics", "run", "--date", "2026-11-20"])
    assert empty_day.exit_code == 1 and "no images were processed on 2026-11-20" in empty_day.output
    lake = lake_of(settings)
    for table in ("daily_user_histograms", "daily_median", "similar_users"):
        assert not len(lake.read(table, [date(2026, 11, 20)])), table  # nothing written

    monkeypatch.setenv("GRAYWAVE_BLOB_URL", str(tmp_path / "no" / "such" / "folder"))
    missing = runner.invoke(app, ["wave", "run", "--date", DAY.isoformat()])
    assert missing.exit_code == 1 and "is not a folder" in missing.output
    assert "0 processed, 0 rejected" not in missing.output  # no summary of a wave that did nothing


def test_wave_run_with_a_settle_window_reports_its_rounds(settings, phone_files, monkeypatch):
    """Uploads placed while the wave collects (by a thread) are handled by it, in a later round."""
    monkeypatch.setenv("GRAYWAVE_WAVE_POLL_S", "1")  # listings 1 s apart at least, not 10
    put_uploads(settings.blob_url, DAY, dict(list(phone_files.items())[:2]))
    later = dict(list(phone_files.items())[2:4])

    def upload_while_it_drains() -> None:
        while not list(Path(settings.blob_url).glob("processed/**/*.jpg")):  # round 1 under way
            time.sleep(0.05)
        put_uploads(settings.blob_url, DAY, later)

    producer = threading.Thread(target=upload_while_it_drains, daemon=True)
    producer.start()
    result = runner.invoke(app, ["wave", "run", "--date", DAY.isoformat(), "--settle", "3", "--max-duration", "120"])
    producer.join(5)
    assert result.exit_code == 0, result.output
    assert "4 processed" in result.output and "rounds" in result.output and "upload to processed: p50" in result.output
    assert len(lake_of(settings).read("images", [DAY])) == 4


def test_settings_shows_the_configuration(settings):
    result = runner.invoke(app, ["settings"])
    assert result.exit_code == 0
    assert f"GRAYWAVE_BLOB_URL={settings.blob_url}" in result.output
    assert "a wave's batches run on: threads of this process (2 at once)" in result.output
    assert "GRAYWAVE_BINS=16" in result.output


def test_token_issue_prints_a_token_and_stores_only_its_digest(settings, tmp_path, monkeypatch):
    import hashlib
    import sqlite3

    monkeypatch.setenv("GRAYWAVE_API_TOKENS_FILE", str(tmp_path / "tokens.json"))
    result = runner.invoke(app, ["token", "issue", "alice"])
    assert result.exit_code == 0
    token = result.output.strip()
    with sqlite3.connect(tmp_path / "tokens.db") as db:
        rows = db.execute("SELECT * FROM tokens").fetchall()
    assert rows == [(hashlib.sha256(token.encode()).hexdigest(), "alice", "alice", 0)]
    assert token.encode() not in (tmp_path / "tokens.db").read_bytes()
    assert (tmp_path / "tokens.db").stat().st_mode & 0o077 == 0
    assert runner.invoke(app, ["token", "issue", "ops", "--admin"]).exit_code == 0
    assert runner.invoke(app, ["token", "issue", "not/a/user"]).exit_code == 2


def test_analytics_run_from_the_command_line(settings, phone_files):
    put_uploads(settings.blob_url, DAY, phone_files)
    assert runner.invoke(app, ["wave", "run", "--date", DAY.isoformat()]).exit_code == 0
    result = runner.invoke(app, ["analytics", "run", "--date", DAY.isoformat(), "--top-n", "2", "--metric", "l1"])
    assert result.exit_code == 0, result.output
    assert f"analytics of {DAY.isoformat()}: 4 users" in result.output
    assert runner.invoke(app, ["analytics", "run", "--metric", "cosine"]).exit_code == 2


def test_token_issue_refuses_reserved_ids_and_a_damaged_file(settings, tmp_path, monkeypatch):
    tokens_file = tmp_path / "tokens.json"
    monkeypatch.setenv("GRAYWAVE_API_TOKENS_FILE", str(tokens_file))
    reserved = runner.invoke(app, ["token", "issue", "weekly"])
    assert reserved.exit_code == 2 and "reserved" in reserved.output
    tokens_file.write_text('{"tokens": [')  # a legacy file to migrate, damaged
    damaged = runner.invoke(app, ["token", "issue", "alice"])
    assert damaged.exit_code == 1 and "no token issued" in damaged.output and "not valid" in damaged.output
    assert tokens_file.read_text() == '{"tokens": ['
    tokens_file.unlink()
    (tmp_path / "tokens.db").write_text("not a database, " * 100)
    damaged = runner.invoke(app, ["token", "issue", "alice"])
    assert damaged.exit_code == 1 and "no token issued" in damaged.output and "tokens.db" in damaged.output


def test_token_issue_from_file_provisions_every_user_or_none(settings, tmp_path, monkeypatch):
    from graywave.config import Settings
    from graywave.service.tokens import open_token_store

    monkeypatch.setenv("GRAYWAVE_API_TOKENS_FILE", str(tmp_path / "tokens.json"))
    bad = tmp_path / "bad.txt"
    bad.write_text("alice\nbob\nno/slash\nalice\n")
    refused = runner.invoke(app, ["token", "issue", "--from-file", str(bad)])
    assert refused.exit_code == 1 and "\t" not in refused.stdout
    assert "line 3:" in refused.stderr and "line 4: user 'alice' is on line 1" in refused.stderr
    assert open_token_store(Settings()).page(10) == []  # nothing half-issued
    good = tmp_path / "users.txt"
    good.write_text("".join(f"user{k}\r\n" for k in range(300)))
    issued = runner.invoke(app, ["token", "issue", "--from-file", str(good)])
    assert issued.exit_code == 0, issued.output
    lines = [line.split("\t") for line in issued.stdout.splitlines()]
    assert [user for user, _ in lines] == [f"user{k}" for k in range(300)]
    store = open_token_store(Settings())
    assert all(store.authenticate(token).user_id == user for user, token in lines)
    assert runner.invoke(app, ["token", "issue", "alice", "--from-file", str(good)]).exit_code == 2


def test_token_list_and_revoke(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAYWAVE_API_TOKENS_FILE", str(tmp_path / "tokens.json"))
    token = runner.invoke(app, ["token", "issue", "alice"]).output.strip()
    listed = runner.invoke(app, ["token", "list", "--json"])
    assert listed.exit_code == 0 and token not in listed.output
    [entry] = json.loads(listed.output)
    assert (entry["label"], entry["user_id"], entry["admin"]) == ("alice", "alice", False)
    revoked = runner.invoke(app, ["token", "revoke", entry["token_id"]])
    assert revoked.exit_code == 0 and "revoked token" in revoked.output
    again = runner.invoke(app, ["token", "revoke", entry["token_id"]])
    assert again.exit_code == 1 and "no token revoked" in again.output


def test_status_and_rejects_tell_an_operator_what_happened(settings, phone_files):
    today = settings.today()  # the status shows the last 7 days
    put_uploads(settings.blob_url, today, phone_files)
    assert runner.invoke(app, ["wave", "run", "--name", "morning"]).exit_code == 0
    put_uploads(settings.blob_url, today, {"zed/new.jpg": phone_files["ann/plain.jpg"]})

    free = runner.invoke(app, ["status"])
    assert free.exit_code == 0, free.output
    assert "morning" in free.output and "pending now: 1 uploads" in free.output
    assert "latest commits to images" in free.output and "MERGE" in free.output and "record" in free.output

    found = runner.invoke(app, ["rejects", "--reason", "over_decode_budget", "--json"])
    assert found.exit_code == 0, found.output
    [row] = json.loads(found.output)
    assert row["source_key"].endswith("eve/huge.png") and row["user_id"] == "eve" and "MB" in row["detail"]
    every = json.loads(runner.invoke(app, ["rejects", "--date", today.isoformat(), "--json"]).output)
    assert sorted(r["reason"] for r in every) == sorted(EXPECTED_REJECTS.values())

    table = runner.invoke(app, ["rejects", "--reason", "over_decode_budget"], terminal_width=80)
    first_column = "".join(line.split("│")[1].strip() for line in table.output.splitlines() if line.startswith("│"))
    assert first_column.endswith("eve/huge.png")  # the key folds over lines, never cut to "uploads/202…"
    unknown = runner.invoke(app, ["rejects", "--reason", "nosuch"])  # was an empty table, exit 0
    assert unknown.exit_code == 2 and "corrupt" in unknown.output  # the reasons there are


def test_plot_commands_write_pngs_and_exit_1_without_data(settings, phone_files, tmp_path):
    from PIL import Image

    today = settings.today()
    put_uploads(settings.blob_url, today, phone_files)
    assert runner.invoke(app, ["wave", "run", "--name", "morning"]).exit_code == 0
    assert runner.invoke(app, ["analytics", "run"]).exit_code == 0
    median, week = tmp_path / "median.png", tmp_path / "week.png"
    made = runner.invoke(app, ["plot", "median", "-o", str(median)])
    assert made.exit_code == 0, made.output
    assert Image.open(median).format == "PNG" and Image.open(median).size[0] >= 400
    made = runner.invoke(app, ["plot", "weekly", "ann", "-o", str(week)])
    assert made.exit_code == 0, made.output
    assert Image.open(week).format == "PNG"
    nobody = runner.invoke(app, ["plot", "weekly", "nobody", "-o", str(tmp_path / "x.png")])
    assert nobody.exit_code == 1 and not (tmp_path / "x.png").exists()


QUERY_PROBE = """
import json, os, sys
from graywave.cli.main import main
try:
    main()
except SystemExit as end:
    code = end.code
import pydantic.plugin._loader as plugins
with open(os.environ["PROBE_OUT"], "w") as out:
    json.dump({"exit": code, "modules": sorted(sys.modules), "plugins_scanned": plugins._plugins is not None}, out)
"""


def test_a_query_starts_without_the_waves_machinery(settings, phone_files, tmp_path):
    """A query's start-up is its imports (make bench: `graywave query median` against the imports of
    Polars and PyArrow alone). None of the wave's machinery: no Prefect, Numba, MongoDB or S3 client,
    no file lock (numpy.ma came with np.median's first call; pydantic's plugin search read every
    installed package's entry points)."""
    put_uploads(settings.blob_url, DAY, phone_files)
    wave.run_wave(settings, DAY, "morning", log=lambda _: None)
    out = tmp_path / "probe.json"
    done = subprocess.run(
        [sys.executable, "-c", QUERY_PROBE, "query", "median", "--date", DAY.isoformat()],
        env=os.environ | {"PROBE_OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    probe = json.loads(out.read_text())
    assert probe["exit"] in (None, 0) and "median histogram of" in done.stdout
    roots = {name.split(".")[0] for name in probe["modules"]}
    assert not roots & {"prefect", "numba", "pymongo", "boto3", "filelock", "PIL"}, roots
    assert "numpy.ma" not in probe["modules"]
    assert not probe["plugins_scanned"]


def test_lake_history_optimize_and_queries_as_of_an_earlier_version(settings, phone_files):
    """An operator sees which wave wrote what, compacts the lake, and reads a table as it was."""
    put_uploads(settings.blob_url, DAY, phone_files)
    assert runner.invoke(app, ["wave", "run", "--date", DAY.isoformat(), "--name", "morning"]).exit_code == 0
    before = lake_of(settings).version("images")
    history = runner.invoke(app, ["lake", "history", "images", "--json"])
    assert history.exit_code == 0, history.output
    latest = json.loads(history.output)[0]
    assert latest["delta"] == "MERGE" and latest["graywave"] == "record" and latest["wave"] == "morning"
    assert latest["day"] == DAY.isoformat() and latest["flow_run"]  # the Prefect flow run that wrote it
    median = json.loads(runner.invoke(app, ["query", "median", "--date", DAY.isoformat(), "--json"]).output)

    # A bad run: the images of two users are deleted; the query as of the version before still answers.
    lake = lake_of(settings)
    from graywave.storage.lake import CommitInfo

    lake.delete("images", {"user_id": ["ann", "bob"]}, info=CommitInfo("delete"))
    changed = json.loads(runner.invoke(app, ["query", "median", "--date", DAY.isoformat(), "--json"]).output)
    assert changed != median
    as_of = runner.invoke(app, ["query", "median", "--date", DAY.isoformat(), "--json", "--as-of", str(before)])
    assert as_of.exit_code == 0, as_of.output
    assert json.loads(as_of.output) == median
    missing = runner.invoke(app, ["query", "median", "--date", DAY.isoformat(), "--as-of", "999"])
    assert missing.exit_code == 1 and "no version 999" in missing.output
    assert runner.invoke(app, ["query", "median", "--as-of", "yesterday"]).exit_code == 2

    optimized = runner.invoke(app, ["lake", "optimize", "--all"])
    assert optimized.exit_code == 0, optimized.output
    assert "images:" in optimized.output and "files" in optimized.output
    recent = lake_of(settings).history("images", 5)
    assert recent[0].graywave.get("operation") == "maintenance"
    assert runner.invoke(app, ["lake", "history", "no_such_table"]).exit_code == 2
    nothing = runner.invoke(app, ["lake", "migrate"])
    assert nothing.exit_code == 1 and "nothing to convert" in nothing.output


def test_queries_on_no_lake_say_where_they_looked(tmp_path, monkeypatch):
    """The prober found it: from another folder, rejects printed an empty table and exited 0, as if
    nothing had been rejected. A lake with no table at all is named, exit 1, nothing created."""
    monkeypatch.chdir(tmp_path)
    for variable in ("GRAYWAVE_BLOB_URL", "GRAYWAVE_LAKE_URL"):
        monkeypatch.delenv(variable, raising=False)
    for command in (["rejects"], ["query", "median"], ["lake", "history"], ["query", "weekly", "ann"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1, (command, result.output)
        assert "no graywave lake found" in result.output and str(tmp_path / "data" / "lake") in result.output
    assert not (tmp_path / "data" / "lake").exists()
