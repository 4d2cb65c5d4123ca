"""Talking to ``Approval`` workflows from outside (API, console, tests): start one, decide one.

Validator refusals come back as domain errors: another tenant → :class:`NotFound`, not an
assignee → :class:`Forbidden`, no longer pending → :class:`Conflict`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core.approvals.contracts import (
    RUN_KIND,
    UPDATE_DECIDE,
    WORKFLOW_NAME,
    ApprovalRequest,
    DecideInput,
    DecisionRecord,
    approval_workflow_id,
)
from core.contracts import SA_CREATED_BY, SA_RUN_KIND, SA_TENANT_ID
from core.errors import Conflict, Forbidden, NotFound

# Longest an approval may wait without a due time (the run's execution timeout).
MAX_OPEN = dt.timedelta(days=365)


async def start_approval(client: Client, req: ApprovalRequest, task_queue: str) -> WorkflowHandle[Any, Any]:
    """Start ``req`` once: a running twin is reused, a closed one is never restarted."""
    wid = approval_workflow_id(req.tenant_id, req.approval_id)
    attributes = TypedSearchAttributes(
        [
            SearchAttributePair(SA_TENANT_ID, req.tenant_id),
            SearchAttributePair(SA_RUN_KIND, RUN_KIND),
            SearchAttributePair(SA_CREATED_BY, req.requested_by[:200]),
        ]
    )
    try:
        return await client.start_workflow(
            WORKFLOW_NAME,
            req,
            id=wid,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=attributes,
            execution_timeout=MAX_OPEN,
        )
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle(wid)


_REFUSALS: dict[str, type[NotFound | Forbidden | Conflict]] = {
    "WrongTenant": NotFound,
    "NotAllowed": Forbidden,
    "NotPending": Conflict,
}


async def send_decision(client: Client, tenant_id: str, approval_id: str, inp: DecideInput) -> DecisionRecord:
    """Send the ``decide`` update and wait until it is applied and stored.

    Raises :class:`NotFound` / :class:`Forbidden` / :class:`Conflict` for refusals, and
    :class:`Conflict` when the workflow is no longer running (the caller may then compare the
    stored decision id to answer a repeated request).
    """
    handle = client.get_workflow_handle(approval_workflow_id(tenant_id, approval_id))
    try:
        record: DecisionRecord = await handle.execute_update(UPDATE_DECIDE, inp, result_type=DecisionRecord)
        return record
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type in _REFUSALS:
            raise _REFUSALS[cause.type](cause.message) from exc
        raise
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise Conflict("approval is no longer pending") from exc
        raise
