"""The ``Approval`` workflow: wait durably for a human decision, escalate, time out.

Started by the API (standalone approvals) or as a child of any run (pipeline approval steps,
low-confidence NEXUS results) with id ``approval:{tenant}:{approval_id}``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.approvals import ApprovalActivities
    from core.approvals.contracts import (
        RUN_KIND,
        ApprovalRequest,
        ApprovalResult,
        ApprovalState,
        ApprovalStatus,
        DecideInput,
        Decision,
        DecisionRecord,
        EscalateApprovalInput,
        FinishApprovalInput,
        NotifyInput,
        RecordApprovalInput,
    )
    from core.approvals.rules import DecisionRefused, check_decision, widen
    from core.contracts import EventType, FinishRunInput, PublishEventInput, RunStatus

WRITE_RETRY = RetryPolicy(
    maximum_attempts=10,
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=["BadInput"],
)
NOTIFY_RETRY = RetryPolicy(
    maximum_attempts=6,
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=60),
    non_retryable_error_types=["BadInput", "NotifyConfigError"],
)
WRITE_TIMEOUT = timedelta(seconds=30)

_STATUS_OF = {
    Decision.approve: ApprovalStatus.approved,
    Decision.reject: ApprovalStatus.rejected,
    Decision.request_changes: ApprovalStatus.changes_requested,
}
_TIMEOUT_OUTCOME = {"approve": Decision.approve, "reject": Decision.reject, "fail": None}
# Validator refusals → ApplicationError types the API maps to 404 / 403 / 409.
REFUSAL_TYPES = {"wrong_tenant": "WrongTenant", "not_allowed": "NotAllowed", "not_pending": "NotPending"}


@workflow.defn(name="Approval")
class ApprovalWorkflow:
    """Record the request, notify, then wait for a ``decide`` update or the due time.

    After ``escalation.after_s`` the assignees widen to ``escalation.to`` (never narrow). At the
    due time ``on_timeout`` applies: ``approve``/``reject`` end ``timed_out`` with that outcome,
    ``fail`` fails the run. A decision is applied once: a repeated ``decision_id`` returns the
    record already applied. The update returns after the row and audit event are written.
    """

    @workflow.init
    def __init__(self, req: ApprovalRequest) -> None:
        self._req = req
        self._assignees = req.assignees
        self._status = ApprovalStatus.pending
        self._escalated = False
        self._decision: DecisionRecord | None = None
        self._stored = False  # the final state is in the approvals row (updates may return)
        self._due_at: datetime | None = None
        self._seq = 0
        self._notifications: list[asyncio.Task[None]] = []

    @workflow.run
    async def run(self, req: ApprovalRequest) -> ApprovalResult:
        try:
            return await self._run(req)
        except BaseException as exc:
            if not is_cancelled_exception(exc):
                raise
            await asyncio.shield(self._cancelled())
            raise

    async def _run(self, req: ApprovalRequest) -> ApprovalResult:
        start = workflow.now()
        self._due_at = start + timedelta(seconds=req.due_in_s) if req.due_in_s else None
        await self._activity(
            ApprovalActivities.record_approval,
            RecordApprovalInput(
                request=req,
                workflow_id=self._wid,
                created_at=start.isoformat(),
                due_at=self._due_at.isoformat() if self._due_at else None,
            ),
        )
        await self._event(EventType.started, {"kind": RUN_KIND, "title": req.title})
        self._notify("created")
        timed_out = await self._wait(start)
        outcome = self._decision.decision if self._decision else None
        if timed_out:
            self._status = ApprovalStatus.timed_out
            outcome = _TIMEOUT_OUTCOME[req.on_timeout]
        await self._activity(
            ApprovalActivities.finish_approval,
            FinishApprovalInput(
                tenant_id=req.tenant_id,
                approval_id=req.approval_id,
                workflow_id=self._wid,
                status=self._status,
                decision=self._decision,
                timeout_outcome=req.on_timeout if timed_out else None,
                decided_at=workflow.now().isoformat(),
            ),
        )
        self._stored = True
        decided: dict[str, Any] = {"status": self._status.value, "timeout_outcome": None}
        if self._decision is not None:
            decided |= self._decision.model_dump(mode="json")
        if timed_out:
            decided["timeout_outcome"] = req.on_timeout
        await self._event("approval.decided", decided)
        self._notify("decided")
        await asyncio.gather(*self._notifications)
        result = ApprovalResult(
            status=self._status,
            decision=self._decision,
            escalated=self._escalated,
            outcome=outcome,
        )
        if timed_out and req.on_timeout == "fail":
            await self._finish_run(RunStatus.failed, EventType.failed, {"error": "approval timed out"})
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise ApplicationError("approval timed out", type="ApprovalTimedOut", non_retryable=True)
        await self._finish_run(RunStatus.completed, EventType.completed, result.model_dump(mode="json"))
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _wait(self, start: datetime) -> bool:
        """Wait for a decision; escalate on the way. Returns True when the due time passed."""
        esc = self._req.escalation
        escalate_at = start + timedelta(seconds=esc.after_s) if esc else None
        while self._decision is None:
            pending_escalation = escalate_at if not self._escalated else None
            deadlines = [d for d in (pending_escalation, self._due_at) if d is not None]
            if not deadlines:
                await workflow.wait_condition(lambda: self._decision is not None)
                return False
            deadline = min(deadlines)
            remaining = (deadline - workflow.now()).total_seconds()
            if remaining > 0:
                try:
                    await workflow.wait_condition(lambda: self._decision is not None, timeout=remaining)
                    return False
                except TimeoutError:
                    pass
            if pending_escalation is not None and workflow.now() >= pending_escalation:
                await self._escalate()
            elif self._due_at is not None and workflow.now() >= self._due_at:
                return True
        return False

    async def _escalate(self) -> None:
        assert self._req.escalation is not None
        self._assignees = widen(self._assignees, self._req.escalation.to)
        self._escalated = True
        await self._activity(
            ApprovalActivities.escalate_approval,
            EscalateApprovalInput(
                tenant_id=self._req.tenant_id,
                approval_id=self._req.approval_id,
                workflow_id=self._wid,
                assignees=self._assignees,
            ),
        )
        await self._event("approval.escalated", {"assignees": self._assignees.model_dump()})
        self._notify("escalated")

    async def _cancelled(self) -> None:
        """Close the row and the run as cancelled (a decision that raced the cancel wins)."""
        if not self._stored:
            self._status = ApprovalStatus.cancelled if self._decision is None else self._status
            await self._activity(
                ApprovalActivities.finish_approval,
                FinishApprovalInput(
                    tenant_id=self._req.tenant_id,
                    approval_id=self._req.approval_id,
                    workflow_id=self._wid,
                    status=self._status,
                    decision=self._decision,
                    decided_at=workflow.now().isoformat(),
                ),
            )
            self._stored = True
        await self._finish_run(RunStatus.cancelled, EventType.cancelled, {"error": "cancelled"})

    # --- handlers -------------------------------------------------------------------------

    @workflow.update(name="decide")
    async def decide(self, inp: DecideInput) -> DecisionRecord:
        """Apply a decision once; returns when the approval row and audit event are written."""
        if self._decision is None or self._decision.decision_id != inp.decision_id:
            if self._status is not ApprovalStatus.pending or self._decision is not None:
                raise ApplicationError("approval is no longer pending", type="NotPending")
            self._decision = DecisionRecord(
                decision_id=inp.decision_id,
                decision=inp.decision,
                comment=inp.comment,
                actor=inp.actor,
                at=workflow.now().isoformat(),
            )
            self._status = _STATUS_OF[inp.decision]
        record = self._decision
        await workflow.wait_condition(lambda: self._stored)
        return record

    @decide.validator
    def _validate_decide(self, inp: DecideInput) -> None:
        try:
            check_decision(self._req.tenant_id, self._assignees, inp)
        except DecisionRefused as exc:
            raise ApplicationError(exc.message, type=REFUSAL_TYPES[exc.kind], non_retryable=True) from None
        if self._decision is not None and self._decision.decision_id == inp.decision_id:
            return  # a repeated decision: the handler answers with the applied record
        if self._status is not ApprovalStatus.pending:
            raise ApplicationError("approval is no longer pending", type="NotPending", non_retryable=True)

    @workflow.query(name="state")
    def state(self) -> ApprovalState:
        """The current status, assignees (after escalation), decision and due time."""
        return ApprovalState(
            tenant_id=self._req.tenant_id,
            approval_id=self._req.approval_id,
            status=self._status,
            assignees=self._assignees,
            escalated=self._escalated,
            decision=self._decision,
            due_at=self._due_at.isoformat() if self._due_at else None,
        )

    # --- helpers --------------------------------------------------------------------------

    @property
    def _wid(self) -> str:
        return workflow.info().workflow_id

    async def _activity(self, fn: Any, arg: Any) -> Any:
        return await workflow.execute_activity_method(
            fn, arg, start_to_close_timeout=WRITE_TIMEOUT, retry_policy=WRITE_RETRY
        )

    async def _event(self, type: str, data: dict[str, Any]) -> None:
        self._seq += 1  # taken before the await: replay-stable, distinct under concurrency
        await self._activity(
            ApprovalActivities.publish_run_event,
            PublishEventInput(
                tenant_id=self._req.tenant_id, workflow_id=self._wid, seq=self._seq, type=type, data=data
            ),
        )

    async def _finish_run(self, status: RunStatus, event: EventType, data: dict[str, Any]) -> None:
        self._seq += 1
        terminal = PublishEventInput(
            tenant_id=self._req.tenant_id, workflow_id=self._wid, seq=self._seq, type=event, data=data
        )
        await self._activity(
            ApprovalActivities.finish_run,
            FinishRunInput(
                tenant_id=self._req.tenant_id,
                workflow_id=self._wid,
                kind=RUN_KIND,
                status=status,
                result=data if status is RunStatus.completed else None,
                error=data.get("error") if status is not RunStatus.completed else None,
                created_by=self._req.requested_by,
                run_id=workflow.info().run_id,
                terminal_event=terminal,
            ),
        )

    def _notify(self, event: Literal["created", "escalated", "decided"]) -> None:
        """Send ``event`` to every requested channel in the background (awaited before the end)."""
        for target in self._req.notify:
            inp = NotifyInput(
                tenant_id=self._req.tenant_id,
                approval_id=self._req.approval_id,
                workflow_id=self._wid,
                channel=target.channel,
                event=event,
                title=self._req.title,
                status=self._status,
                assignees=self._assignees,
                decision=self._decision,
                delivery_id=f"{self._wid}:{event}:{target.channel}",
            )
            self._notifications.append(asyncio.create_task(self._send(inp)))

    async def _send(self, inp: NotifyInput) -> None:
        try:
            await workflow.execute_activity_method(
                ApprovalActivities.notify_approval,
                inp,
                start_to_close_timeout=WRITE_TIMEOUT,
                retry_policy=NOTIFY_RETRY,
            )
        except ActivityError as exc:  # notifications are best effort: the decision stands
            workflow.logger.warning("approval notification %s failed: %s", inp.delivery_id, exc.cause)
