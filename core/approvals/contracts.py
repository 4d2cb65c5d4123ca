"""Contracts of an approval: the ``Approval`` child workflow any run can start and wait on.

A pipeline ``approval`` step, or a low-confidence NEXUS subtask, starts ``Approval`` as a child
workflow (id ``approval:{tenant}:{approval_id}``) and awaits its :class:`ApprovalResult`. The
child waits durably for a ``decide`` update (validated: an allowed, same-tenant approver, only
while pending; a repeated decision id is applied once), escalates after ``escalate_after_s``,
and applies ``on_timeout`` when ``due_in_s`` passes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WORKFLOW_NAME = "Approval"
RUN_KIND = "approval"
UPDATE_DECIDE = "decide"
QUERY_STATE = "state"


class Decision(StrEnum):
    approve = "approve"
    reject = "reject"
    request_changes = "request_changes"


class ApprovalStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    changes_requested = "changes_requested"
    timed_out = "timed_out"  # and on_timeout applied
    cancelled = "cancelled"


class Assignees(BaseModel):
    """Who may decide: named users (ids or e-mails) and/or roles of the tenant."""

    model_config = ConfigDict(extra="forbid")

    users: list[str] = Field(default_factory=list, max_length=50)
    roles: list[Literal["owner", "admin", "developer", "approver"]] = Field(default_factory=list)


class Escalation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after_s: int = Field(gt=0, description="Seconds after creation.")
    to: Assignees


class NotifyTarget(BaseModel):
    """Where to announce created / escalated / decided (operator-configured channel names)."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(description="Name of a configured notification channel.")


class ApprovalRequest(BaseModel):
    """The single argument of the ``Approval`` workflow (also the body of an approval step)."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str
    approval_id: str
    title: str = Field(min_length=1, max_length=300)
    context_markdown: str = Field("", max_length=100_000, description="What is being decided.")
    assignees: Assignees
    due_in_s: int | None = Field(None, gt=0)
    escalation: Escalation | None = None
    on_timeout: Literal["reject", "approve", "fail"] = "reject"
    notify: list[NotifyTarget] = Field(default_factory=list)
    parent_workflow_id: str | None = None
    requested_by: str = ""


class DecideInput(BaseModel):
    """The ``decide`` update's argument (sent by the API on behalf of an authenticated caller)."""

    decision_id: str = Field(min_length=1, max_length=100)
    decision: Decision
    comment: str = Field("", max_length=10_000)
    actor: str  # "key:<id>" / "user:<id>"
    actor_tenant_id: str
    actor_role: str
    actor_user: str | None = None  # user id or e-mail bound to the key, if any
    actor_email: str | None = None  # the bound user's e-mail (assignees may name either)


class DecisionRecord(BaseModel):
    decision_id: str
    decision: Decision
    comment: str
    actor: str
    at: str  # ISO time from workflow.now()


class ApprovalResult(BaseModel):
    status: ApprovalStatus
    decision: DecisionRecord | None = None
    escalated: bool = False
    # The effective outcome: the approver's decision, or ``on_timeout`` when it timed out.
    outcome: Decision | None = None


# --- additions (compatible: new fields have defaults, new models are new) --------------------

# Roles that may never decide, even when named: they are read-only by definition.
READ_ONLY_ROLES = frozenset({"viewer", "auditor"})
# Roles of the tenant that may always decide (documented in docs/approvals.md).
OVERRIDE_ROLES = frozenset({"owner", "admin"})


def approval_workflow_id(tenant_id: str, approval_id: str) -> str:
    """The business workflow id of an approval: ``approval:{tenant}:{approval_id}``."""
    return f"{RUN_KIND}:{tenant_id}:{approval_id}"


class ApprovalState(BaseModel):
    """The ``state`` query's answer: what the workflow holds right now."""

    tenant_id: str
    approval_id: str
    status: ApprovalStatus
    assignees: Assignees
    escalated: bool = False
    decision: DecisionRecord | None = None
    due_at: str | None = None


class RecordApprovalInput(BaseModel):
    """Input of ``record_approval``: the request plus workflow-derived ids and times."""

    request: ApprovalRequest
    workflow_id: str
    created_at: str
    due_at: str | None = None


class EscalateApprovalInput(BaseModel):
    """Input of ``escalate_approval``: the widened assignees to store."""

    tenant_id: str
    approval_id: str
    workflow_id: str
    assignees: Assignees


class FinishApprovalInput(BaseModel):
    """Input of ``finish_approval``: the final status, the decision (if any), the audit actor."""

    tenant_id: str
    approval_id: str
    workflow_id: str
    status: ApprovalStatus
    decision: DecisionRecord | None = None
    timeout_outcome: str | None = None
    decided_at: str


class NotifyInput(BaseModel):
    """Input of ``notify_approval``: one event to one operator-configured channel."""

    tenant_id: str
    approval_id: str
    workflow_id: str
    channel: str
    event: Literal["created", "escalated", "decided"]
    title: str
    status: ApprovalStatus
    assignees: Assignees
    decision: DecisionRecord | None = None
    # Replay-stable delivery id (``{workflow_id}:{event}:{channel}``): receivers deduplicate on it.
    delivery_id: str
