"""A deliberately non-deterministic change of the Pipeline workflow (must fail replay).

It runs the steps before announcing ``run.started``: the first command of a recorded history
is the ``pipeline_progress`` activity, so replay meets a different activity type.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.pipelines.contracts import PipelineEvent, PipelineInput, PipelineResult, PipelineStatus
    from workflows.pipeline import PipelineWorkflow


@workflow.defn(name="Pipeline")
class StepsFirstPipelineWorkflow(PipelineWorkflow):
    """Steps first, start event after: a breaking change to the command sequence."""

    @workflow.run
    async def run(self, inp: PipelineInput) -> PipelineResult:
        self.inp = inp
        assert inp.definition is not None
        await self.sequence(inp.definition.steps)
        await self.progress(PipelineEvent.started, pipeline=inp.pipeline_id)
        return PipelineResult(
            status=PipelineStatus.completed, pipeline_id=inp.pipeline_id, version=inp.version
        )
