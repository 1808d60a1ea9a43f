"""The lake's nightly maintenance as a flow: compaction, Z-order, checkpoints, vacuum.

    graywave lake optimize [--days N]

What it does is ``service.operations.Operations.maintain_lake`` (``storage.lake.Lake.maintain``). It runs while
waves and the API write: each step is a Delta commit, retried on a conflict.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from graywave.config import Settings
from graywave.flows.failures import failing_with_the_reason
from graywave.flows.temporary_server import prefect_api
from graywave.service import Graywave
from graywave.service.operations import MAINTAINED_DAYS
from graywave.storage.lake import Maintenance


@flow(name="graywave-lake-maintenance", flow_run_name="lake-maintenance")
@failing_with_the_reason
def lake_maintenance_flow(days: int | None = MAINTAINED_DAYS) -> list[Maintenance]:
    """Compact the last ``days`` days' partitions (None: all), Z-order ``images`` and ``rejects`` by
    user, checkpoint every table, vacuum files older than ``GRAYWAVE_LAKE_RETENTION_HOURS``."""
    settings = Settings()
    logger = get_run_logger()
    with Graywave(settings) as graywave:
        done = graywave.operations.maintain_lake(days, flow_run=flow_run.id)
    for table in done:
        logger.info(table.line())
    create_markdown_artifact(
        "\n".join(
            [
                "# Lake maintenance",
                "",
                "| table | files before | files after | old files vacuumed | seconds |",
                "|---|---|---|---|---|",
                *(
                    f"| {t.table} | {t.files_before} | {t.files_after} | {t.files_vacuumed} | {t.seconds:.1f} |"
                    for t in done
                ),
            ]
        ),
        key="lake-maintenance",
        description="Files of each table before and after compaction, and old files vacuumed.",
    )
    return done


def run_lake_maintenance_flow(days: int | None = MAINTAINED_DAYS) -> list[Maintenance]:
    """Run the maintenance flow now, against ``PREFECT_API_URL`` or else this process's temporary
    server (``flows.temporary_server``), which outlives a SIGTERM or Ctrl-C to the process group."""
    with prefect_api():
        return lake_maintenance_flow(days=days)
