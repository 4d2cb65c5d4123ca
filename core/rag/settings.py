"""Operator settings of knowledge bases (``NEXUS_RAG__*`` once mounted on the root settings)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

LOCAL_MODEL = "local/all-minilm-l6-v2"


class RagSettings(BaseModel):
    """Upload limits, chunking defaults and retrieval knobs."""

    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0, description="Largest accepted upload.")
    max_text_chars: int = Field(2_000_000, gt=0, description="Largest parsed text kept per document.")
    chunk_tokens: int = Field(200, ge=32, le=510, description="Default chunk size in MiniLM tokens.")
    chunk_overlap: int = Field(30, ge=0, le=200, description="Default chunk overlap in tokens.")
    embed_batch: int = Field(32, ge=1, le=512, description="Chunks embedded per activity call.")
    answer_min_score: float = Field(
        0.3, ge=-1, le=1, description="Best cosine similarity below which /answer says not found."
    )


def rag_settings(settings: Any) -> RagSettings:
    """The ``rag`` section of the root settings, or the defaults while it is not mounted."""
    found = getattr(settings, "rag", None)
    return found if isinstance(found, RagSettings) else RagSettings()
