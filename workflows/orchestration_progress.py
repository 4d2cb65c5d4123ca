"""Run state and progress of the ``Orchestration`` workflow: bookkeeping activities and events.

A base class of :class:`workflows.orchestration_subtask.SubtaskSteps` (and so of the workflow).
Batched runs queue their events and consensus gradings and write them in batches: with the next
layer's ``open_layer``, a durable timer after a subtask ends while others still run, ahead of the
synthesis, or beside the run's close. Deterministic only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import timedelta
from decimal import Decimal
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.orchestration import OrchestrationActivities
    from activities.runs import RunActivities
    from core.contracts import PublishEventInput
    from core.orchestration.budget import BudgetLedger
    from core.orchestration.contracts import OrchestrationInput, PayloadRef, Subtask
    from core.orchestration.layer import OpenLayerInput, OpenLayerResult
    from core.orchestration.progress import ConsensusObservation, RecordProgressInput
    from core.orchestration.router import ModelInfo
    from core.orchestration.steps import LoadModelsInput, OrchestrationEvent, PrepareSubtaskInput
    from workflows.orchestration_calls import WRITE_RETRY, WRITE_TIMEOUT

Ev = OrchestrationEvent
# Runs started before this change publish each event in its own local activity; newer ones queue
# events (and consensus gradings) and write each batch in one transaction: with the next layer's
# ``open_layer``, a second after a subtask ends while others still run (``record_progress``),
# ahead of the synthesis in the ``synthesize`` activity (which then also closes the run), or,
# when there is nothing to synthesise, beside ``finish_run``.
BATCH_PATCH = "nexus-batched-progress"
PROGRESS_DELAY = timedelta(seconds=1)


class RunSteps:
    """Run state, bookkeeping and progress (events queued and written in batches)."""

    def __init__(self) -> None:
        self._seq = 0
        # Short bookkeeping (events, catalog snapshot, subtask prompt, run close) runs as local
        # activities: no server round trip each. Runs recorded before this change replay on the
        # old path; set in run() by workflow.patched().
        self._local_bookkeeping = False
        self._inline = False  # set in run() by workflow.patched("nexus-inline-consensus")
        self._sequential = False  # workflow.patched("nexus-sequential-consensus")
        self._batched = False  # workflow.patched(BATCH_PATCH)
        self._retrieval_cost = False  # workflow.patched("nexus-retrieval-cost")
        self._outbox: list[PublishEventInput] = []
        self._observations: list[ConsensusObservation] = []
        self._flushing: list[tuple[asyncio.Future[None], RecordProgressInput]] = []
        self._layer_running = 0
        self._flush_timer: asyncio.Task[None] | None = None
        self._closed = False  # batched runs: the synthesis closed the run
        self._ledger = BudgetLedger(budget_usd=Decimal(0))
        self._models: list[ModelInfo] = []
        self._answers: dict[str, PayloadRef] = {}

    @property
    def _wid(self) -> str:
        return workflow.info().workflow_id

    def _event(self, inp: OrchestrationInput, type: str, data: dict[str, Any]) -> Coroutine[Any, Any, Any]:
        """Publish one event (await the result). The seq is taken at the call, before any await,
        so concurrent events get distinct, replay-stable numbers in call order. Batched runs
        queue it and write the whole queue."""
        if self._batched:
            self._emit(inp, type, data)
            return self._flush(inp)
        self._seq += 1
        return self._bookkeeping(
            RunActivities.publish_run_event,
            PublishEventInput(
                tenant_id=inp.tenant_id, workflow_id=self._wid, seq=self._seq, type=type, data=data
            ),
        )

    def _emit(self, inp: OrchestrationInput, type: str, data: dict[str, Any]) -> None:
        """Queue one event (batched runs): written with the next batch, seq taken now."""
        self._seq += 1
        self._outbox.append(
            PublishEventInput(
                tenant_id=inp.tenant_id, workflow_id=self._wid, seq=self._seq, type=type, data=data
            )
        )

    def _take_progress(self, inp: OrchestrationInput) -> RecordProgressInput:
        """Everything queued so far (emptying the queue)."""
        progress = RecordProgressInput(
            tenant_id=inp.tenant_id,
            workflow_id=self._wid,
            events=self._outbox,
            observations=self._observations,
        )
        self._outbox, self._observations = [], []
        return progress

    def _start_flush(self, inp: OrchestrationInput) -> None:
        """Write what is queued in one ``record_progress`` local activity, without waiting."""
        progress = self._take_progress(inp)
        if progress:
            handle = workflow.start_local_activity_method(
                OrchestrationActivities.record_progress,
                progress,
                start_to_close_timeout=WRITE_TIMEOUT,
                retry_policy=WRITE_RETRY,
            )
            self._flushing.append((handle, progress))

    async def _flush(self, inp: OrchestrationInput) -> None:
        """Write what is queued and wait until every batch so far is stored."""
        self._start_flush(inp)
        awaited = list(self._flushing)
        await asyncio.gather(*(handle for handle, _ in awaited))
        self._flushing = [f for f in self._flushing if all(f is not a for a in awaited)]

    def _unwritten(self, inp: OrchestrationInput) -> RecordProgressInput:
        """For closing the run: what is queued plus every batch not known to be stored (in flight,
        failed or cancelled); rewriting a stored seq or grading is a no-op."""
        batches = [b for h, b in self._flushing if not h.done() or h.cancelled() or h.exception()]
        self._flushing = []
        queued = self._take_progress(inp)
        return queued.model_copy(
            update={
                "events": [e for b in batches for e in b.events] + queued.events,
                "observations": [o for b in batches for o in b.observations] + queued.observations,
            }
        )

    async def _bookkeeping(self, method: Any, arg: Any) -> Any:
        """Run a short, idempotent bookkeeping activity (locally once the patch is in effect)."""
        if self._local_bookkeeping:
            return await workflow.execute_local_activity_method(
                method, arg, start_to_close_timeout=WRITE_TIMEOUT, retry_policy=WRITE_RETRY
            )
        return await workflow.execute_activity_method(
            method, arg, start_to_close_timeout=WRITE_TIMEOUT, retry_policy=WRITE_RETRY
        )

    def _prepare_input(self, inp: OrchestrationInput, subtask: Subtask) -> PrepareSubtaskInput:
        return PrepareSubtaskInput(
            tenant_id=inp.tenant_id,
            workflow_id=self._wid,
            task=inp.task,
            subtask=subtask,
            dependency_answers={d: self._answers[d] for d in subtask.depends_on if d in self._answers},
            knowledge_base_ids=inp.knowledge_base_ids,
        )

    async def _open_layer(
        self, inp: OrchestrationInput, layer: list[Subtask], load: LoadModelsInput | None = None
    ) -> OpenLayerResult:
        """Batched runs: queue the layer's ``subtask.started`` events, then one ``open_layer``
        local activity writes the queue, stores the layer's prompts (and loads the catalog)."""
        for subtask in layer:
            self._emit(inp, Ev.subtask_started, {"subtask_id": subtask.id})
        self._layer_running = len(layer)
        opening = OpenLayerInput(
            tenant_id=inp.tenant_id,
            workflow_id=self._wid,
            progress=self._unwritten(inp),
            load_models=load,
            prepare=[self._prepare_input(inp, s) for s in layer],
        )
        opened: OpenLayerResult = await self._bookkeeping(OrchestrationActivities.open_layer, opening)
        return opened

    def _close_layer(self) -> None:
        """The layer's subtasks all returned: its queued events wait for the next write."""
        if self._flush_timer is not None and not self._flush_timer.done():
            self._flush_timer.cancel()
        self._flush_timer = None

    def _flush_soon(self, inp: OrchestrationInput) -> None:
        """Write the queue within :data:`PROGRESS_DELAY` unless the layer ends first (a durable
        timer, no round trip): followers see a finished subtask while slower ones still run."""
        if self._flush_timer is None or self._flush_timer.done():

            async def later() -> None:
                await workflow.sleep(PROGRESS_DELAY)
                self._start_flush(inp)

            self._flush_timer = asyncio.create_task(later())
