"""``graywave serve``: the wave deployments at the two daily upload bursts, the analytics after the
evening wave, the lake's nightly maintenance, and the reprocessing jobs that the API starts."""

from __future__ import annotations

from typing import Any, cast

from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from graywave.config import Settings
from graywave.flows.analytics import analytics_flow
from graywave.flows.maintenance import lake_maintenance_flow
from graywave.flows.names import REPROCESS_JOB
from graywave.flows.reprocess import reprocess_flow
from graywave.flows.wave import wave_flow_for

BURSTS = {"morning": 10, "evening": 17}
"""Wave name -> hour of the upload burst it follows, in GRAYWAVE_TIMEZONE."""
MAINTENANCE_CRON = "30 3 * * *"
"""The lake's maintenance: at night, hours from either burst, in GRAYWAVE_TIMEZONE."""


def _deployment(flow: Flow[..., Any], **options: Any) -> RunnerDeployment:
    # ``to_deployment`` is sync-compatible: called from sync code it returns the deployment itself.
    return cast(RunnerDeployment, flow.to_deployment(**options))


def wave_deployments(settings: Settings) -> list[RunnerDeployment]:
    """One deployment per burst; each runs at most once at a time and queues a run that would overlap."""
    return [
        _deployment(
            wave_flow_for(settings),
            name=f"wave-{name}",
            schedules=[Cron(f"0 {hour} * * *", timezone=settings.timezone)],
            parameters={
                "name": name,
                "settle_s": settings.wave_settle_s,
                "max_duration_s": settings.wave_max_duration_s,
            },
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
            description=(
                f"The {name} wave: uploads of the day and the day before, from {hour}:00 {settings.timezone}"
                f" until none has arrived for {settings.wave_settle_s:g} s."
            ),
            tags=["graywave"],
        )
        for name, hour in BURSTS.items()
    ]


WAVE_DAY_TEMPLATE = "{% for tag in flow_run.tags if tag.startswith('day:') %}{{ tag[4:] }}{% endfor %}"
"""The day of the flow run that triggered an action, rendered by Prefect's server from that run's
``day:`` tag (every wave run tags itself with the day it processed, ``flows.wave``)."""


def analytics_deployment() -> RunnerDeployment:
    """The daily analytics, run each time the evening wave's flow run completes, for that wave's day
    (not the day the analytics start on: an evening wave that ends past midnight still has its
    day's analytics)."""
    return _deployment(
        analytics_flow,
        name="analytics-daily",
        triggers=[
            DeploymentEventTrigger(
                expect={"prefect.flow-run.Completed"},
                match_related={"prefect.resource.role": "deployment", "prefect.resource.name": "wave-evening"},
                parameters={"day": WAVE_DAY_TEMPLATE},
            )
        ],
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        description="User histograms, the median and similar users of the day, after the evening wave.",
        tags=["graywave"],
    )


def reprocess_deployment() -> RunnerDeployment:
    """Reprocessing of many images, run when the API asks for it (``flows.names.REPROCESS_JOB``)."""
    return _deployment(
        reprocess_flow,
        name=REPROCESS_JOB.split("/")[1],
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        description="Every handled image of a user (or of all) processed again from its original; the API starts it.",
        tags=["graywave"],
    )


def maintenance_deployment(settings: Settings) -> RunnerDeployment:
    """The lake's compaction, Z-order, checkpoints and vacuum, nightly (``flows.maintenance``)."""
    return _deployment(
        lake_maintenance_flow,
        name="lake-maintenance",
        schedules=[Cron(MAINTENANCE_CRON, timezone=settings.timezone)],
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        description="Compacts the recent days of the lake, Z-orders images by user, checkpoints, vacuums.",
        tags=["graywave"],
    )


def deployments(settings: Settings) -> list[RunnerDeployment]:
    return [
        *wave_deployments(settings),
        analytics_deployment(),
        maintenance_deployment(settings),
        reprocess_deployment(),
    ]
