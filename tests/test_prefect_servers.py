"""The suite's own Prefect servers (``tests/conftest.py``): one per test process, and homes of the
tests' own that start on a migrated database."""

from __future__ import annotations

import sqlite3

from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL

from graywave.flows.temporary_server import prefect_api


def test_a_command_run_inside_a_test_process_uses_the_processs_one_prefect_server(prefect_server):
    with prefect_api():
        used = PREFECT_API_URL.value()
    assert used == prefect_server == SubprocessASGIServer().api_url  # not a second server of graywave's


def test_a_tests_prefect_home_starts_on_a_database_with_prefects_migrations_and_no_runs(prefect_home):
    with sqlite3.connect(f"file:{prefect_home / 'prefect.db'}?mode=ro", uri=True) as db:
        [(version,)] = db.execute("SELECT version_num FROM alembic_version").fetchall()
        runs = db.execute("SELECT count(*) FROM flow_run").fetchone()[0]
        deployments = db.execute("SELECT count(*) FROM deployment").fetchone()[0]
    assert version and runs == 0 and deployments == 0
