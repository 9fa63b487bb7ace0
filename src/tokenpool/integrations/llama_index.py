"""`TokenPoolEmbedding`: a LlamaIndex embedding model on a local model folder, through `tokenpool.Encoder`
(the model's query and document prompts unless ``query_prompt`` / ``document_prompt`` override them).
Needs the ``llama-index`` extra: ``pip install "tokenpool[encode,llama-index]"``.
"""

from __future__ import annotations

import asyncio
import copy
import os
import sys
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import BeforeValidator, ConfigDict, Field, PrivateAttr

from tokenpool.core.strategies import is_auto
from tokenpool.errors import is_int
from tokenpool.model.options import EncoderOptions
from tokenpool.model.request import EncodeRequest
from tokenpool.model.texts import (
    DOCUMENT_PROMPT_NAMES,
    QUERY_PROMPT_NAME,
    as_texts,
    check_encodable,
    check_text,
    resolve_prompt,
    side_prompt,
)

__all__ = ["TokenPoolEmbedding", "sparse_functions"]

# The prompts (checked as texts) and the fields that decide whether LlamaIndex's text-keyed embeddings_cache may
# hand one side the other's vector.
_PROMPT_FIELDS = ("query_prompt", "document_prompt")
_CACHE_FIELDS = (*_PROMPT_FIELDS, "embeddings_cache")


# A whole number as the Encoder takes one (`is_int`: numpy's integers too, which pydantic's strict mode refused),
# then checked strictly: pydantic's lax mode would read "8", 8.0 and True as 8.
Count = Annotated[int, BeforeValidator(lambda value: int(value) if is_int(value) else value)]


def _plain(value: Any) -> Any:
    """A path, numpy bool, torch dtype or torch device as the Encoder takes it, kept as its plain value ("float32",
    "cpu", True) so that to_dict() / to_json() stay plain; imports nothing (only a loaded library's can be held)."""
    numpy, torch = sys.modules.get("numpy"), sys.modules.get("torch")
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if numpy is not None and isinstance(value, numpy.bool_):
        return bool(value)
    if torch is not None and isinstance(value, (torch.dtype, torch.device)):
        return str(value).removeprefix("torch.")
    return value


# then checked as declared (a bool strictly: pydantic's lax mode would read "yes" as True)
Flag = Annotated[bool, BeforeValidator(_plain)]
Text = Annotated[str, BeforeValidator(_plain)]


def _about(name: str) -> str:
    return EncoderOptions.info(name).help


