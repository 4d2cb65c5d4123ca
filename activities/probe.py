"""Probe activities: dependency checks, sample recording, run events and run completion."""

from __future__ import annotations

from decimal import Decimal

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core import events, probe
from core.config import Settings
from core.contracts import (
    CheckInput,
    FinishRunInput,
    HttpCheckInput,
    ProbeSample,
    PublishEventInput,
    RecordSamplesInput,
    RecordSamplesResult,
)
from core.runs import RunRepository


def _require_own_workflow(workflow_id: str, tenant_id: str) -> None:
    """Activities write only for the workflow that runs them, and only for its tenant."""
    info = activity.info()
    if workflow_id != info.workflow_id or f":{tenant_id}:" not in f":{workflow_id}:":
        raise ApplicationError(
            "workflow id does not match the calling workflow", non_retryable=True, type="BadInput"
        )


class ProbeActivities:
    """Activities of the ``Probe`` workflow, bound to the worker's clients."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], redis: Redis, settings: Settings) -> None:
        self._sessions = sessions
        self._redis = redis
        self._settings = settings

    @activity.defn(name="probe_postgres")
    async def probe_postgres(self, inp: CheckInput) -> ProbeSample:
        """``SELECT 1`` against the platform database."""
        async with self._sessions() as session:
            return await probe.check_postgres(session, inp.timeout_s)

    @activity.defn(name="probe_redis")
    async def probe_redis(self, inp: CheckInput) -> ProbeSample:
        """``PING`` the platform Redis/Valkey."""
        return await probe.check_redis(self._redis, inp.timeout_s)

    @activity.defn(name="probe_http")
    async def probe_http(self, inp: HttpCheckInput) -> ProbeSample:
        """``GET`` one operator-configured HTTP endpoint (no proxies from the environment)."""
        async with httpx.AsyncClient(trust_env=False) as client:
            return await probe.check_http(client, inp.target, inp.timeout_s)

    @activity.defn(name="record_probe_samples")
    async def record_probe_samples(self, inp: RecordSamplesInput) -> RecordSamplesResult:
        """Store samples keyed by ``workflow_id:activity_id:target`` (a retry inserts nothing)."""
        _require_own_workflow(inp.workflow_id, inp.tenant_id)
        async with self._sessions() as session, session.begin():
            inserted = await probe.record_samples(
                session,
                tenant_id=inp.tenant_id,
                workflow_id=inp.workflow_id,
                activity_id=activity.info().activity_id,
                samples=inp.samples,
            )
        return RecordSamplesResult(inserted=inserted)

    @activity.defn(name="publish_run_event")
    async def publish_run_event(self, inp: PublishEventInput) -> int:
        """Store and publish one progress event under the workflow-assigned seq."""
        _require_own_workflow(inp.workflow_id, inp.tenant_id)
        async with self._sessions() as session:
            return await events.publish(
                session,
                self._redis,
                tenant_id=inp.tenant_id,
                workflow_id=inp.workflow_id,
                type=inp.type,
                data=inp.data,
                seq=inp.seq,
            )

    @activity.defn(name="finish_run")
    async def finish_run(self, inp: FinishRunInput) -> None:
        """Write the run's final state and its terminal event in one transaction, then publish it."""
        _require_own_workflow(inp.workflow_id, inp.tenant_id)
        event: events.Event | None = None
        async with self._sessions() as session, session.begin():
            await RunRepository.from_session(session).finish(
                tenant_id=inp.tenant_id,
                workflow_id=inp.workflow_id,
                kind=inp.kind,
                status=inp.status,
                result=inp.result,
                error=inp.error,
                cost_usd=Decimal(str(inp.cost_usd)),
                created_by=inp.created_by,
                run_id=inp.run_id or activity.info().workflow_run_id,
            )
            if inp.terminal_event is not None:
                ev = inp.terminal_event
                event = await events.store(
                    session,
                    tenant_id=inp.tenant_id,
                    workflow_id=inp.workflow_id,
                    type=ev.type,
                    data=ev.data,
                    seq=ev.seq,
                )
        if event is not None:
            await events.announce(self._redis, inp.workflow_id, event)
