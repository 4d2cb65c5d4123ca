"""A deliberately non-deterministic change of the Pipeline workflow's connector steps (must fail
replay of ``pipeline_connector_v1.json``).

It runs the connector action without first asking ``connector_plan`` for the connection's type
and the action's compensation: in the recorded history the step's first command is that
activity, so replay meets ``connector_action`` instead.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.connectors import ConnectorActivities
    from core.connector_contracts import ConnectorCall
    from core.pipelines.contracts import PipelineInput, PipelineResult, StepContext, StepOutput
    from core.pipelines.definition import ConnectorStep
    from workflows.pipeline import PipelineWorkflow


@workflow.defn(name="Pipeline")
class UnplannedConnectorPipelineWorkflow(PipelineWorkflow):
    """Connector steps without ``connector_plan``: a breaking change to the command sequence."""

    @workflow.run
    async def run(self, inp: PipelineInput) -> PipelineResult:
        return await super().run(inp)

    async def connector(
        self, step: ConnectorStep, key: str, ctx: StepContext, comp_of: str | None
    ) -> StepOutput:
        out: StepOutput = await workflow.execute_activity_method(
            ConnectorActivities.connector_action,
            ConnectorCall(
                tenant_id=self.inp.tenant_id,
                workflow_id=self.wid,
                step=step.model_dump(mode="json"),
                idempotency_key=key,
                context=ctx,
            ),
            start_to_close_timeout=timedelta(seconds=step.timeout_s),
        )
        return out
