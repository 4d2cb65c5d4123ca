"""Deliberately non-deterministic changes of the ConnectorSync workflow (each must fail replay).

- ``NoBeginConnectorSyncWorkflow`` reads pages without first claiming the job
  (``connector_sync_begin``): replay meets ``connector_sync_page`` where the history has begin;
- ``NoSnapshotConnectorSyncWorkflow`` ends a dataset run without its snapshot: replay meets
  ``connector_sync_finish`` where the history has ``connector_sync_snapshot``.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.connectors import ConnectorActivities
    from core.connector_contracts import BeginInput, FinishInput, PageInput, SyncInput, SyncResult


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


@workflow.defn(name="ConnectorSync")
class NoSnapshotConnectorSyncWorkflow:
    """ConnectorSync whose dataset runs end without their snapshot (no patch, no
    ``connector_sync_snapshot``): a recorded dataset-sink history must fail to replay."""

    @workflow.run
    async def run(self, inp: SyncInput) -> SyncResult:
        wid = workflow.info().workflow_id
        seq = inp.next_seq
        begun = await workflow.execute_activity_method(
            ConnectorActivities.connector_sync_begin,
            BeginInput(tenant_id=inp.tenant_id, job_id=inp.job_id, workflow_id=wid, seq=seq),
            start_to_close_timeout=timedelta(minutes=1),
        )
        pages_done, records, pages = begun.pages_done, 0, 0
        while True:
            seq += 1
            page = await workflow.execute_activity_method(
                ConnectorActivities.connector_sync_page,
                PageInput(
                    tenant_id=inp.tenant_id,
                    job_id=inp.job_id,
                    workflow_id=wid,
                    expected_pages=pages_done,
                    page_size=inp.page_size,
                    seq=seq,
                ),
                start_to_close_timeout=timedelta(minutes=1),
            )
            pages, records, pages_done = pages + 1, records + page.records, page.pages_done
            if not page.has_more:
                break
        await workflow.execute_activity_method(
            ConnectorActivities.connector_sync_finish,
            FinishInput(
                tenant_id=inp.tenant_id,
                job_id=inp.job_id,
                workflow_id=wid,
                status="completed",
                pages=pages,
                records=records,
                pages_done=pages_done,
                seq=seq + 1,
            ),
            start_to_close_timeout=timedelta(minutes=1),
        )
        return SyncResult(
            status="completed", job_id=inp.job_id, pages=pages, records=records, pages_done=pages_done
        )
