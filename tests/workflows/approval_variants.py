"""A deliberately non-deterministic change of the Approval workflow (must fail replay).

It announces ``run.started`` before recording the approval row: the first command of a
recorded history is the ``record_approval`` activity, so replay meets a different activity type.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.approvals.contracts import RUN_KIND, ApprovalRequest, ApprovalResult
    from core.contracts import EventType
    from workflows.approval import ApprovalWorkflow


@workflow.defn(name="Approval")
class AnnounceFirstApprovalWorkflow(ApprovalWorkflow):
    """Start event first, row after: a breaking change to the command sequence."""

    @workflow.run
    async def run(self, req: ApprovalRequest) -> ApprovalResult:
        await self._event(EventType.started, {"kind": RUN_KIND, "title": req.title})
        return await self._run(req)
