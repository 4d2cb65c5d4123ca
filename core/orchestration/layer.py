"""The ``open_layer`` step of batched ``Orchestration`` runs: one local activity per plan layer.

It writes the progress queued so far (for the first layer ``run.started``, ``plan.ready`` and the
layer's ``subtask.started``), stores the proposer prompts of the layer's subtasks and, for the
first layer of a supplied plan, takes the catalog snapshot, all at once. Pure pydantic.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from core.orchestration.progress import RecordProgressInput
from core.orchestration.steps import LoadModelsInput, ModelsSnapshot, PreparedPrompt, PrepareSubtaskInput


class OpenLayerInput(BaseModel):
    tenant_id: str
    workflow_id: str
    progress: RecordProgressInput | None = None
    load_models: LoadModelsInput | None = None
    prepare: list[PrepareSubtaskInput] = Field(default_factory=list)


class OpenLayerResult(BaseModel):
    snapshot: ModelsSnapshot | None = None
    prepared: list[PreparedPrompt] = Field(default_factory=list)
