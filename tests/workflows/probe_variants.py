"""A deliberately non-deterministic change of the Probe workflow (must fail replay).

It skips the ``run.started`` event and probes first: the first command in a recorded history
is the ``publish_run_event`` activity, so replay hits a different activity type.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.probe import ProbeActivities
    from core.contracts import CheckInput, ProbeInput, ProbeResult


@workflow.defn(name="Probe")
class ReorderedProbeWorkflow:
    """Probe without the start event: a breaking change to the command sequence."""

    @workflow.run
    async def run(self, inp: ProbeInput) -> ProbeResult:
        sample = await workflow.execute_activity_method(
            ProbeActivities.probe_postgres,
            CheckInput(timeout_s=inp.timeout_s),
            start_to_close_timeout=timedelta(seconds=10),
        )
        return ProbeResult(samples=[sample], ok=sample.ok)
