"""The retrieval mode contract and registry: ``DOCUMENT_MODES`` maps ``truncate`` and the modes of
`tokenpool.evaluation.longdoc_modes` to `DocumentMode` callables; ``bm25`` (lexical search) and
``hybrid:MODE`` (BM25 fused with MODE's rankings, no extra model pass) need none."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import OptionError
from .common import Label, encode_every_way, split_option
from .longdoc_modes import WHOLE_DOCUMENT_MODES
from .units import DocumentUnits

__all__ = ["BM25_MODE", "DOCUMENT_MODES", "HYBRID_PREFIX", "DocumentMode", "ModePlan", "plan_modes", "truncate_mode"]

BM25_MODE = "bm25"
HYBRID_PREFIX = "hybrid:"


class DocumentMode(Protocol):
    """How the corpus is encoded: texts → `DocumentUnits` for every pooling label, from one pass over the
    model. ``prompt``/``prompt_name`` are the document prompt (resolved as `tokenpool.Encoder` resolves them).
    ``max_batch_tokens`` (padded tokens per forward pass) is passed only when `evaluate_retrieval` is given
    one, so a mode written without it keeps working unbudgeted. A mode may carry ``prepare(encoder)``, called
    before any mode runs, to refuse early what it would fail on later (a missing library)."""

    def __call__(
        self, encoder: Any, texts: Sequence[str], labels: Sequence[Label], *, batch_size: int,
        prompt: str | None, prompt_name: str | None, progress: bool, max_batch_tokens: int | None = None,
    ) -> Mapping[Label, DocumentUnits]: ...  # fmt: skip


def truncate_mode(
    encoder: Any, texts: Sequence[str], labels: Sequence[Label], *, batch_size: int, prompt: str | None,
    prompt_name: str | None, progress: bool, max_batch_tokens: int | None = None,
) -> dict[Label, DocumentUnits]:  # fmt: skip
    """One vector per document from its first max_length tokens (the encoder's own truncation)."""
    vectors = encode_every_way(
        encoder, texts, labels, batch_size=batch_size, prompt=prompt, prompt_name=prompt_name,
        progress=progress, desc="documents", max_batch_tokens=max_batch_tokens, sparse_rows=True,
    )  # fmt: skip
    rows = np.arange(len(texts), dtype=np.int64)
    return {label: DocumentUnits(doc_index=rows, vectors=v) for label, v in vectors.items()}


DOCUMENT_MODES: dict[str, DocumentMode] = {"truncate": truncate_mode, **WHOLE_DOCUMENT_MODES}
KNOWN_MODES = (*DOCUMENT_MODES, BM25_MODE, f"{HYBRID_PREFIX}MODE")  # what messages list


@dataclass
class ModePlan:
    """What a list of mode names asks for: the document modes to run (in order), whether BM25 runs, the
    document modes fused with BM25, and the order of the rows (mode names as the table shows them)."""

    dense: dict[str, DocumentMode] = field(default_factory=dict)
    lexical: bool = False
    hybrids: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)


def _mode_names(modes: str | Sequence[str]) -> list[str]:
    """The names in ``modes``: a string split at its commas by `split_option`, as ``--modes`` is (``" bm25"``
    stripped, ``"truncate,,bm25"`` refused: it ran without a word); a sequence holds one name per entry."""
    if isinstance(modes, str):
        return split_option(modes, "document mode", KNOWN_MODES)
    names = list(modes)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"a document mode name must be a string, got {name!r} ({type(name).__name__})")
    return names


def plan_modes(modes: str | Sequence[str] | Mapping[str, DocumentMode]) -> ModePlan:
    """The `ModePlan` of ``modes``: names (any case) from ``DOCUMENT_MODES``, ``bm25`` and ``hybrid:NAME`` (which
    implies NAME and ``bm25``), as a list or one comma-separated string, or ``{name: DocumentMode}`` for modes of one's own."""
    plan = ModePlan()
    if isinstance(modes, Mapping):
        for name, mode in modes.items():
            if not callable(mode):
                raise TypeError(f"mode {name!r} must be callable (a DocumentMode), got {type(mode).__name__}")
        plan.dense, plan.order = dict(modes), list(modes)
    else:
        for given in _mode_names(modes):  # (any case, as pooling names: "Truncate" was refused, "MEAN" read)
            name = given.lower()
            base = name.removeprefix(HYBRID_PREFIX)
            if base not in DOCUMENT_MODES and name != BM25_MODE:
                raise OptionError(f"unknown document mode {given!r}; choose from {', '.join(KNOWN_MODES)}")
            plan.order += [base, BM25_MODE, name] if base != name else [name]
        plan.order = list(dict.fromkeys(plan.order))  # each step once, where it first comes
        plan.dense = {name: DOCUMENT_MODES[name] for name in plan.order if name in DOCUMENT_MODES}
        plan.lexical = BM25_MODE in plan.order
        plan.hybrids = [name.removeprefix(HYBRID_PREFIX) for name in plan.order if name.startswith(HYBRID_PREFIX)]
    if not plan.order:
        raise OptionError("no document mode given")
    return plan