class TokenPoolEmbedding(BaseEmbedding):
    """A LlamaIndex ``BaseEmbedding`` backed by `tokenpool.Encoder` (correct masking, any pooling strategy):
    pass either the Encoder options (``model``, ``pooling``, ``normalize``, ...) or a ready ``encoder``."""

    # The Encoder options (help texts from `EncoderOptions`); with `encoder=` given they are read from it. Booleans
    # and integers are strict: pydantic would read trust_remote_code="yes" as True and truncate_dim=True as 1.
    # Frozen: the Encoder is built once, so a later `emb.truncate_dim = 8` changed nothing but to_dict(); the
    # other fields are validated when assigned too (`emb.embed_batch_size = 0` was taken silently).
    model_config = ConfigDict(validate_assignment=True)
    model: str | None = Field(frozen=True, default=None, description=_about("model"))
    pooling: str | list[str] = Field(frozen=True, default="auto", description=_about("pooling"))
    normalize: Flag | None = Field(frozen=True, default=None, strict=True, description=_about("normalize"))
    truncate_dim: Count | None = Field(frozen=True, default=None, strict=True, gt=0, description=_about("truncate_dim"))
    max_length: Count | None = Field(frozen=True, default=None, strict=True, gt=0, description=_about("max_length"))
    long_documents: str = Field(frozen=True, default="truncate", description=_about("long_documents"))
    window_stride: Count | None = Field(frozen=True, default=None, strict=True, gt=0, description=_about("window_stride"))
    add_eos: Flag | None = Field(frozen=True, default=None, strict=True, description=_about("add_eos"))
    device: Text | None = Field(frozen=True, default=None, description=_about("device"))
    dtype: Text | None = Field(frozen=True, default=None, description=_about("dtype"))
    runtime: str = Field(frozen=True, default="torch", description=_about("runtime"))
    onnx_file: Text | None = Field(frozen=True, default=None, description=_about("onnx_file"))
    revision: str | None = Field(frozen=True, default=None, description=_about("revision"))
    cache_dir: Text | None = Field(frozen=True, default=None, description=_about("cache_dir"))
    trust_remote_code: bool = Field(frozen=True, default=False, strict=True, description=_about("trust_remote_code"))
    query_prompt: str | None = Field(default=None, description="Prefix for queries; None = the model's.")
    document_prompt: str | None = Field(default=None, description="Prefix for documents; None = the model's.")
    embed_batch_size: Count = Field(default=32, strict=True, gt=0, le=2048, description="Texts per forward pass.")

    _encoder: Any = PrivateAttr()

    def __init__(self, model: str | None = None, *, encoder: Any = None, **kwargs: Any) -> None:
        if kwargs.get("class_name") == self.class_name():  # what model_dump() / to_dict() add to every dump
            del kwargs["class_name"]
        unknown = sorted(set(kwargs) - set(type(self).model_fields))
        if unknown:  # pydantic would drop them silently (a typo such as normalise=False)
            raise TypeError(f"TokenPoolEmbedding got unknown option(s) {unknown}")
        from tokenpool.model.encoder import Encoder

        if encoder is not None:
            if not isinstance(encoder, Encoder):  # (a folder meant as model=: no AttributeError from deep inside)
                raise TypeError(f"encoder must be a tokenpool Encoder (a model folder is model=), got "
                                f"{type(encoder).__name__} {encoder!r:.60}")  # fmt: skip
            default = EncoderOptions.default
            given = sorted(n for n in EncoderOptions.names() if n != "pooling" and kwargs.get(n, default(n)) != default(n))
            if not is_auto(kwargs.get("pooling", "auto")):  # ("AUTO" is "auto", as everywhere)
                given.append("pooling")
            if model is not None or given:
                raise ValueError("pass either encoder= or Encoder options, not both (got encoder and "
                                 f"{given or ['model']})")  # fmt: skip
            read = ("normalize", "truncate_dim", "max_length", "long_documents", "window_stride", "add_eos",
                    "runtime")  # fmt: skip
            kwargs.update(
                {name: getattr(encoder, name) for name in read},
                model=str(encoder.model_path),
                # "auto" also keeps the folder's modules after pooling (Dense, ...), which a named pooling drops
                pooling="auto" if is_auto(encoder.options.pooling) else list(encoder.strategies),
                device=str(encoder.device),
                # the options it was built with, not the runner's precision (an fp16 ONNX file's float16, which
                # the onnx runtime refuses as an option)
                dtype=encoder.options.dtype,
                onnx_file=encoder.options.onnx_file,
                trust_remote_code=bool(getattr(encoder, "trust_remote_code", False)),
            )
        else:
            kwargs["model"] = None if model is None else str(model)
        super().__init__(**kwargs)
        options = EncoderOptions.from_mapping(self)
        EncodeRequest().check(options)  # what every embed call is (a window_stride no call reads is refused)
        if encoder is None:
            encoder = Encoder.from_options(options)
        self._encoder = encoder
        if self.model_name == "unknown":
            self.model_name = str(encoder.model_path)
        self._check_cache()

    def __getstate__(self) -> dict[str, Any]:
        """BaseComponent's state without the Encoder, which unpickling rebuilds from the fields (BaseComponent's
        ``__setstate__`` calls ``__init__``); BaseComponent pickled it whole, every weight, until a lock failed."""
        clone = copy.copy(self)  # (its own private dict: another thread may be embedding with this one)
        clone.__pydantic_private__.pop("_encoder", None)
        return super(TokenPoolEmbedding, clone).__getstate__()

    def __setstate__(self, state: dict[str, Any]) -> None:
        # BaseComponent's falls back to the bare state when __init__ fails: an embedding without an Encoder
        self.__init__(**state["__dict__"])  # type: ignore[misc]

    def __setattr__(self, name: str, value: Any) -> None:
        """Assignment (validated by pydantic); a prompt that is no text, or a prompt or cache that would let a query
        get a cached document's vector, is refused here and not kept: a cached text never reaches the model."""
        if name not in _CACHE_FIELDS:
            return super().__setattr__(name, value)
        before = getattr(self, name)
        super().__setattr__(name, value)
        try:
            self._check_cache()
        except ValueError:
            super().__setattr__(name, before)
            raise

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> TokenPoolEmbedding:
        """A copy sharing the Encoder (``deep``: its own); ``update`` is checked as an assignment is, so an Encoder
        option is refused (pydantic's would take ``truncate_dim=8`` unchecked, with the vectors left as they were)."""
        copied = super().model_copy(deep=deep)
        for name, value in (update or {}).items():
            setattr(copied, name, value)  # (validate_assignment: checked, and frozen for the Encoder options)
        return copied

    @classmethod
    def class_name(cls) -> str:
        return "TokenPoolEmbedding"

    @property
    def encoder(self) -> Any:
        """The `tokenpool.Encoder` that computes the vectors."""
        return self._encoder

    def _check_cache(self) -> None:
        """The prompts given are texts (`check_encodable`, naming the field); LlamaIndex's ``embeddings_cache`` keys
        vectors by their text alone, queries and documents alike: refused where the two sides embed a text
        differently (a query would get a cached document's vector)."""
        for field in _PROMPT_FIELDS:
            if getattr(self, field) is not None:
                check_encodable(field, getattr(self, field))
        if self.embeddings_cache is None:
            return
        config = self._encoder.config

        def text(given: str | None, names: tuple[str, ...]) -> str:  # the prompt a side embeds with
            prompt, name = side_prompt(config, names) if given is None else (given, None)
            return resolve_prompt(config, prompt, name) or ""

        query = text(self.query_prompt, (QUERY_PROMPT_NAME,))
        document = text(self.document_prompt, DOCUMENT_PROMPT_NAMES)
        if query != document:
            raise ValueError(f"embeddings_cache keys vectors by their text alone, but this model embeds queries "
                             f"with the prompt {query!r} and documents with {document!r}: a query would get a "
                             "cached document's vector; leave embeddings_cache out, or set query_prompt and "
                             "document_prompt equal")  # fmt: skip

    def _embed(self, texts: list[str], *, query: bool) -> list[Embedding]:
        self._check_cache()  # (again: query_prompt and document_prompt may have changed)
        if not texts:
            return []
        override = self.query_prompt if query else self.document_prompt
        # the Encoder is thread-safe (it guards its tokenizer), so async calls may overlap; an override
        # prompt=... replaces the side's prompt (encode_queries / encode_documents fill it only when None)
        encode = self._encoder.encode_queries if query else self._encoder.encode_documents
        return encode(texts, batch_size=self.embed_batch_size, prompt=override).tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([check_text(query, "query")], query=True)[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([check_text(text, "text")], query=False)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(list(texts), query=False)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)

    # LlamaIndex's loops iterate their argument (a str would give one vector per character) and split it into
    # batches before tokenpool sees a text: each is checked first, so that a bad one is named by its own place
    def get_text_embedding_batch(self, texts: list[str], show_progress: bool = False, **kwargs: Any) -> list[Embedding]:
        texts = _texts(texts, "get_text_embedding_batch", "one vector each")
        return super().get_text_embedding_batch(texts, show_progress, **kwargs)

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        texts = _texts(texts, "aget_text_embedding_batch", "one vector each")
        return await super().aget_text_embedding_batch(texts, show_progress, **kwargs)

    def get_agg_embedding_from_queries(self, queries: list[str], agg_fn: Callable[..., Embedding] | None = None) -> Embedding:
        queries = _texts(queries, "get_agg_embedding_from_queries", "one query each", name="queries")
        return super().get_agg_embedding_from_queries(queries, agg_fn)

    async def aget_agg_embedding_from_queries(
        self, queries: list[str], agg_fn: Callable[..., Embedding] | None = None
    ) -> Embedding:
        queries = _texts(queries, "aget_agg_embedding_from_queries", "one query each", name="queries")
        return await super().aget_agg_embedding_from_queries(queries, agg_fn)


