"""The ``ConnectorSync`` workflow: page through a source into a sink, durably and resumably.

Each page is one activity (read after the stored checkpoint, write the sink, advance the
checkpoint and publish progress — one transaction), so a crash anywhere resumes at the last
committed page and never writes a page twice. The input carries only ids and counters: the
activities load the connection and decrypt its credentials themselves. Every
``pages_per_run`` pages (or when Temporal suggests it) the run continues as new, so the
history stays small however large the source. ``max_pages_per_minute`` paces the reads with
durable timers (vendor API limits); throttling answers are retried after their ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.connectors import ConnectorActivities
    from core.connector_contracts import (
        WORKFLOW_NAME,
        BeginInput,
        FinishInput,
        PageInput,
        PageResult,
        SinkType,
        SnapshotInput,
        SyncInput,
        SyncResult,
    )
    from core.contracts import RunStatus
    from workflows.pipeline_options import short_reason

# Unlimited attempts would retry a vendor outage forever; throttling waits its Retry-After.
PAGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=30,
)
WRITE_TIMEOUT = timedelta(seconds=30)
WRITE_RETRY = RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=10))
# Runs recorded before the dataset sink never ran ``connector_sync_snapshot``.
DATASET_SINK_PATCH = "connector-dataset-sink"
SNAPSHOT_TIMEOUT = timedelta(minutes=5)


@workflow.defn(name=WORKFLOW_NAME)
class ConnectorSyncWorkflow:
    """Sync one connector job (see the module docstring)."""

    def __init__(self) -> None:
        self.inp: SyncInput | None = None
        self.dataset_version: int | None = None

    def _next_seq(self) -> int:
        assert self.inp is not None
        seq = self.inp.next_seq
        self.inp.next_seq += 1
        return seq

    @workflow.run
    async def run(self, inp: SyncInput) -> SyncResult:
        self.inp = inp
        wid = workflow.info().workflow_id
        try:
            if not inp.continued:
                begun = await workflow.execute_activity_method(
                    ConnectorActivities.connector_sync_begin,
                    BeginInput(
                        tenant_id=inp.tenant_id,
                        job_id=inp.job_id,
                        workflow_id=wid,
                        seq=self._next_seq(),
                        created_by=inp.created_by,
                    ),
                    start_to_close_timeout=WRITE_TIMEOUT,
                    retry_policy=WRITE_RETRY,
                )
                inp.pages_done, inp.blocking, inp.continued = begun.pages_done, begun.blocking, True
                inp.sink = begun.sink
            pages_this_run = 0
            while True:
                if pages_this_run >= inp.pages_per_run or workflow.info().is_continue_as_new_suggested():
                    workflow.continue_as_new(inp)
                if inp.max_pages_per_minute and inp.pages > 0:
                    await workflow.sleep(timedelta(seconds=60 / inp.max_pages_per_minute))
                page = await self._page(inp, wid)
                pages_this_run += 1
                inp.pages += 1
                inp.records += page.records
                inp.pages_done = page.pages_done
                if not page.has_more:
                    break
            if inp.sink == SinkType.dataset.value and workflow.patched(DATASET_SINK_PATCH):
                snapshot = await workflow.execute_activity_method(
                    ConnectorActivities.connector_sync_snapshot,
                    SnapshotInput(
                        tenant_id=inp.tenant_id, job_id=inp.job_id, workflow_id=wid, created_by=inp.created_by
                    ),
                    start_to_close_timeout=SNAPSHOT_TIMEOUT,
                    retry_policy=WRITE_RETRY,
                )
                self.dataset_version = snapshot.version
        except (ActivityError, ApplicationError) as exc:
            if is_cancelled_exception(exc):
                await asyncio.shield(asyncio.ensure_future(self._finish(wid, RunStatus.cancelled, None)))
                raise
            reason = short_reason(exc)
            await self._finish(wid, RunStatus.failed, reason)
            raise ApplicationError(f"sync failed: {reason}", type="SyncFailed", non_retryable=True) from None
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.ensure_future(self._finish(wid, RunStatus.cancelled, None)))
            raise
        await self._finish(wid, RunStatus.completed, None)
        return SyncResult(
            status=RunStatus.completed.value,
            job_id=inp.job_id,
            pages=inp.pages,
            records=inp.records,
            pages_done=inp.pages_done,
            dataset_version=self.dataset_version,
        )

    async def _page(self, inp: SyncInput, wid: str) -> PageResult:
        call = PageInput(
            tenant_id=inp.tenant_id,
            job_id=inp.job_id,
            workflow_id=wid,
            expected_pages=inp.pages_done,
            page_size=inp.page_size,
            seq=self._next_seq(),
        )
        if inp.blocking:
            return await workflow.execute_activity_method(
                ConnectorActivities.connector_sync_page_blocking,
                call,
                start_to_close_timeout=timedelta(seconds=inp.page_timeout_s),
                retry_policy=PAGE_RETRY,
            )
        return await workflow.execute_activity_method(
            ConnectorActivities.connector_sync_page,
            call,
            start_to_close_timeout=timedelta(seconds=inp.page_timeout_s),
            retry_policy=PAGE_RETRY,
        )

    async def _finish(self, wid: str, status: RunStatus, error: str | None) -> None:
        assert self.inp is not None
        inp = self.inp
        await workflow.execute_activity_method(
            ConnectorActivities.connector_sync_finish,
            FinishInput(
                tenant_id=inp.tenant_id,
                job_id=inp.job_id,
                workflow_id=wid,
                status=status.value,
                pages=inp.pages,
                records=inp.records,
                pages_done=inp.pages_done,
                error=error,
                seq=self._next_seq(),
                created_by=inp.created_by,
                dataset_version=self.dataset_version,
            ),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=WRITE_RETRY,
        )
