"""Canonical YAML of a definition and the diff between two versions (text + structure)."""

from __future__ import annotations

import difflib
import json
from typing import Any

import yaml
from pydantic import BaseModel, Field

from core.pipelines.definition import PipelineDefinition
from core.pipelines.validate import walk_steps


def canonical(defn: PipelineDefinition) -> dict[str, Any]:
    """The definition as stored: JSON-compatible, defaults omitted, field order of the schema."""
    return defn.model_dump(mode="json", exclude_defaults=True, by_alias=True)


def canonical_yaml(defn: PipelineDefinition) -> str:
    """Stable YAML of a definition (what the diff compares)."""
    return str(yaml.safe_dump(canonical(defn), sort_keys=False, allow_unicode=True, width=100))


class StepChange(BaseModel):
    id: str
    type: str
    fields: list[str] = Field(default_factory=list, description="Top-level fields that differ.")


class DiffSummary(BaseModel):
    added: list[StepChange] = Field(default_factory=list)
    removed: list[StepChange] = Field(default_factory=list)
    changed: list[StepChange] = Field(default_factory=list)
    reordered: bool = False
    inputs_changed: bool = False
    outputs_changed: bool = False


def _flat(defn: PipelineDefinition) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for step in walk_steps(defn.steps):
        body = step.model_dump(mode="json", exclude_defaults=True)
        # Nested steps are compared on their own; keep only this step's own fields.
        for nested in ("branches", "cases", "otherwise", "compensation"):
            body.pop(nested, None)
        out[step.id] = body
    return out


def summary(old: PipelineDefinition, new: PipelineDefinition) -> DiffSummary:
    """Added, removed and changed steps (by id), whether their order changed, inputs/outputs."""
    a, b = _flat(old), _flat(new)
    result = DiffSummary(
        inputs_changed=json.dumps(canonical(old).get("inputs"), sort_keys=True)
        != json.dumps(canonical(new).get("inputs"), sort_keys=True),
        outputs_changed=old.outputs != new.outputs,
    )
    for sid in b.keys() - a.keys():
        result.added.append(StepChange(id=sid, type=str(b[sid].get("type", ""))))
    for sid in a.keys() - b.keys():
        result.removed.append(StepChange(id=sid, type=str(a[sid].get("type", ""))))
    for sid in a.keys() & b.keys():
        if a[sid] != b[sid]:
            keys = sorted(k for k in a[sid].keys() | b[sid].keys() if a[sid].get(k) != b[sid].get(k))
            result.changed.append(StepChange(id=sid, type=str(b[sid].get("type", "")), fields=keys))
    common = [s for s in a if s in b]
    result.reordered = common != [s for s in b if s in a]
    for items in (result.added, result.removed, result.changed):
        items.sort(key=lambda c: c.id)
    return result


def unified(old_yaml: str, new_yaml: str, old_label: str, new_label: str) -> str:
    """A unified diff of two canonical YAML texts."""
    return "".join(
        difflib.unified_diff(
            old_yaml.splitlines(keepends=True),
            new_yaml.splitlines(keepends=True),
            fromfile=old_label,
            tofile=new_label,
        )
    )
