"""Probe activities: dependency checks, sample recording, run events and run completion."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.runs import RunActivities, require_own_workflow
from core import probe
from core.config import Settings
from core.contracts import (
    CheckInput,
    HttpCheckInput,
    ProbeSample,
    RecordSamplesInput,
    RecordSamplesResult,
)


class ProbeActivities(RunActivities):
    """Activities of the ``Probe`` workflow, bound to the worker's clients.

    ``publish_run_event`` and ``finish_run`` are inherited from :class:`RunActivities` (their
    registered names are unchanged; register them once per worker).
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], redis: Redis, settings: Settings) -> None:
        super().__init__(sessions, redis)
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
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        async with self._sessions() as session, session.begin():
            inserted = await probe.record_samples(
                session,
                tenant_id=inp.tenant_id,
                workflow_id=inp.workflow_id,
                activity_id=activity.info().activity_id,
                samples=inp.samples,
            )
        return RecordSamplesResult(inserted=inserted)
