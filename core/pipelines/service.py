"""Pipeline use cases below the API: create, version (validated, audited), run inputs, retry."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.db.pipeline_models import Pipeline, PipelineVersion
from core.errors import Conflict, NotFound, ValidationFailed
from core.governance.audit import append
from core.pipelines.contracts import PipelineStatus, StepOutput
from core.pipelines.definition import PipelineDefinition, SubPipelineStep
from core.pipelines.repository import PipelineRepository
from core.pipelines.settings import PipelineSettings
from core.pipelines.validate import Issue, PipelineInvalid, check_definition, parse_definition, walk_steps

PIPELINE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MAX_SUB_PIPELINE_DEPTH = 10


def check_pipeline_id(pipeline_id: str) -> None:
    """Pipeline ids are slugs: lowercase letters, digits and dashes, at most 63 characters."""
    if not PIPELINE_ID.match(pipeline_id):
        raise ValidationFailed("pipeline id must be a slug: [a-z0-9][a-z0-9-]{0,62}")


async def _check_sub_pipelines(
    repo: PipelineRepository, tenant_id: str, pipeline_id: str, defn: PipelineDefinition
) -> None:
    """Every sub_pipeline exists for the tenant and none leads back to ``pipeline_id``."""
    issues: list[Issue] = []
    for step in walk_steps(defn.steps):
        if not isinstance(step, SubPipelineStep) or step.pipeline == pipeline_id:
            continue  # self-reference is reported by check_definition
        seen: set[tuple[str, int | None]] = set()
        frontier: list[tuple[str, int | None, int]] = [(step.pipeline, step.version, 1)]
        while frontier:
            name, number, depth = frontier.pop()
            if (name, number) in seen:
                continue
            seen.add((name, number))
            try:
                row = await repo.version(tenant_id, name, number)
            except NotFound:
                if name == step.pipeline:
                    issues.append(Issue(step=step.id, path="pipeline", message=f"unknown pipeline {name!r}"))
                continue
            child = PipelineDefinition.model_validate(row.definition)
            for sub in walk_steps(child.steps):
                if not isinstance(sub, SubPipelineStep):
                    continue
                if sub.pipeline == pipeline_id:
                    issues.append(
                        Issue(
                            step=step.id,
                            path="pipeline",
                            message=f"cycle: pipeline {step.pipeline!r} runs {pipeline_id!r} again",
                        )
                    )
                    frontier.clear()
                    break
                if depth < MAX_SUB_PIPELINE_DEPTH:
                    frontier.append((sub.pipeline, sub.version, depth + 1))
    if issues:
        raise PipelineInvalid(issues)


async def validated(
    session: AsyncSession, tenant_id: str, pipeline_id: str, raw: Any, settings: PipelineSettings
) -> PipelineDefinition:
    """Parse and check a document for ``pipeline_id`` (shape, semantics, sub-pipelines)."""
    defn = parse_definition(raw)
    check_definition(
        defn,
        pipeline_id=pipeline_id,
        allowlist=settings.allow_private_hosts,
        secrets=set(settings.signing_secrets),
    )
    await _check_sub_pipelines(PipelineRepository.from_session(session), tenant_id, pipeline_id, defn)
    return defn


async def create_pipeline(
    session: AsyncSession,
    *,
    tenant_id: str,
    pipeline_id: str,
    raw: Any,
    actor: str,
    settings: PipelineSettings,
) -> tuple[Pipeline, PipelineVersion]:
    """Validate and store a new pipeline (version 1), audited as ``pipeline.create``."""
    check_pipeline_id(pipeline_id)
    defn = await validated(session, tenant_id, pipeline_id, raw, settings)
    pipeline, version = await PipelineRepository.from_session(session).create(
        tenant_id, pipeline_id, defn, actor
    )
    await append(
        session,
        actor=actor,
        action="pipeline.create",
        tenant_id=tenant_id,
        target=f"pipeline:{pipeline_id}",
        data={"version": 1, "sha256": version.sha256},
    )
    return pipeline, version


async def add_version(
    session: AsyncSession,
    *,
    tenant_id: str,
    pipeline_id: str,
    raw: Any,
    actor: str,
    settings: PipelineSettings,
    comment: str = "",
) -> PipelineVersion:
    """Validate and append the next immutable version, audited as ``pipeline.version``."""
    repo = PipelineRepository.from_session(session)
    await repo.get(tenant_id, pipeline_id)
    defn = await validated(session, tenant_id, pipeline_id, raw, settings)
    version = await repo.add_version(tenant_id, pipeline_id, defn, actor, comment)
    await append(
        session,
        actor=actor,
        action="pipeline.version",
        tenant_id=tenant_id,
        target=f"pipeline:{pipeline_id}",
        data={"version": version.version, "sha256": version.sha256},
    )
    return version


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def run_inputs(defn: PipelineDefinition, given: dict[str, Any]) -> dict[str, Any]:
    """Check run inputs against the declared ones (defaults applied); 422 naming the input."""
    errors: list[dict[str, str]] = []
    out: dict[str, Any] = {}
    for name in sorted(set(given) - set(defn.inputs)):
        errors.append({"input": name, "message": "not a declared input"})
    for name, spec in defn.inputs.items():
        if name not in given:
            if spec.required and spec.default is None:
                errors.append({"input": name, "message": "required input is missing"})
            elif spec.default is not None:
                out[name] = spec.default
            continue
        value = given[name]
        wanted = _TYPES[spec.type]
        is_bool = isinstance(value, bool)
        if not isinstance(value, wanted) or (is_bool and spec.type != "boolean"):
            errors.append({"input": name, "message": f"expected {spec.type}"})
            continue
        out[name] = value
    if errors:
        raise ValidationFailed(f"invalid input {errors[0]['input']!r}: {errors[0]['message']}", errors=errors)
    return out


def retry_outputs(
    defn: PipelineDefinition, result: dict[str, Any] | None, status: str
) -> tuple[str, dict[str, StepOutput]]:
    """(step to resume from, outputs of the top-level steps before it) of a failed run.

    A run whose compensations ran cannot be resumed: its earlier effects were undone.
    """
    if status != PipelineStatus.failed.value or not result or not result.get("failed_step"):
        raise Conflict("only a failed run (nothing compensated) can be retried from its failed step")
    failed = str(result["failed_step"])
    order = [s.id for s in defn.steps]
    if failed not in order:
        raise Conflict("the failed step is not a top-level step of this version")
    stored = result.get("steps") or {}
    prior: dict[str, StepOutput] = {}
    for sid in order[: order.index(failed)]:
        if sid not in stored:
            raise Conflict(f"no recorded output for step {sid!r}")
        prior[sid] = StepOutput.model_validate(stored[sid])
    return failed, prior
