"""Activity options and small deterministic helpers of the ``Orchestration`` workflow."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from core.orchestration.contracts import (
        PREVIEW_CHARS,
        CandidateRecord,
        OrchestrationInput,
        PanelPolicy,
        PayloadRef,
        SubtaskCapability,
        SubtaskResult,
        SubtaskStatus,
    )
    from core.orchestration.router import ModelInfo, RoutingError, choose_panel, estimate_call_usd
    from core.orchestration.steps import LLM_MAX_ATTEMPTS

# A proposer is tried three times (Temporal owns retries); after that it is recorded as failed.
LLM_RETRY = RetryPolicy(
    maximum_attempts=LLM_MAX_ATTEMPTS,
    initial_interval=timedelta(milliseconds=300),
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=["BadInput"],
)
LLM_TIMEOUT = timedelta(minutes=3)
# Model calls heartbeat every second: a killed worker's call is retried elsewhere within this.
LLM_HEARTBEAT = timedelta(seconds=5)
WRITE_RETRY = RetryPolicy(
    maximum_attempts=10,
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=["BadInput"],
)
WRITE_TIMEOUT = timedelta(seconds=30)
PLANNER_COMPLETION_TOKENS = 1024
PROMPT_OVERHEAD_TOKENS = 400
MAX_DELTA_EVENTS = 64


def tokens_of(*refs: PayloadRef) -> int:
    """A pessimistic prompt-token estimate from stored sizes (bytes / 3 + fixed overhead)."""
    return sum(r.size for r in refs) // 3 + PROMPT_OVERHEAD_TOKENS


def pick_one(
    models: list[ModelInfo],
    capability: SubtaskCapability,
    inp: OrchestrationInput,
    remaining: Decimal,
    prompt_tokens: int,
    completion_tokens: int,
    named: str | None,
) -> ModelInfo | None:
    """One model for a helper call (planner, judge, synthesiser): the named one or the best
    affordable one in the run's regions; None when none fits the budget."""
    policy = PanelPolicy(min_models=1, max_models=1, prefer="quality")
    try:
        panel = choose_panel(
            models,
            capability,
            policy,
            regions=inp.regions,
            remaining_budget_usd=remaining,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            fixed=[named] if named else None,
        )
    except RoutingError:
        return None
    by_id = {m.id: m for m in models}
    return by_id[panel.models[0]] if panel.models else None


def estimate(model: ModelInfo, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """The reservation for one call."""
    return estimate_call_usd(model, prompt_tokens, completion_tokens)


def inline_text(ref: PayloadRef | None) -> str | None:
    """The whole text of ``ref`` when its preview holds all of it (a short answer), else None.

    A preview is the text on one line, cut to ``PREVIEW_CHARS`` characters with an ellipsis; it
    is complete when it was not cut and has the stored size (whitespace runs may be flattened,
    which normalisation ignores anyway).
    """
    if ref is None or len(ref.preview) >= PREVIEW_CHARS:
        return None
    return ref.preview if len(ref.preview.encode("utf-8")) == ref.size else None


def failed_candidate(model: str, error: str) -> CandidateRecord:
    return CandidateRecord(model=model, ok=False, error=error)


def skipped(subtask_id: str, reason: str) -> SubtaskResult:
    """A subtask that never ran (budget exhausted or no panel)."""
    del reason
    return SubtaskResult(subtask_id=subtask_id, status=SubtaskStatus.skipped)


def short_reason(exc: BaseException) -> str:
    """The innermost failure message, truncated (activities never put secrets in errors)."""
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    message = cause.message if isinstance(cause, ApplicationError) else str(cause)
    return (message or type(cause).__name__)[:300]
