"""Shared workflow contracts: names, task queues, inputs and results (pydantic, no I/O).

The API imports these to start workflows without importing worker code; workflows import them
through ``workflow.unsafe.imports_passed_through()``. Add fields with defaults only, so running
histories stay decodable.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from temporalio.common import SearchAttributeKey

DEFAULT_TASK_QUEUE = "nexus-default"


class RunKind(StrEnum):
    """Kinds of runs; the first segment of a workflow id (``{kind}:{tenant}:{id}``)."""

    probe = "probe"


class WorkflowName(StrEnum):
    """Registered workflow type names (never the Python class names)."""

    probe = "Probe"


class RunStatus(StrEnum):
    """Status of a run as stored in the ``runs`` table."""

    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    terminated = "terminated"
    timed_out = "timed_out"
    continued_as_new = "continued_as_new"
    compensated = "compensated"  # a pipeline step failed (or it was cancelled); every undo ran
    compensation_failed = "compensation_failed"  # some undo failed for good (see result.left_undone)


TERMINAL_STATUSES = frozenset(
    {
        RunStatus.completed,
        RunStatus.failed,
        RunStatus.cancelled,
        RunStatus.terminated,
        RunStatus.timed_out,
        RunStatus.compensated,
        RunStatus.compensation_failed,
    }
)


class EventType(StrEnum):
    """Run progress event types (the SSE ``event:`` field)."""

    started = "run.started"
    probe_sample = "probe.sample"
    completed = "run.completed"
    failed = "run.failed"
    cancelled = "run.cancelled"


TERMINAL_EVENTS = frozenset({EventType.completed, EventType.failed, EventType.cancelled})

# Custom search attributes (registered by ``cli/embedded.py`` on the dev server).
SA_TENANT_ID = SearchAttributeKey.for_keyword("TenantId")
SA_RUN_KIND = SearchAttributeKey.for_keyword("RunKind")
SA_CREATED_BY = SearchAttributeKey.for_keyword("CreatedBy")

_TARGET_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def validate_http_url(url: str) -> str:
    """Accept only absolute ``http``/``https`` URLs with a host and no embedded credentials."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("only http and https URLs can be probed")
    if not parts.hostname:
        raise ValueError("URL has no host")
    if parts.username or parts.password:
        raise ValueError("URL must not embed credentials")
    return url


class HttpTarget(BaseModel):
    """A named HTTP endpoint to probe. Comes from operator configuration, never from clients."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Target name recorded with each sample (e.g. provider id).")
    url: str = Field(description="http(s) URL answered with a GET.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _TARGET_NAME.match(value) or value in ("postgres", "redis"):
            raise ValueError("target name must match [a-z0-9][a-z0-9_.-]{0,63} and not be reserved")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return validate_http_url(value)


class ProbeInput(BaseModel):
    """Input of the ``Probe`` workflow."""

    tenant_id: str
    targets: list[HttpTarget] = Field(default_factory=list)
    check_postgres: bool = True
    check_redis: bool = True
    timeout_s: float = Field(5.0, gt=0, le=60)
    created_by: str = ""


class ProbeSample(BaseModel):
    """One check outcome. ``error`` is a short class-level reason, never a secret or a URL."""

    target: str
    ok: bool
    latency_ms: float
    error: str | None = None
    status_code: int | None = None


class ProbeResult(BaseModel):
    """Result of the ``Probe`` workflow."""

    samples: list[ProbeSample]
    ok: bool


# --- activity contracts -------------------------------------------------------------------


class CheckInput(BaseModel):
    """Input of the Postgres/Redis check activities."""

    timeout_s: float = 5.0


class HttpCheckInput(BaseModel):
    """Input of ``probe_http``."""

    target: HttpTarget
    timeout_s: float = 5.0


class RecordSamplesInput(BaseModel):
    """Input of ``record_probe_samples``."""

    tenant_id: str
    workflow_id: str
    samples: list[ProbeSample]


class RecordSamplesResult(BaseModel):
    """How many samples were newly stored (0 on a retry that found them already there)."""

    inserted: int


class PublishEventInput(BaseModel):
    """Input of ``publish_run_event``; ``seq`` is assigned by the workflow (idempotent retries)."""

    tenant_id: str
    workflow_id: str
    seq: int
    type: str
    data: dict[str, Any] = Field(default_factory=dict)


class FinishRunInput(BaseModel):
    """Input of ``finish_run``: the final state of the ``runs`` row."""

    tenant_id: str
    workflow_id: str
    kind: str
    status: RunStatus
    result: dict[str, Any] | None = None
    error: str | None = None
    cost_usd: float = 0.0
    created_by: str = ""
    run_id: str | None = None
    # Stored in the same transaction as the final state, so "closed" and "terminal event
    # stored" are never observed apart; published after commit.
    terminal_event: PublishEventInput | None = None
