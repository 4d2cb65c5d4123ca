"""The hand-written baseline of ``bench.orchestration``: the same model-call graph as a NEXUS run
with a supplied plan, and nothing else.

For every subtask, one ``call_llm`` per model (all subtasks and models at once), then one
``call_llm`` for the synthesis. It uses the production ``call_llm`` activity (idempotent, billed
in ``model_calls``, answer in the payload store) with the prompts the benchmark stored up front
(the same messages ``prepare_subtask`` stores), so the per-call work is the same as NexusAI's.
What it leaves out is the orchestration: no progress events, no catalog snapshot, no routing or
budget ledger, no consensus activity (it takes the first model's answer from the reference
preview), no streamed synthesis, no runs row.

Kept in a module (not ``__main__``): the Temporal sandbox refuses workflows defined in a script.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.llm import LlmActivities
    from core.orchestration.contracts import PayloadRef, Plan
    from core.orchestration.steps import CallLlmInput, CallLlmResult
    from core.orchestration.synthesis import synthesis_messages
    from core.providers import Message
    from workflows.orchestration_calls import LLM_HEARTBEAT, LLM_RETRY, LLM_TIMEOUT

WORKFLOW = "BenchOrchestrationBaseline"


class BaselineInput(BaseModel):
    tenant_id: str
    task: str
    plan: Plan
    prompts: dict[str, PayloadRef]  # subtask id -> stored proposer messages
    models: list[str]
    synthesizer_model: str
    max_tokens: int


@workflow.defn(name=WORKFLOW)
class OrchestrationBaselineWorkflow:
    """``len(plan.subtasks) × len(models)`` proposer calls in parallel, then one synthesis call."""

    @workflow.run
    async def run(self, inp: BaselineInput) -> PayloadRef:
        wid = workflow.info().workflow_id

        async def call(
            key: str, model: str, ref: PayloadRef | None = None, messages: list[Message] | None = None
        ) -> CallLlmResult:
            return await workflow.execute_activity_method(
                LlmActivities.call_llm,
                CallLlmInput(
                    tenant_id=inp.tenant_id,
                    workflow_id=wid,
                    call_key=f"{wid}:{key}",
                    model=model,
                    messages_ref=ref,
                    messages=messages,
                    max_tokens=inp.max_tokens,
                ),
                start_to_close_timeout=LLM_TIMEOUT,
                heartbeat_timeout=LLM_HEARTBEAT,
                retry_policy=LLM_RETRY,
            )

        async def group(sid: str) -> list[CallLlmResult]:
            calls = (call(f"{sid}:{m}", m, ref=inp.prompts[sid]) for m in inp.models)
            return list(await asyncio.gather(*calls))

        sids = [s.id for s in inp.plan.subtasks]
        groups = await asyncio.gather(*(group(sid) for sid in sids))
        answers = {sid: results[0].answer.preview for sid, results in zip(sids, groups, strict=True)}
        models_by = {sid: [r.model for r in results] for sid, results in zip(sids, groups, strict=True)}
        raw = synthesis_messages(inp.task, inp.plan, answers, models_by)
        synth = await call(
            "synthesis", inp.synthesizer_model, messages=[Message.model_validate(m) for m in raw]
        )
        return synth.answer
