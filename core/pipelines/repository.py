"""All SQL of pipelines and their immutable versions (tenant-scoped; callers own the transaction)."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.pipeline_models import Pipeline, PipelineEffect, PipelineVersion
from core.errors import Conflict, NotFound
from core.pipelines.definition import PipelineDefinition
from core.pipelines.diff import canonical, canonical_yaml


class PipelineRepository:
    """Tenant-scoped access to ``pipelines`` and ``pipeline_versions``."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @classmethod
    def from_session(cls, session: AsyncSession) -> PipelineRepository:
        return cls(session)

    async def create(
        self, tenant_id: str, pipeline_id: str, defn: PipelineDefinition, created_by: str
    ) -> tuple[Pipeline, PipelineVersion]:
        """Insert a pipeline with version 1; :class:`Conflict` when the id is taken."""
        inserted = (
            await self.session.execute(
                insert(Pipeline)
                .values(
                    tenant_id=tenant_id,
                    id=pipeline_id,
                    name=defn.name,
                    description=defn.description,
                    latest_version=1,
                    created_by=created_by,
                )
                .on_conflict_do_nothing()
                .returning(Pipeline.id)
            )
        ).scalar_one_or_none()
        if inserted is None:
            raise Conflict(f"pipeline {pipeline_id!r} already exists; POST a new version instead")
        version = await self._insert_version(tenant_id, pipeline_id, 1, defn, created_by, "")
        return await self.get(tenant_id, pipeline_id), version

    async def add_version(
        self, tenant_id: str, pipeline_id: str, defn: PipelineDefinition, created_by: str, comment: str = ""
    ) -> PipelineVersion:
        """Append the next immutable version (the row lock serialises concurrent writers)."""
        row = (
            await self.session.execute(
                select(Pipeline)
                .where(Pipeline.tenant_id == tenant_id, Pipeline.id == pipeline_id)
                .with_for_update()
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("pipeline not found")
        number = row.latest_version + 1
        version = await self._insert_version(tenant_id, pipeline_id, number, defn, created_by, comment)
        await self.session.execute(
            update(Pipeline)
            .where(Pipeline.tenant_id == tenant_id, Pipeline.id == pipeline_id)
            .values(
                latest_version=number,
                name=defn.name,
                description=defn.description,
                updated_at=dt.datetime.now(dt.UTC),
            )
        )
        return version

    async def _insert_version(
        self,
        tenant_id: str,
        pipeline_id: str,
        number: int,
        defn: PipelineDefinition,
        created_by: str,
        comment: str,
    ) -> PipelineVersion:
        text = canonical_yaml(defn)
        row = PipelineVersion(
            tenant_id=tenant_id,
            pipeline_id=pipeline_id,
            version=number,
            definition=canonical(defn),
            canonical_yaml=text,
            sha256=hashlib.sha256(text.encode()).hexdigest(),
            comment=comment,
            created_by=created_by,
        )
        self.session.add(row)
        await self.session.flush()
        return row

    async def get(self, tenant_id: str, pipeline_id: str) -> Pipeline:
        """The pipeline, or :class:`NotFound` (also for another tenant's)."""
        row = (
            await self.session.execute(
                select(Pipeline)
                .where(Pipeline.tenant_id == tenant_id, Pipeline.id == pipeline_id)
                .execution_options(populate_existing=True)
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("pipeline not found")
        return row

    async def page(
        self, tenant_id: str, *, limit: int, after: tuple[str, str] | None = None
    ) -> list[Pipeline]:
        """Newest first, keyset-paginated on (created_at, id); ``after`` is the last row's key."""
        query = select(Pipeline).where(Pipeline.tenant_id == tenant_id)
        if after is not None:
            created = dt.datetime.fromisoformat(after[0])
            query = query.where(
                or_(
                    Pipeline.created_at < created,
                    and_(Pipeline.created_at == created, Pipeline.id < after[1]),
                )
            )
        query = query.order_by(Pipeline.created_at.desc(), Pipeline.id.desc()).limit(limit)
        return list((await self.session.execute(query)).scalars())

    async def version(self, tenant_id: str, pipeline_id: str, number: int | None = None) -> PipelineVersion:
        """One version (the latest when ``number`` is None), or :class:`NotFound`."""
        if number is None:
            number = (await self.get(tenant_id, pipeline_id)).latest_version
        row = (
            await self.session.execute(
                select(PipelineVersion).where(
                    PipelineVersion.tenant_id == tenant_id,
                    PipelineVersion.pipeline_id == pipeline_id,
                    PipelineVersion.version == number,
                )
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("pipeline version not found")
        return row

    async def versions(self, tenant_id: str, pipeline_id: str) -> list[PipelineVersion]:
        """Every version of a pipeline, oldest first."""
        await self.get(tenant_id, pipeline_id)
        rows = await self.session.execute(
            select(PipelineVersion)
            .where(PipelineVersion.tenant_id == tenant_id, PipelineVersion.pipeline_id == pipeline_id)
            .order_by(PipelineVersion.version)
        )
        return list(rows.scalars())


class EffectRepository:
    """Check-then-act records of outbound calls (``pipeline_effects``)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def find(self, tenant_id: str, key: str) -> PipelineEffect | None:
        """The recorded call under ``key``, if one went out and was recorded."""
        return (
            await self.session.execute(
                select(PipelineEffect).where(
                    PipelineEffect.tenant_id == tenant_id, PipelineEffect.idempotency_key == key
                )
            )
        ).scalar_one_or_none()

    async def record(
        self, tenant_id: str, workflow_id: str, key: str, status_code: int, response: dict[str, Any]
    ) -> None:
        """Record a call once (a concurrent duplicate is ignored)."""
        await self.session.execute(
            insert(PipelineEffect)
            .values(
                tenant_id=tenant_id,
                workflow_id=workflow_id,
                idempotency_key=key,
                status_code=status_code,
                response=response,
            )
            .on_conflict_do_nothing(index_elements=["tenant_id", "idempotency_key"])
        )
