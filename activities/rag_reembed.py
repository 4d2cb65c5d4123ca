"""Activities of ``ReembedKnowledgeBase``: re-embed a batch of chunks, then switch the model.

Both are idempotent: a batch only selects chunks whose stored ``embedding_model`` is not the
target (a retry after a crash finds the written ones done), and the switch is a guarded UPDATE
that only flips once no chunk is left on another model.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.rag import embed_and_store
from activities.runs import require_own_workflow
from core.providers.registry import ProviderRegistry
from core.rag.chunk import embedding_text
from core.rag.contracts import (
    ReembedBatchInput,
    ReembedBatchResult,
    ReembedSwitchInput,
    ReembedSwitchResult,
)
from core.rag.store import RagRepository


class ReembedActivities:
    """``rag_reembed_batch`` and ``rag_reembed_switch``, bound to the worker's clients."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], registry: ProviderRegistry | None) -> None:
        self._sessions = sessions
        self._registry = registry

    @activity.defn(name="rag_reembed_batch")
    async def rag_reembed_batch(self, inp: ReembedBatchInput) -> ReembedBatchResult:
        """Re-embed up to ``batch`` chunks of the knowledge base not yet on ``target_model``."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        kb_id = uuid.UUID(inp.kb_id)
        async with self._sessions() as session:
            pending = await RagRepository.from_session(session).chunks_to_reembed(
                inp.tenant_id, kb_id, inp.target_model, inp.batch
            )
            todo = [(c.id, embedding_text(c.text, c.metadata_)) for c in pending]
        return ReembedBatchResult(
            embedded=await embed_and_store(
                self._sessions, self._registry, inp.tenant_id, inp.target_model, todo
            )
        )

    @activity.defn(name="rag_reembed_switch")
    async def rag_reembed_switch(self, inp: ReembedSwitchInput) -> ReembedSwitchResult:
        """Make ``target_model`` the knowledge base's model once every chunk carries its vectors.

        Under a row lock on the knowledge base; chunks embedded meanwhile with another model
        (an ingestion that started before the switch) are reported as ``remaining``. A retry
        after the flip finds the model already switched and reports success."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        kb_id = uuid.UUID(inp.kb_id)
        async with self._sessions() as session, session.begin():
            repo = RagRepository.from_session(session)
            kb = await repo.lock_kb(inp.tenant_id, kb_id)
            if kb.embedding_model == inp.target_model and kb.pending_embedding_model is None:
                return ReembedSwitchResult(switched=True)
            if kb.pending_embedding_model != inp.target_model:
                raise ApplicationError(
                    "the knowledge base is no longer switching to this model",
                    type="BadInput",
                    non_retryable=True,
                )
            remaining = await repo.count_not_on_model(inp.tenant_id, kb_id, inp.target_model)
            if remaining:
                return ReembedSwitchResult(switched=False, remaining=remaining)
            await repo.update_kb(kb, embedding_model=inp.target_model, pending_embedding_model=None)
        return ReembedSwitchResult(switched=True)
