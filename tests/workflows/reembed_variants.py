"""A deliberately non-deterministic change of ReembedKnowledgeBase (must fail replay).

It switches the model before re-embedding anything: in a recorded history the command after the
``run.started`` event is ``rag_reembed_batch``, so replay meets ``rag_reembed_switch`` instead.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.rag import RagActivities
    from activities.rag_reembed import ReembedActivities
    from core.contracts import EventType, PublishEventInput
    from core.rag.contracts import ReembedInput, ReembedResult, ReembedSwitchInput

STEP = timedelta(minutes=5)


@workflow.defn(name="ReembedKnowledgeBase")
class SwitchFirstReembedWorkflow:
    """ReembedKnowledgeBase that flips the model first: a breaking change to the command sequence."""

    @workflow.run
    async def run(self, inp: ReembedInput) -> ReembedResult:
        wid = workflow.info().workflow_id
        await workflow.execute_activity_method(
            RagActivities.publish_run_event,
            PublishEventInput(
                tenant_id=inp.tenant_id, workflow_id=wid, seq=1, type=EventType.started, data={}
            ),
            start_to_close_timeout=STEP,
        )
        await workflow.execute_activity_method(
            ReembedActivities.rag_reembed_switch,
            ReembedSwitchInput(
                tenant_id=inp.tenant_id, workflow_id=wid, kb_id=inp.kb_id, target_model=inp.target_model
            ),
            start_to_close_timeout=STEP,
        )
        return ReembedResult(kb_id=inp.kb_id, embedding_model=inp.target_model, reembedded=0)
