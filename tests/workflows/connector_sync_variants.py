"""A deliberately non-deterministic change of the ConnectorSync workflow (must fail replay).

It reads pages without first claiming the job (``connector_sync_begin``): in a recorded history
the first command is that activity, so replay meets ``connector_sync_page`` instead.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.connectors import ConnectorActivities
    from core.connector_contracts import PageInput, SyncInput, SyncResult


@workflow.defn(name="ConnectorSync")
class NoBeginConnectorSyncWorkflow:
    """ConnectorSync without claiming the job: a breaking change to the command sequence."""

    @workflow.run
    async def run(self, inp: SyncInput) -> SyncResult:
        page = await workflow.execute_activity_method(
            ConnectorActivities.connector_sync_page,
            PageInput(
                tenant_id=inp.tenant_id,
                job_id=inp.job_id,
                workflow_id=workflow.info().workflow_id,
                expected_pages=0,
                page_size=inp.page_size,
                seq=1,
            ),
            start_to_close_timeout=timedelta(minutes=1),
        )
        return SyncResult(
            status="completed", job_id=inp.job_id, pages=1, records=page.records, pages_done=page.pages_done
        )
