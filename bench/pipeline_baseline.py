"""The hand-written baselines of ``bench.pipeline``: the same activities, no pipeline engine.

Kept in a module (not ``__main__``): the Temporal sandbox refuses workflows defined in a script.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.pipeline_steps import PipelineActivities
    from core.pipelines.contracts import EventSeqs, StepCall, StepContext, StepOutput


class BaselineInput(BaseModel):
    tenant_id: str
    steps: int
    parallel: bool = False


def _call(inp: BaselineInput, index: int, workflow_id: str) -> StepCall:
    return StepCall(
        tenant_id=inp.tenant_id,
        workflow_id=workflow_id,
        step={"id": f"s{index}", "type": "transform", "expression": "inputs.x"},
        idempotency_key=f"{workflow_id}:s{index}",
        context=StepContext(inputs={"x": index}),
        events=EventSeqs(started=2 * index + 1, completed=2 * index + 2),
    )


@workflow.defn(name="BenchBaseline")
class BaselineWorkflow:
    """``steps`` calls of ``pipeline_transform``, in sequence or all at once."""

    @workflow.run
    async def run(self, inp: BaselineInput) -> int:
        wid = workflow.info().workflow_id
        options = {
            "start_to_close_timeout": timedelta(seconds=300),
            "retry_policy": RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1)),
        }
        if inp.parallel:
            outs: list[StepOutput] = list(
                await asyncio.gather(
                    *(
                        workflow.execute_activity_method(
                            PipelineActivities.pipeline_transform, _call(inp, i, wid), **options
                        )
                        for i in range(inp.steps)
                    )
                )
            )
            return len(outs)
        for i in range(inp.steps):
            await workflow.execute_activity_method(
                PipelineActivities.pipeline_transform, _call(inp, i, wid), **options
            )
        return inp.steps
