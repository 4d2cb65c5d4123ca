"""Activities every run kind shares: progress events and closing the ``runs`` row."""

from __future__ import annotations

from decimal import Decimal

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core import events
from core.contracts import FinishRunInput, PublishEventInput
from core.runs import RunRepository


def require_own_workflow(workflow_id: str, tenant_id: str) -> None:
    """Activities write only for the workflow that runs them, and only for its tenant."""
    info = activity.info()
    if workflow_id != info.workflow_id or f":{tenant_id}:" not in f":{workflow_id}:":
        raise ApplicationError(
            "workflow id does not match the calling workflow", non_retryable=True, type="BadInput"
        )


class RunActivities:
    """``publish_run_event`` and ``finish_run``, bound to the worker's clients."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], redis: Redis) -> None:
        self._sessions = sessions
        self._redis = redis

    @activity.defn(name="publish_run_event")
    async def publish_run_event(self, inp: PublishEventInput) -> int:
        """Store and publish one progress event under the workflow-assigned seq."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
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
        require_own_workflow(inp.workflow_id, inp.tenant_id)
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
