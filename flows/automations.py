"""Prefect automations that graywave installs on its Prefect server: zombie-run detection.

A flow run whose process dies without a word (``kill -9``, the machine or container gone) stayed
``Running`` in the UI forever, and no alert fired. Prefect's answer (its guide "detect zombie
flows", Prefect >= 3.1.8): each flow run emits a ``prefect.flow-run.heartbeat`` event every
``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds, and a proactive automation marks a run ``Crashed``
when, after a heartbeat, neither another heartbeat nor a final state has come within two heartbeat
periods. graywave's automation also starts that window when a run turns ``Running``: Prefect's
starts it at a heartbeat only, under which a run whose process dies before its first heartbeat
reaches the server (a machine lost as the run starts; on a loaded machine, seconds) stays
``Running`` for good.
The ``Crashed`` state then fires the failed-runs alert of the runbook
(``docs/operations/graywave-failed-runs.yaml``), like any crash.

The automation covers the runs tagged ``graywave``: the runs of the deployments that
``graywave serve`` runs (and the jobs the API starts), and the waves of ``graywave wave run``, all
of which beat at graywave's heartbeat (``heartbeat_s``). Other runs on the same server (a manual
``graywave analytics run`` beats at Prefect's default, 180 s) are not judged by its clock.

``graywave server start`` and ``graywave serve`` install it; installing again updates it in place
(one automation, whatever the restarts).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.events.schemas.automations import Automation, AutomationCore

HEARTBEAT_SETTING = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
DEFAULT_HEARTBEAT_S = 60
"""graywave's heartbeat period when ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` is not set (Prefect's own
default is 180 s, and 30 s its least): a killed run is marked ``Crashed`` within two periods."""
MISSED_HEARTBEATS = 2
"""A run is a zombie once this many heartbeat periods have passed without a heartbeat or a final state."""
RUN_TAG = "graywave"
"""The tag of the runs the zombie detection judges (the deployments' tag)."""
ZOMBIE_AUTOMATION = "graywave: crash runs whose heartbeats stopped"


def heartbeat_s() -> int:
    """The heartbeat period of graywave's flow runs: ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, or
    ``DEFAULT_HEARTBEAT_S``."""
    configured = os.environ.get(HEARTBEAT_SETTING, "").strip()
    return int(configured) if configured else DEFAULT_HEARTBEAT_S


def use_graywave_heartbeat() -> int:
    """Make this process's flow runs (and the processes it starts) beat at ``heartbeat_s()``; call it
    before Prefect is imported. Returns the period."""
    period = heartbeat_s()
    os.environ[HEARTBEAT_SETTING] = str(period)
    return period


def zombie_automation(heartbeat_s: int) -> AutomationCore:
    """Prefect's zombie-run automation for runs tagged ``graywave`` that beat every ``heartbeat_s``."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    within = timedelta(seconds=MISSED_HEARTBEATS * heartbeat_s)
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description=(
            f"A graywave run that sent no heartbeat for {within.total_seconds():.0f} s ({MISSED_HEARTBEATS} periods of"
            f" {heartbeat_s} s) since its last one or since it turned Running, and did not end: its process is gone"
            " (killed, machine lost). Installed by graywave."
        ),
        enabled=True,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat", "prefect.flow-run.Running"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{RUN_TAG}"}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"Its heartbeats stopped: none for {within.total_seconds():.0f} s (its process is gone)",
            )
        ],
    )


def install_zombie_detection(client: SyncPrefectClient, heartbeat_s: int) -> str:
    """Create the zombie automation on the client's server, or bring the one there up to date;
    ``created``, ``updated`` or ``unchanged``. Copies, left by an older install or created by another
    install at the same moment (``graywave serve`` and ``graywave server start``), are removed."""
    wanted = zombie_automation(heartbeat_s)
    found = client.read_automations_by_name(ZOMBIE_AUTOMATION)
    if not found:
        client.create_automation(wanted)
        _keep_one(client, client.read_automations_by_name(ZOMBIE_AUTOMATION))
        return "created"
    kept = _keep_one(client, found)
    # Compared as models, not as JSON: the trigger's event names are sets, whose JSON order depends
    # on the order the server listed them in and on the process's string hashing.
    if (
        type(wanted).model_validate(kept.model_dump(include=set(type(wanted).model_fields))) == wanted
        and len(found) == 1
    ):
        return "unchanged"
    client.update_automation(kept.id, wanted)
    return "updated"


def _keep_one(client: SyncPrefectClient, found: list[Automation]) -> Automation:
    """The copy with the least id, the others deleted: every install, at the same moment too, keeps the same one."""
    from prefect.exceptions import PrefectHTTPStatusError

    kept, *others = sorted(found, key=lambda automation: str(automation.id))
    for other in others:
        try:
            client.delete_automation(other.id)
        except PrefectHTTPStatusError as error:  # another install deleted it first
            if error.response.status_code != 404:
                raise
    return kept
