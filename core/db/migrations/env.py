"""Alembic environment: runs migrations over the async engine from settings (or -x url=…)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

import core.db.approval_models  # noqa: F401  (registers the approvals table on Base.metadata)
import core.db.connector_models  # noqa: F401  (registers the connector tables on Base.metadata)
import core.db.conversation_models  # noqa: F401  (registers the conversation tables on Base.metadata)
import core.db.eval_models  # noqa: F401  (registers the eval tables on Base.metadata)
import core.db.gateway_models  # noqa: F401  (registers the gateway tables on Base.metadata)
import core.db.orchestration_models  # noqa: F401  (registers model_calls on Base.metadata)
import core.db.pipeline_models  # noqa: F401  (registers the pipeline tables on Base.metadata)
import core.db.rag_models  # noqa: F401  (registers the knowledge-base tables on Base.metadata)
import core.db.reliability_models  # noqa: F401  (registers consensus_votes on Base.metadata)
from core.db.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return str(url)
    from core.config import get_settings

    return get_settings().database.url


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_main())
