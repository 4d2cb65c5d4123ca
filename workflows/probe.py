"""The ``Probe`` workflow: check Postgres, Redis and HTTP targets in parallel, record the samples."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.probe import ProbeActivities
    from core.contracts import (
        CheckInput,
        EventType,
        FinishRunInput,
        HttpCheckInput,
        ProbeInput,
        ProbeResult,
        ProbeSample,
        PublishEventInput,
        RecordSamplesInput,
        RunKind,
        RunStatus,
    )

CHECK_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=200))
WRITE_RETRY = RetryPolicy(
    maximum_attempts=10,
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=["BadInput"],
)
WRITE_TIMEOUT = timedelta(seconds=30)


@workflow.defn(name="Probe")
class ProbeWorkflow:
    """Probe the platform's dependencies once and record one sample per target.

    Events: ``run.started``, one ``probe.sample`` per target, then ``run.completed`` (or
    ``run.failed`` / ``run.cancelled``). The ``runs`` row is closed and the terminal event stored
    in one transaction, so a client never sees a closed run without its terminal event (or the
    reverse).
    """

    def __init__(self) -> None:
        self._seq = 0

    @workflow.run
    async def run(self, inp: ProbeInput) -> ProbeResult:
        try:
            await self._event(inp, EventType.started, {"targets": self._target_names(inp)})
            samples = await self._check_all(inp)
            await workflow.execute_activity_method(
                ProbeActivities.record_probe_samples,
                RecordSamplesInput(tenant_id=inp.tenant_id, workflow_id=self._wid, samples=samples),
                start_to_close_timeout=WRITE_TIMEOUT,
                retry_policy=WRITE_RETRY,
            )
            await asyncio.gather(*(self._event(inp, EventType.probe_sample, s.model_dump()) for s in samples))
            result = ProbeResult(samples=samples, ok=all(s.ok for s in samples))
            await self._finish(
                inp, RunStatus.completed, EventType.completed, {"ok": result.ok}, result=result.model_dump()
            )
            return result
        except BaseException as exc:
            if is_cancelled_exception(exc):
                # Cleanup runs after the cancellation was delivered; shield it from a second one.
                await asyncio.shield(self._close(inp, RunStatus.cancelled, "cancelled"))
                raise
            if not isinstance(exc, ActivityError | ApplicationError):
                raise  # a bug in the workflow itself: fail the task so a fixed worker can resume
            reason = _short_reason(exc)
            workflow.logger.warning("probe failed: %s", reason)
            await self._close(inp, RunStatus.failed, reason)
            raise ApplicationError(f"probe failed: {reason}", type="ProbeFailed", non_retryable=True) from exc

    @property
    def _wid(self) -> str:
        return workflow.info().workflow_id

    @staticmethod
    def _target_names(inp: ProbeInput) -> list[str]:
        names = (["postgres"] if inp.check_postgres else []) + (["redis"] if inp.check_redis else [])
        return names + [t.name for t in inp.targets]

    async def _check_all(self, inp: ProbeInput) -> list[ProbeSample]:
        timeout = timedelta(seconds=inp.timeout_s + 5)
        checks: list[Any] = []
        if inp.check_postgres:
            checks.append(
                workflow.execute_activity_method(
                    ProbeActivities.probe_postgres,
                    CheckInput(timeout_s=inp.timeout_s),
                    start_to_close_timeout=timeout,
                    retry_policy=CHECK_RETRY,
                )
            )
        if inp.check_redis:
            checks.append(
                workflow.execute_activity_method(
                    ProbeActivities.probe_redis,
                    CheckInput(timeout_s=inp.timeout_s),
                    start_to_close_timeout=timeout,
                    retry_policy=CHECK_RETRY,
                )
            )
        for target in inp.targets:
            checks.append(
                workflow.execute_activity_method(
                    ProbeActivities.probe_http,
                    HttpCheckInput(target=target, timeout_s=inp.timeout_s),
                    start_to_close_timeout=timeout,
                    retry_policy=CHECK_RETRY,
                )
            )
        return list(await asyncio.gather(*checks))

    async def _event(self, inp: ProbeInput, type: str, data: dict[str, Any]) -> None:
        # The seq is taken before the await so concurrent events get distinct, replay-stable numbers.
        self._seq += 1
        await workflow.execute_activity_method(
            ProbeActivities.publish_run_event,
            PublishEventInput(
                tenant_id=inp.tenant_id, workflow_id=self._wid, seq=self._seq, type=type, data=data
            ),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=WRITE_RETRY,
        )

    async def _finish(
        self,
        inp: ProbeInput,
        status: RunStatus,
        event: EventType,
        data: dict[str, Any],
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Close the run row and store its terminal event atomically (one activity)."""
        self._seq += 1
        terminal = PublishEventInput(
            tenant_id=inp.tenant_id, workflow_id=self._wid, seq=self._seq, type=event, data=data
        )
        await workflow.execute_activity_method(
            ProbeActivities.finish_run,
            FinishRunInput(
                tenant_id=inp.tenant_id,
                workflow_id=self._wid,
                kind=RunKind.probe.value,
                status=status,
                result=result,
                error=error,
                created_by=inp.created_by,
                run_id=workflow.info().run_id,
                terminal_event=terminal,
            ),
            start_to_close_timeout=WRITE_TIMEOUT,
            retry_policy=WRITE_RETRY,
        )

    async def _close(self, inp: ProbeInput, status: RunStatus, reason: str) -> None:
        event = EventType.cancelled if status is RunStatus.cancelled else EventType.failed
        await self._finish(inp, status, event, {"error": reason}, error=reason)


def _short_reason(exc: BaseException) -> str:
    """The innermost failure message, truncated (activities never put secrets in errors)."""
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    message = cause.message if isinstance(cause, ApplicationError) else str(cause)
    return (message or type(cause).__name__)[:300]
