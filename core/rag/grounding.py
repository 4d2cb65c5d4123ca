"""The ``retrieval`` capability of NEXUS runs: ground subtasks on the tenant's knowledge bases.

A run that names ``knowledge_base_ids`` has its retrieval subtasks and its root subtasks (no
dependencies; a one-step plan's only subtask is one) grounded: the subtask instruction is
searched (hybrid, tenant-scoped) in each knowledge base, the best passages are added to the
panel's prompt labelled ``[K:<chunk id>]`` and stored as the subtask's sources (payload
``{workflow_id}:sources:{subtask_id}``), which the synthesis attaches to its citations, marking
the ones the final answer cites. Labels are chunk ids, so a chunk shown to two subtasks has one
label and citations stay unambiguous after synthesis.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db.models import Payload
from core.errors import NotFound
from core.orchestration.contracts import Citation, KbSource, Subtask, SubtaskCapability
from core.providers.registry import ProviderRegistry
from core.rag.embed import embedder_for
from core.rag.search import Result, search
from core.rag.store import RagRepository

TOP_K = 5
PASSAGE_CHARS = 1_500
SYSTEM_HINT = (
    "Knowledge-base passages are given: base your answer on them, and cite each passage you use "
    "by its label, e.g. [K:12]. If they do not cover the subtask, say so."
)
SYNTHESIS_HINT = (
    "Step results cite knowledge-base passages as [K:<id>]: keep those citations next to the "
    "statements they support."
)
_LABEL = re.compile(r"\[K:(\d{1,19})\]")


def grounded(subtask: Subtask) -> bool:
    """Whether a subtask of a run with knowledge bases searches them."""
    return subtask.capability is SubtaskCapability.retrieval or not subtask.depends_on


def label(chunk_id: int) -> str:
    """How a chunk is shown and cited: ``[K:<chunk id>]``."""
    return f"[K:{chunk_id}]"


def sources_key(workflow_id: str, subtask_id: str) -> str:
    """Payload idempotency key of a subtask's sources."""
    return f"{workflow_id}:sources:{subtask_id}"


async def retrieve(
    sessions: async_sessionmaker[AsyncSession],
    registry: ProviderRegistry | None,
    tenant_id: str,
    kb_ids: list[str],
    query: str,
    top_k: int = TOP_K,
) -> list[tuple[str, Result]]:
    """The ``top_k`` best passages over the tenant's knowledge bases (by fused score). A
    knowledge base that no longer exists (or is another tenant's) contributes nothing."""
    found: list[tuple[str, Result]] = []
    for kb_id in dict.fromkeys(kb_ids):
        async with sessions() as session:
            repo = RagRepository.from_session(session)
            try:
                kb = await repo.get_kb(tenant_id, kb_id)
            except NotFound:
                continue
            pending = kb.pending_embedding_model
            results = await search(
                repo,
                embedder_for(kb.embedding_model, registry),
                tenant_id=tenant_id,
                kb_id=kb.id,
                query=query[:2000],
                top_k=top_k,
                pending_embedder=embedder_for(pending, registry) if pending else None,
            )
        found += [(str(kb.id), r) for r in results]
    found.sort(key=lambda pair: -pair[1].score)
    return found[:top_k]


def sources_of(found: list[tuple[str, Result]]) -> list[KbSource]:
    """The stored/recorded form of retrieved passages."""
    return [
        KbSource(
            label=label(r.hit.chunk_id),
            knowledge_base_id=kb_id,
            document_id=r.hit.document_id,
            document_title=r.hit.document_title,
            chunk_index=r.hit.chunk_index,
            score=r.score,
        )
        for kb_id, r in found
    ]


def passages_block(found: list[tuple[str, Result]]) -> str:
    """The prompt block of retrieved passages."""
    lines = [
        f"{label(r.hit.chunk_id)} ({r.hit.document_title}) {r.hit.text[:PASSAGE_CHARS]}" for _, r in found
    ]
    return "Knowledge-base passages:\n\n" + "\n\n".join(lines)


def ground_messages(messages: list[dict[str, str]], found: list[tuple[str, Result]]) -> list[dict[str, str]]:
    """Subtask messages with the passages appended to the user turn and the hint to the system."""
    out = [dict(m) for m in messages]
    out[0]["content"] = f"{out[0]['content']} {SYSTEM_HINT}"
    out[-1]["content"] = f"{out[-1]['content']}\n\n{passages_block(found)}"
    return out


def cited_labels(text: str) -> set[str]:
    """The ``[K:<id>]`` labels in ``text``."""
    return {f"[K:{m}]" for m in _LABEL.findall(text)}


async def load_sources(
    session: AsyncSession, tenant_id: str, workflow_id: str, subtask_ids: list[str]
) -> dict[str, list[KbSource]]:
    """The stored sources of the given subtasks (subtasks that were not grounded are absent)."""
    keys = {sources_key(workflow_id, sid): sid for sid in subtask_ids}
    rows = await session.execute(
        select(Payload.idempotency_key, Payload.data).where(
            Payload.tenant_id == tenant_id, Payload.idempotency_key.in_(list(keys))
        )
    )
    out: dict[str, list[KbSource]] = {}
    for key, data in rows:
        out[keys[str(key)]] = [KbSource.model_validate(s) for s in json.loads(bytes(data).decode("utf-8"))]
    return out


def with_sources(
    citations: list[Citation], sources: Mapping[str, list[KbSource]], answer: str
) -> list[Citation]:
    """Citations carrying their subtask's sources, each marked ``cited`` when ``answer`` cites it."""
    cited = cited_labels(answer)
    return [
        c.model_copy(
            update={
                "sources": [
                    s.model_copy(update={"cited": s.label in cited}) for s in sources.get(c.subtask_id, [])
                ]
            }
        )
        for c in citations
    ]


def parse_kb_ids(values: list[str]) -> list[str]:
    """Canonical knowledge-base ids (UUIDs); anything else is :class:`NotFound`."""
    out = []
    for value in values:
        try:
            out.append(str(uuid.UUID(value)))
        except ValueError:
            raise NotFound("knowledge base not found") from None
    return list(dict.fromkeys(out))
