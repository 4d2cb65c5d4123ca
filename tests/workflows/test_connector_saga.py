"""Pipeline ``connector`` steps and their declared compensations, against the vendor simulators.

A pipeline creates a Salesforce case and a ServiceNow incident, then fails (an http step to the
cloud metadata address is refused). Each connector action declares its undo (close_case,
cancel_incident), registered on the saga before the action ran: both run, in reverse order, and
each exactly once — checked in the simulators' own state and request logs. A lost response on
the incident create (committed by ServiceNow, answered 503) is retried under the same
idempotency key and still leaves one incident.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowFailureError

from connectors.salesforce import IDEMPOTENCY_FIELD
from connectors.simulators.salesforce import SalesforceSimulator
from connectors.simulators.serve import RunningSimulator
from connectors.simulators.servicenow import ServiceNowSimulator
from connectors.store import ConnectionRepository, CredentialCipher
from core.config import Settings
from core.db.pipeline_models import PipelineEffect
from core.pipelines.contracts import PipelineResult
from tests import connector_support as support
from tests.connector_support import SF_SECRET, SN_PASSWORD
from tests.workflows.pipeline_support import new_wid, run_input, run_rows
from workers.main import build_worker
from workflows.pipeline import PipelineWorkflow

servicenow_sim = support.servicenow_sim
salesforce_sim = support.salesforce_sim
conn_settings = support.conn_settings


@pytest_asyncio.fixture
async def connections(
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
    conn_settings: Settings,
    servicenow_sim: RunningSimulator,
    salesforce_sim: RunningSimulator,
) -> str:
    async with sessions() as session, session.begin():
        repo = ConnectionRepository(session, CredentialCipher.from_settings(conn_settings))
        await repo.create(
            tenant_id=tenant,
            name="sfdc",
            type_="salesforce",
            config={"login_url": salesforce_sim.base_url},
            credentials={"client_id": "nexus-client", "client_secret": SF_SECRET},
            actor="test",
        )
        await repo.create(
            tenant_id=tenant,
            name="snow",
            type_="servicenow",
            config={"instance_url": servicenow_sim.base_url},
            credentials={"username": "integration", "password": SN_PASSWORD},
            actor="test",
        )
    return tenant


@pytest_asyncio.fixture
async def saga_worker(
    temporal_client: Client,
    conn_settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    redis_client: Redis,
    task_queue: str,
) -> AsyncIterator[str]:
    async with build_worker(temporal_client, conn_settings, sessions, redis_client, task_queue):
        yield task_queue


def saga_pipeline(fail: bool) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {
            "id": "case",
            "type": "connector",
            "connection": "sfdc",
            "action": "create_case",
            "input": {"subject": "Outage {{ inputs.ticket }}"},
        },
        {
            "id": "incident",
            "type": "connector",
            "connection": "snow",
            "action": "create_incident",
            "input": {"short_description": "Outage {{ inputs.ticket }} ({{ steps.case.output.id }})"},
            "retry": {"initial_interval_s": 0.1, "max_attempts": 5},
        },
    ]
    if fail:
        steps.append({"id": "boom", "type": "http", "method": "GET", "url": "http://169.254.169.254/latest"})
    return {"name": "saga", "inputs": {"ticket": {"type": "string"}}, "steps": steps}


async def test_failure_compensates_case_and_incident_exactly_once(
    temporal_client: Client,
    connections: str,
    saga_worker: str,
    sessions: async_sessionmaker[AsyncSession],
    servicenow_sim: RunningSimulator,
    salesforce_sim: RunningSimulator,
) -> None:
    tenant = connections
    sf: SalesforceSimulator = salesforce_sim.app
    sn: ServiceNowSimulator = servicenow_sim.app
    sn.faults.lose_next_write_response(1)  # the incident create commits, its answer is lost
    wid = new_wid(tenant)
    with pytest.raises(WorkflowFailureError):
        await temporal_client.execute_workflow(
            PipelineWorkflow.run,
            run_input(tenant, saga_pipeline(fail=True), {"ticket": "T-1"}),
            id=wid,
            task_queue=saga_worker,
        )
    run, events = await run_rows(sessions, wid)
    assert run is not None
    assert run.status == "compensated"
    result = run.result or {}
    assert result["failed_step"] == "boom"
    assert [(c["step_id"], c["ok"]) for c in result["compensations"]] == [("incident", True), ("case", True)]
    case_id = result["steps"]["case"]["value"]["id"]
    sys_id = result["steps"]["incident"]["value"]["sys_id"]

    # one case and one incident were created (the lost response was retried under its key) ...
    assert sf.count("Case", **{IDEMPOTENCY_FIELD: f"{wid}:case"}) == 1
    assert sn.count("incident", correlation_id=f"{wid}:incident") == 1
    # ... and each was undone exactly once
    assert sf.objects["Case"][case_id]["Status"] == "Closed"
    assert sn.tables["incident"][sys_id]["state"] == "8"
    case_writes = [p for m, p in sf.request_log if m == "PATCH" and p.endswith(f"/Case/{case_id}")]
    incident_writes = [p for m, p in sn.request_log if m == "PATCH" and p.endswith(f"/incident/{sys_id}")]
    assert len(case_writes) == 1
    assert len(incident_writes) == 1

    async with sessions() as s:
        keys = sorted(
            (await s.execute(select(PipelineEffect.idempotency_key).where(PipelineEffect.workflow_id == wid)))
            .scalars()
            .all()
        )
    assert keys == sorted([f"{wid}:case", f"{wid}:incident", f"{wid}:comp:case", f"{wid}:comp:incident"])
    types = [(e.type, e.data.get("step")) for e in events]
    assert ("compensation.completed", "incident") in types
    assert ("compensation.completed", "case") in types


async def test_success_leaves_the_records_and_no_undo(
    temporal_client: Client,
    connections: str,
    saga_worker: str,
    salesforce_sim: RunningSimulator,
    servicenow_sim: RunningSimulator,
) -> None:
    tenant = connections
    wid = new_wid(tenant)
    result: PipelineResult = await temporal_client.execute_workflow(
        PipelineWorkflow.run,
        run_input(tenant, saga_pipeline(fail=False), {"ticket": "T-2"}),
        id=wid,
        task_queue=saga_worker,
        result_type=PipelineResult,
    )
    assert result.status == "completed", result
    sf: SalesforceSimulator = salesforce_sim.app
    sn: ServiceNowSimulator = servicenow_sim.app
    case_id = result.steps["case"].value["id"]
    assert sf.objects["Case"][case_id]["Status"] != "Closed"
    assert sn.tables["incident"][result.steps["incident"].value["sys_id"]]["state"] != "8"
    # the incident's description saw the case step's output through templates
    assert case_id in sn.tables["incident"][result.steps["incident"].value["sys_id"]]["short_description"]
