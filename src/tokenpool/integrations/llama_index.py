"""`TokenPoolEmbedding`: a LlamaIndex embedding model that runs a local model folder through `tokenpool.Encoder`.

Queries get the model's query prompt and documents its document prompt (from the model's
``config_sentence_transformers.json``) unless ``query_prompt`` / ``document_prompt`` override them.
Needs the ``llama-index`` extra: ``pip install "tokenpool[encode,llama-index]"``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import Field, PrivateAttr

__all__ = ["TokenPoolEmbedding"]

# Options that configure the Encoder; with `encoder=` given they are read from it instead.
_ENCODER_FIELDS = ("model", "pooling", "normalize", "truncate_dim", "max_length", "device", "dtype")


class TokenPoolEmbedding(BaseEmbedding):
    """A LlamaIndex ``BaseEmbedding`` backed by `tokenpool.Encoder` (correct masking, any pooling strategy).

    Pass either the Encoder options (``model``, ``pooling``, ``normalize``, ...) or a ready ``encoder``.
    """

    model: str | None = Field(default=None, description="Model folder or hub id; None = all-MiniLM-L6-v2.")
    pooling: str | list[str] = Field(
        default="auto", description="Strategy name(s), or 'auto' = model config."
    )
    normalize: bool | None = Field(
        default=None, description="L2-normalise; None = as the model's config says."
    )
    truncate_dim: int | None = Field(default=None, gt=0, description="Matryoshka: keep the first k dims.")
    max_length: int | None = Field(default=None, gt=0, description="Token limit; None = the model's.")
    device: str | None = Field(default=None, description="torch device; None = CUDA when available.")
    dtype: str | None = Field(
        default=None, description="torch dtype name, e.g. 'float16'; None = the model's."
    )
    query_prompt: str | None = Field(default=None, description="Prefix for queries; None = the model's.")
    document_prompt: str | None = Field(default=None, description="Prefix for documents; None = the model's.")
    embed_batch_size: int = Field(default=32, gt=0, le=2048, description="Texts per forward pass.")

    _encoder: Any = PrivateAttr()
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, model: str | None = None, *, encoder: Any = None, **kwargs: Any) -> None:
        if encoder is not None:
            given = sorted(name for name in _ENCODER_FIELDS if kwargs.get(name) is not None)
            if model is not None or given or kwargs.get("pooling", "auto") != "auto":
                raise ValueError(
                    f"pass either encoder= or Encoder options, not both (got encoder and {given or ['model']})"
                )
            kwargs.update(
                model=str(encoder.model_path),
                pooling=list(encoder.strategies),
                normalize=encoder.normalize,
                truncate_dim=encoder.truncate_dim,
                max_length=encoder.max_length,
                device=str(encoder.device),
                dtype=str(encoder.dtype).removeprefix("torch."),
            )
        else:
            kwargs["model"] = None if model is None else str(model)
        super().__init__(**kwargs)
        if encoder is None:
            from tokenpool.model.encoder import Encoder

            encoder = Encoder(
                self.model,
                pooling=self.pooling,
                device=self.device,
                dtype=self.dtype,
                max_length=self.max_length,
                normalize=self.normalize,
                truncate_dim=self.truncate_dim,
            )
        self._encoder = encoder
        if self.model_name == "unknown":
            self.model_name = str(encoder.model_path)

    @classmethod
    def class_name(cls) -> str:
        return "TokenPoolEmbedding"

    @property
    def encoder(self) -> Any:
        """The `tokenpool.Encoder` that computes the vectors."""
        return self._encoder

    def _embed(self, texts: list[str], *, query: bool) -> list[Embedding]:
        if not texts:
            return []
        override = self.query_prompt if query else self.document_prompt
        with self._lock:  # fast tokenizers are not safe to share between threads
            if override is not None:
                vectors = self._encoder.encode(texts, batch_size=self.embed_batch_size, prompt=override)
            elif query:
                vectors = self._encoder.encode_queries(texts, batch_size=self.embed_batch_size)
            else:
                vectors = self._encoder.encode_documents(texts, batch_size=self.embed_batch_size)
        return vectors.tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query], query=True)[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text], query=False)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(list(texts), query=False)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
