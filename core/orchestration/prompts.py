"""Proposer prompts of a plan layer, stored in the caller's transaction (one round trip each).

The batched ``open_layer`` step stores the prompts of every subtask without knowledge-base
grounding here; grounded subtasks (the ``retrieval`` capability with knowledge bases) go through
the ``prepare_subtask`` activity, which searches first. Both store the same JSON list of
messages under the same idempotency key, so either path gives the same reference.
"""

from __future__ import annotations

import json

from sqlalchemy.ext.asyncio import AsyncSession

from core.orchestration.steps import PreparedPrompt, PrepareSubtaskInput
from core.orchestration.synthesis import subtask_messages
from core.payloads import PayloadStore
from core.providers import Message
from core.providers.tokens import count_messages


def prompt_key(workflow_id: str, subtask_id: str) -> str:
    """The idempotency key of a subtask's stored prompt."""
    return f"{workflow_id}:prompt:{subtask_id}"


async def store_prompts(
    session: AsyncSession, store: PayloadStore, inputs: list[PrepareSubtaskInput]
) -> list[PreparedPrompt]:
    """Store the proposer messages of each subtask (task and dependency answers read once)."""
    if not inputs:
        return []
    tenant_id = inputs[0].tenant_id
    refs = {inputs[0].task.id: inputs[0].task}
    for inp in inputs:
        refs.update({ref.id: ref for ref in inp.dependency_answers.values()})
    texts = dict(zip(refs, await store.get_many(session, tenant_id, list(refs.values())), strict=True))
    prepared = []
    for inp in inputs:
        deps = {sid: texts[ref.id] for sid, ref in inp.dependency_answers.items()}
        messages = [
            Message.model_validate(m) for m in subtask_messages(texts[inp.task.id], inp.subtask, deps)
        ]
        raw = json.dumps([m.model_dump(exclude_none=True) for m in messages])
        ref = await store.put(
            session,
            tenant_id,
            raw,
            idempotency_key=prompt_key(inp.workflow_id, inp.subtask.id),
            content_type="application/json",
        )
        prepared.append(PreparedPrompt(messages=ref, prompt_tokens=count_messages(messages)))
    return prepared
