"""The suite's own Prefect servers (``tests/conftest.py``): one per test process, and Prefect homes
(the process's own, the tests' own) that start with a copy of a migrated database."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def alembic_version(database: Path) -> str:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        [(version,)] = db.execute("SELECT version_num FROM alembic_version").fetchall()
    return str(version)


def prefects_latest_migration() -> str:
    """The head of Prefect's SQLite migrations, as its migration environment finds them."""
    from alembic.script import ScriptDirectory
    from prefect.server.database import provide_database_interface
    from prefect.server.database.alembic_commands import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    script.version_locations = [str(provide_database_interface().orm.versions_dir)]
    return str(script.get_current_head())


def test_a_command_run_inside_a_test_process_uses_the_processs_one_prefect_server(prefect_server):
    from prefect.server.api.server import SubprocessASGIServer  # Prefect's whole server: seconds to import
    from prefect.settings import PREFECT_API_URL

    from graywave.flows.temporary_server import prefect_api

    with prefect_api():
        used = PREFECT_API_URL.value()
    assert used == prefect_server == SubprocessASGIServer().api_url  # not a second server of graywave's


def test_the_processs_own_prefect_home_holds_the_migrated_database_from_the_start():
    """Prefect's own client starts the process's server in the process's home when a test runs a flow
    with no ``PREFECT_API_URL`` before anything else started it: that home holds a copy of the migrated
    database from the session's start, not nothing for the server to migrate (12 CPU-seconds, not 6)."""
    assert alembic_version(Path(os.environ["PREFECT_HOME"]) / "prefect.db") == prefects_latest_migration()


def test_a_tests_prefect_home_starts_on_a_database_with_all_of_prefects_migrations_and_no_runs(prefect_home):
    database = prefect_home / "prefect.db"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        runs = db.execute("SELECT count(*) FROM flow_run").fetchone()[0]
        deployments = db.execute("SELECT count(*) FROM deployment").fetchone()[0]
    assert alembic_version(database) == prefects_latest_migration()
    assert runs == 0 and deployments == 0
