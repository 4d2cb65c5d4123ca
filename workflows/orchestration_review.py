"""Human review of a low-confidence subtask of the ``Orchestration`` workflow (an ``Approval`` child).

A base class of :class:`workflows.orchestration_subtask.SubtaskSteps`. Deterministic only.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from core.approvals.contracts import (
        WORKFLOW_NAME as APPROVAL_WORKFLOW,
    )
    from core.approvals.contracts import (
        ApprovalRequest,
        ApprovalResult,
        Decision,
        approval_workflow_id,
    )
    from core.orchestration.contracts import (
        CandidateRecord,
        ConsensusRecord,
        OrchestrationInput,
        Subtask,
        SubtaskResult,
        SubtaskStatus,
    )
    from core.orchestration.steps import OrchestrationEvent
    from workflows.orchestration_calls import short_reason
    from workflows.orchestration_progress import RunSteps

Ev = OrchestrationEvent
# Runs that reached a low-confidence subtask before this change published a placeholder
# ``approval.requested`` event and went on; newer runs wait on an ``Approval`` child (the check is
# in :meth:`workflows.orchestration_subtask.SubtaskSteps._run_subtask`).
REVIEW_PATCH = "nexus-review-approval"
APPROVAL_DECIDED = "approval.decided"
MAX_APPROVAL_ID = 100  # the approvals table's id column


def review_approval_id(workflow_id: str, subtask_id: str) -> str:
    """``{run key}-{subtask id}``: deterministic, at most 100 characters, no colons."""
    short = workflow_id.split(":", 2)[-1].replace(":", ".")
    approval_id = f"{short}-{subtask_id}"
    if len(approval_id) <= MAX_APPROVAL_ID:
        return approval_id
    digest = hashlib.sha256(short.encode()).hexdigest()[:16]
    return f"{short[:40]}.{digest}-{subtask_id}"


def review_context(subtask: Subtask, record: ConsensusRecord, candidates: list[CandidateRecord]) -> str:
    """What the reviewer sees: the instruction, the consensus answer and every candidate (previews)."""
    lines = [
        f"**Subtask `{subtask.id}`** ({subtask.capability.value}): consensus `{record.strategy}` "
        f"reached confidence {record.confidence:.2f}.",
        "",
        "### Instruction",
        "",
        subtask.instruction,
        "",
        "### Consensus answer" + (f" ({', '.join(record.winner_models)})" if record.winner_models else ""),
        "",
        record.answer.preview if record.answer else "_none_",
        "",
        "### Candidate answers",
        "",
    ]
    for c in candidates:
        text = c.answer.preview if c.ok and c.answer else f"_failed: {c.error or 'no answer'}_"
        lines.append(f"- `{c.model}`: {' '.join(text.split())}")
    return "\n".join(lines)


class ReviewSteps(RunSteps):
    """Human review of a subtask's consensus answer (see :meth:`_review`)."""

    async def _review(
        self, inp: OrchestrationInput, subtask: Subtask, result: SubtaskResult
    ) -> SubtaskResult:
        """Wait on an ``Approval`` child: approve keeps the consensus answer, anything else (reject,
        changes requested, the due time passing) fails the subtask and drops its answer."""
        record = result.consensus
        assert record is not None
        sid = subtask.id
        approval_id = review_approval_id(self._wid, sid)
        request = ApprovalRequest(
            tenant_id=inp.tenant_id,
            approval_id=approval_id,
            title=f"Review NEXUS subtask {sid} (confidence {record.confidence:.2f})",
            context_markdown=review_context(subtask, record, result.candidates)[:100_000],
            assignees=inp.review_assignees,
            due_in_s=inp.review_due_in_s,
            on_timeout="reject",
            parent_workflow_id=self._wid,
            requested_by=inp.created_by,
        )
        handle = await workflow.start_child_workflow(
            APPROVAL_WORKFLOW,
            request,
            id=approval_workflow_id(inp.tenant_id, approval_id),
            result_type=ApprovalResult,
        )
        requested = {
            "subtask_id": sid,
            "confidence": record.confidence,
            "approval_id": approval_id,
            "approval_url": f"/v1/approvals/{quote(approval_id, safe='')}",
        }
        await self._event(inp, Ev.approval_requested, requested)
        decided: ApprovalResult | None = None
        try:
            decided = await handle
        except ChildWorkflowError as err:
            if is_cancelled_exception(err):
                raise
            note = f"human review failed: {short_reason(err)}"
        approved = decided is not None and decided.outcome is Decision.approve
        actor = decided.decision.actor if decided and decided.decision else None
        if decided is not None:
            verdict = "approved" if approved else (decided.outcome or decided.status).value
            note = f"human review: {verdict} by {actor or 'timeout'}"
        data: dict[str, Any] = {
            "subtask_id": sid,
            "approval_id": approval_id,
            "status": decided.status.value if decided else "failed",
            "outcome": decided.outcome.value if decided and decided.outcome else None,
            "actor": actor,
        }
        await self._event(inp, APPROVAL_DECIDED, data)
        reasons = f"{record.reasons} | {note}" if record.reasons else note
        if approved:
            update: dict[str, Any] = {"reasons": reasons}
            return result.model_copy(update={"consensus": record.model_copy(update=update)})
        self._answers.pop(sid, None)  # dependents and the synthesis never see a rejected answer
        failed = record.model_copy(update={"reasons": reasons, "error": note})
        return result.model_copy(update={"status": SubtaskStatus.failed, "consensus": failed})
