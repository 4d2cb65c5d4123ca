"""Response shapes of ``/v1/pipelines`` and the YAML/JSON body reader."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import yaml
from fastapi import Request
from pydantic import BaseModel, Field

from core.db.pipeline_models import Pipeline, PipelineVersion
from core.errors import BadRequest, ValidationFailed
from core.pipelines import diff

_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


class PipelineOut(BaseModel):
    id: str
    name: str
    description: str
    latest_version: int
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, row: Pipeline) -> PipelineOut:
        return cls(
            id=row.id,
            name=row.name,
            description=row.description,
            latest_version=row.latest_version,
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class VersionOut(BaseModel):
    pipeline_id: str
    version: int
    sha256: str
    comment: str
    created_by: str
    created_at: dt.datetime
    definition: dict[str, Any] | None = None
    canonical_yaml: str | None = None

    @classmethod
    def of(cls, row: PipelineVersion, full: bool = True) -> VersionOut:
        return cls(
            pipeline_id=row.pipeline_id,
            version=row.version,
            sha256=row.sha256,
            comment=row.comment,
            created_by=row.created_by,
            created_at=row.created_at,
            definition=row.definition if full else None,
            canonical_yaml=row.canonical_yaml if full else None,
        )


class PipelineDetail(PipelineOut):
    latest: VersionOut


class PipelinePage(BaseModel):
    data: list[PipelineOut]
    next_cursor: str | None = None


class DiffOut(BaseModel):
    pipeline_id: str
    from_version: int = Field(alias="from")
    to_version: int = Field(alias="to")
    unified: str
    summary: diff.DiffSummary

    model_config = {"populate_by_name": True}


async def document(request: Request) -> dict[str, Any]:
    """The request body as a mapping, from JSON or YAML (by Content-Type)."""
    body = await request.body()
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    try:
        if ctype in _YAML_TYPES:
            raw = yaml.safe_load(body.decode("utf-8"))
        elif ctype in ("application/json", ""):
            raw = json.loads(body)
        else:
            raise BadRequest("send the definition as application/json or application/yaml")
    except (ValueError, yaml.YAMLError) as exc:
        raise ValidationFailed("the body is not valid JSON or YAML") from exc
    if not isinstance(raw, dict):
        raise ValidationFailed("a pipeline definition is an object")
    return raw