def _texts(texts: Any, what: str, each: str, *, name: str = "texts") -> list[str]:
    """``texts`` as a list of str, each checked (`as_texts`, naming a bad one as ``name[i]``); a str where a list
    of texts is meant is a TypeError naming it (iterating it would give one row or vector per character)."""
    if isinstance(texts, str):
        raise TypeError(f"{what} takes a list of texts ({each}), got the str {texts!r:.60}")
    return as_texts(texts, name=name)[1]


SparseFunction = Callable[[list[str]], tuple[list[list[int]], list[list[float]]]]


def sparse_functions(
    encoder: Any, *, top_k: int | None = None, threshold: float = 0.0, batch_size: int = 32
) -> tuple[SparseFunction, SparseFunction]:
    """``(sparse_doc_fn, sparse_query_fn)`` for LlamaIndex vector stores that take sparse vectors (e.g.
    ``QdrantVectorStore(enable_hybrid=True, sparse_doc_fn=..., sparse_query_fn=...)``): each maps texts to
    ``(indices per text, values per text)``, from a SPLADE ``encoder``'s `encode_sparse` with the model's
    document / query prompts. (Dense precisions are not offered here: `BaseEmbedding` carries float lists.)"""
    if not getattr(encoder, "is_sparse", False):
        raise ValueError(f"sparse_functions needs a SPLADE encoder; this one pools {list(encoder.strategies)}")
    # every call's options, checked now as each call's encode would check them (not at the first call)
    checked = EncodeRequest(output="sparse", batch_size=batch_size, top_k=top_k, threshold=threshold).check()
    batch_size, top_k, threshold = checked.batch_size, checked.top_k, checked.threshold
    document = side_prompt(encoder.config, DOCUMENT_PROMPT_NAMES)
    query = side_prompt(encoder.config, (QUERY_PROMPT_NAME,))  # (prompt, prompt_name), as encode_queries picks

    def make(side: tuple[str | None, str | None]) -> SparseFunction:
        def encode(texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
            items = _texts(texts, "a sparse function", "one row each")
            matrix = encoder.encode_sparse(
                items, batch_size=batch_size, prompt=side[0], prompt_name=side[1], top_k=top_k,
                threshold=threshold,
            )  # fmt: skip
            bounds = matrix.indptr.tolist()
            rows = list(zip(bounds[:-1], bounds[1:], strict=True))
            indices, values = matrix.indices.tolist(), matrix.data.tolist()
            return [indices[a:b] for a, b in rows], [values[a:b] for a, b in rows]

        return encode

    return make(document), make(query)
