"""Activities of pipeline ``connector`` steps: plan a step, run its action (or its declared
undo) once under the step's idempotency key, and record the outcome.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity

from activities.connector_base import ConnectorActivitiesBase, connector_failure, fatal
from activities.runs import require_own_workflow
from connectors import registry
from connectors.base import Connector, ConnectorError
from connectors.store import ConnectionRepository
from core.connector_contracts import ConnectorCall, ConnectorPlan, PlanInput
from core.errors import NexusError
from core.pipelines import templating
from core.pipelines.contracts import StepCall, StepOutput
from core.pipelines.definition import ConnectorStep
from core.pipelines.repository import EffectRepository


class ConnectorActionActivities(ConnectorActivitiesBase):
    """The pipeline ``connector`` step activities (``ConnectorActivities`` registers them)."""

    @activity.defn(name="connector_plan")
    async def connector_plan(self, inp: PlanInput) -> ConnectorPlan:
        """The connection's type, whether it blocks, and the action's declared compensation."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        async with self.sessions() as session:
            try:
                row = await ConnectionRepository(session, self.cipher).get(inp.tenant_id, inp.connection)
            except NexusError as exc:
                raise fatal(exc.detail, "BadInput") from None
        try:
            cls = registry.get(row.type)
        except ConnectorError as exc:
            raise connector_failure(exc) from None
        spec = cls.actions.get(inp.action)
        if spec is None:
            raise fatal(f"connector {row.type!r} has no action {inp.action!r}", "BadInput")
        return ConnectorPlan(
            connection_id=row.id, type=row.type, blocking=cls.blocking, compensation=spec.compensation
        )

    async def _action_prepare(self, call: ConnectorCall) -> tuple[StepCall, dict[str, Any] | None, Any]:
        """(step call, recorded response or None, (connection id, action, payload) to run)."""
        require_own_workflow(call.workflow_id, call.tenant_id)
        try:
            step = ConnectorStep.model_validate(call.step)
        except ValueError:
            raise fatal("connector_action needs a connector step", "BadInput") from None
        sc = StepCall(
            tenant_id=call.tenant_id,
            workflow_id=call.workflow_id,
            step=call.step,
            idempotency_key=call.idempotency_key,
            context=call.context,
            events=call.events,
        )
        await self.pipelines.started(sc)
        async with self.sessions() as session:
            effects = EffectRepository(session)
            recorded = await effects.find(call.tenant_id, call.idempotency_key)
            if recorded is not None:
                return sc, dict(recorded.response), None
            if call.undo_of is not None:
                forward_key = call.idempotency_key.replace(":comp:", ":", 1)
                forward = await effects.find(call.tenant_id, forward_key)
                undo = (forward.response or {}).get("undo") if forward is not None else None
                if not undo:
                    return sc, None, ("", "", {"nothing": True})
                return sc, None, (forward.response["connection_id"], undo["action"], undo["input"])  # type: ignore[union-attr]
        scope = await self.pipelines.context(call.tenant_id, call.context)
        try:
            payload = templating.render_value(step.input, scope)
        except templating.TemplateFailed as exc:
            raise fatal(str(exc), "TemplateFailed") from None
        return sc, None, (step.connection, step.action, payload)

    async def _action_record(
        self, sc: StepCall, connection_id: str, action: str, output: dict[str, Any], undo: Any
    ) -> StepOutput:
        response = {"connection_id": connection_id, "action": action, "output": output, "undo": undo}

        async def record(session: AsyncSession) -> Any:
            await EffectRepository(session).record(
                sc.tenant_id, sc.workflow_id, sc.idempotency_key, 200, response
            )
            return output

        return await self.pipelines.finished(sc, record)

    async def _replay(self, sc: StepCall, recorded: dict[str, Any]) -> StepOutput:
        output = recorded.get("output")

        async def replay(_: AsyncSession) -> Any:
            return output

        return await self.pipelines.finished(sc, replay)

    @activity.defn(name="connector_action")
    async def connector_action(self, call: ConnectorCall) -> StepOutput:
        """A pipeline ``connector`` step (or its declared undo), recorded once under its key."""
        sc, recorded, todo = await self._action_prepare(call)
        if recorded is not None:
            return await self._replay(sc, recorded)
        conn_ref, action, payload = todo
        if not action:
            return await self._action_record(sc, "", "", {"undone": False, "reason": "nothing to undo"}, None)
        row, credentials = await self._connection(call.tenant_id, conn_ref)
        connector = self._connector(row, credentials)
        try:
            output = await connector.run_action(action, payload, call.idempotency_key)
            undo = _undo(connector, action, payload, output)
        except ConnectorError as exc:
            raise connector_failure(exc) from None
        return await self._action_record(sc, row.id, action, output, undo)

    @activity.defn(name="connector_action_blocking")
    def connector_action_blocking(self, call: ConnectorCall) -> StepOutput:
        """``connector_action`` for blocking connectors (runs on the worker's thread pool)."""
        sc, recorded, todo = self._on_loop(self._action_prepare(call))
        if recorded is not None:
            return self._on_loop(self._replay(sc, recorded))
        conn_ref, action, payload = todo
        if not action:
            return self._on_loop(
                self._action_record(sc, "", "", {"undone": False, "reason": "nothing to undo"}, None)
            )
        row, credentials = self._on_loop(self._connection(call.tenant_id, conn_ref))
        connector = self._connector(row, credentials)
        try:
            output = connector.run_action(action, payload, call.idempotency_key)
            undo = _undo(connector, action, payload, output)
        except ConnectorError as exc:
            raise connector_failure(exc) from None
        finally:
            connector.close()
        return self._on_loop(self._action_record(sc, row.id, action, output, undo))


def _undo(connector: Connector, action: str, payload: dict[str, Any], output: dict[str, Any]) -> Any:
    spec = connector.action(action)
    undo_input = spec.undo_payload(payload, output)
    if undo_input is None or spec.compensation is None:
        return None
    return {"action": spec.compensation, "input": undo_input}
