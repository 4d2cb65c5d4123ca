"""Starting a run's workflow exactly once, with the tenant search attributes every run carries."""

from __future__ import annotations

import datetime as dt
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from core.contracts import SA_CREATED_BY, SA_RUN_KIND, SA_TENANT_ID
from core.identity import Principal


def run_search_attributes(principal: Principal, kind: str) -> TypedSearchAttributes:
    """``TenantId``, ``RunKind`` and ``CreatedBy`` (visible and filterable in the Temporal UI)."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(SA_TENANT_ID, principal.tenant_id),
            SearchAttributePair(SA_RUN_KIND, kind),
            SearchAttributePair(SA_CREATED_BY, principal.actor),
        ]
    )


async def start_once(
    temporal: Client,
    workflow: str,
    arg: Any,
    *,
    workflow_id: str,
    kind: str,
    principal: Principal,
    task_queue: str,
    execution_timeout: dt.timedelta,
) -> WorkflowHandle[Any, Any]:
    """Start once: a running twin is reused, a closed one is never restarted under the same id."""
    try:
        return await temporal.start_workflow(
            workflow,
            arg,
            id=workflow_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=run_search_attributes(principal, kind),
            execution_timeout=execution_timeout,
        )
    except WorkflowAlreadyStartedError:
        return temporal.get_workflow_handle(workflow_id)
