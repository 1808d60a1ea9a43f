"""The reprocessing flow: every handled image of a user (or of all users) processed again from its
original, as a background job.

    PUT /images/alice    more than GRAYWAVE_API_INLINE_REPROCESS_MAX images: 202 and a run of this flow

The API starts runs of the ``reprocess`` deployment (``graywave serve`` registers and runs it) and
reads back the table artifact of images it could not reprocess. What reprocessing does is the
service's (``graywave.service.images.Images.reprocess``): batch by batch, each holding the lake, so waves
go on in between; an image whose original is gone keeps its record and is listed.
"""

from __future__ import annotations

from dataclasses import asdict
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from graywave.config import Settings
from graywave.flows.failures import failing_with_the_reason
from graywave.flows.job_runs import IMAGES_LABEL
from graywave.flows.names import REPROCESS_FAILURES_ARTIFACT
from graywave.service import Graywave
from graywave.service.images import ReprocessReport


def _label_the_count(count: int) -> None:
    run_id = flow_run.id
    if run_id is None:
        return
    with get_client(sync_client=True) as client:
        if IMAGES_LABEL not in client.read_flow_run(UUID(run_id)).labels:
            client.update_flow_run_labels(UUID(run_id), {IMAGES_LABEL: count})


def _reprocess_run_name() -> str:
    return f"reprocess-{flow_run.parameters.get('user_id') or 'every-user'}"


@flow(name="graywave-reprocess", flow_run_name=_reprocess_run_name)
@failing_with_the_reason
def reprocess_flow(user_id: str | None = None) -> ReprocessReport:
    """Reprocess every handled image of ``user_id`` (None: of every user) from its original."""
    settings = Settings()
    logger = get_run_logger()
    with Graywave(settings) as graywave:
        entries = graywave.images.entries(settings.today(), user_id)
        _label_the_count(sum(entry.status != "pending" for entry in entries))  # as the API counts them
        report = graywave.images.reprocess(entries, progress=lambda so_far: logger.info(so_far.line()))
    create_table_artifact(
        [asdict(failure) for failure in report.failed],
        key=REPROCESS_FAILURES_ARTIFACT,
        description=f"Images of {user_id or 'every user'} that could not be reprocessed; they keep their record.",
    )
    create_markdown_artifact(
        f"# Reprocessing of {user_id or 'every user'}\n\n{report.line()}.\n",
        key="reprocess-summary",
        description="What the reprocessing did.",
    )
    logger.info(report.line())
    return report
