"""Activity options and small deterministic helpers of the ``Pipeline`` workflow."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from core.pipelines.definition import RetrySpec

# Failures no retry can fix: bad definitions/templates, refused URLs, missing features.
ALWAYS_FATAL = ["BadInput", "UrlRefused", "TemplateFailed", "ExpressionFailed", "StepNotAvailable"]
WRITE_RETRY = RetryPolicy(
    maximum_attempts=10,
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=["BadInput"],
)
WRITE_TIMEOUT = timedelta(seconds=30)
# A compensation must not give up quickly: at least this many attempts, whatever its RetrySpec.
MIN_COMPENSATION_ATTEMPTS = 5


def retry_policy(spec: RetrySpec, *, compensation: bool = False) -> RetryPolicy:
    """The Temporal retry policy of a step's RetrySpec (Temporal owns retries)."""
    attempts = max(spec.max_attempts, MIN_COMPENSATION_ATTEMPTS) if compensation else spec.max_attempts
    initial = timedelta(seconds=spec.initial_interval_s)
    return RetryPolicy(
        maximum_attempts=attempts,
        initial_interval=initial,
        backoff_coefficient=spec.backoff,
        maximum_interval=max(initial, timedelta(seconds=spec.max_interval_s)),
        non_retryable_error_types=[*spec.non_retryable, *ALWAYS_FATAL],
    )


def short_reason(exc: BaseException) -> str:
    """The innermost failure message, truncated (activities never put secrets in errors)."""
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    message = cause.message if isinstance(cause, ApplicationError) else str(cause)
    return (message or type(cause).__name__)[:300]


def run_key(workflow_id: str) -> str:
    """The id part of ``pipeline:{tenant}:{key}``, usable inside other ids (no colons)."""
    return workflow_id.split(":", 2)[-1].replace(":", ".")
