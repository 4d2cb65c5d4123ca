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
