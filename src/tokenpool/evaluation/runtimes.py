"""One model on several runtimes side by side (torch, ONNX files), each loaded in turn and pooling as
configured: the same STS or BEIR evaluation per runtime, and the minimum, median and 1st percentile of the
cosine between each text's vectors and the first runtime's."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..model.onnx_export import cosine_figures
from .beir import RetrievalSet, read_beir
from .common import text_table
from .modes import truncate_mode
from .retrieval import evaluate_retrieval
from .sts import Pairs, check_scorable, cosine_rows, evaluate_pairs, pool_pairs, read_pairs, spearman_x100

__all__ = [
    "RuntimeRow", "compare_pairs", "compare_retrieval", "format_runtime_table", "stsb_scorer", "beir_scorer"
]  # fmt: skip

COSINE_NAMES = ("min", "median", "p1")


@dataclass
class RuntimeRow:
    """One runtime's figures (×100), its cosines against the first runtime, and its texts/s."""

    runtime: str
    scores: dict[str, float]
    cosine: dict[str, float]  # min / median / p1 (1st percentile) against the first runtime
    texts_per_second: float

    def as_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "scores_x100": self.scores, "cosine_vs_first": self.cosine,
                "texts_per_second": self.texts_per_second}  # fmt: skip


def _cosines(vectors: Any, first: Any) -> dict[str, float]:
    """`cosine_figures` of ``vectors`` against ``first``, dense or sparse rows (`cosine_rows` never densifies
    a SPLADE model's rows); a zero row is one whose cosine with itself is 0."""
    zero = [cosine_rows(rows, rows) == 0 for rows in (first, vectors)]
    figures = cosine_figures(cosine_rows(vectors, first), *zero)
    return {name: figures[name] for name in COSINE_NAMES}


def _compare(
    runtimes: Sequence[tuple[str, Callable[[], Any]]], run: Callable[[Any], tuple[dict[str, float], np.ndarray, int]]
) -> list[RuntimeRow]:
    """``run(encoder)`` → (scores ×100, the vectors to compare, texts) for each runtime, loaded in turn."""
    rows, first = [], None
    for name, load in runtimes:
        encoder = load()
        started = time.perf_counter()
        scores, vectors, texts = run(encoder)
        seconds = time.perf_counter() - started
        del encoder
        first = vectors if first is None else first
        rows.append(RuntimeRow(name, scores, _cosines(vectors, first), texts / seconds if seconds > 0 else np.inf))
    return rows


def compare_pairs(runtimes: Sequence[tuple[str, Callable[[], Any]]], pairs: Pairs, **options: Any) -> list[RuntimeRow]:
    """STS Spearman ×100 of each runtime's own pooling; cosines over the distinct sentences. ``runtimes``:
    (name, a function that loads the encoder); ``options``: as `pool_pairs` (batch_size, prompts, budget)."""

    def run(encoder: Any) -> tuple[dict[str, float], np.ndarray, int]:
        vectors, i1, i2 = pool_pairs(encoder, pairs, [None], **options)
        own = vectors[None]
        value = spearman_x100(cosine_rows(own[i1], own[i2]), pairs.scores, "the model's own pooling")
        return {"Spearman": value}, own, own.shape[0]

    return _compare(runtimes, run)


def compare_retrieval(runtimes: Sequence[tuple[str, Callable[[], Any]]], data: Any, **options: Any) -> list[RuntimeRow]:
    """nDCG@10, recall@100 and MRR@10 ×100 of each runtime's own pooling on truncated documents; cosines over
    the corpus documents. ``data``: a BEIR folder (read once, now, with ``options``' ``split``) or a
    `RetrievalSet`; ``options``: as `evaluate_retrieval` (batch_size, prompts, budget, progress)."""
    if not isinstance(data, RetrievalSet):  # (a folder failed after every runtime's run: it has no doc_ids)
        data = read_beir(data, options.pop("split", None))

    def run(encoder: Any) -> tuple[dict[str, float], np.ndarray, int]:
        kept: dict[Any, Any] = {}

        def recording(*args: Any, **kwargs: Any) -> Any:
            kept.update(truncate_mode(*args, **kwargs))
            return kept

        result = evaluate_retrieval(data, encoder, modes={"truncate": recording}, **options)
        return result.rows[0].scores.as_dict(100.0), kept[None].vectors, len(data.doc_ids)

    return _compare(runtimes, run)


def format_runtime_table(rows: Sequence[RuntimeRow], compared: str) -> str:
    """One line per runtime: its figures ×100, the cosines against the first runtime's vectors, texts/s."""
    names = list(rows[0].scores)
    width = max(len("runtime"), *(len(row.runtime) for row in rows))
    titles = [*names, *(f"cos {n}" for n in COSINE_NAMES)]
    columns = [("runtime", width, "<"), *((title, 10, ">") for title in titles), ("texts/s", 8, ">")]
    lines = text_table(columns, (
        [row.runtime, *(f"{row.scores[n]:.2f}" for n in names), *(f"{row.cosine[n]:.6f}" for n in COSINE_NAMES),
         f"{row.texts_per_second:.1f}"] for row in rows
    ))  # fmt: skip
    return "\n".join([f"cosine: each {compared}'s vectors against {rows[0].runtime}'s", *lines])


def stsb_scorer(path: str, batch_size: int = 32) -> Callable[[Any], float]:
    """STS Spearman ×100 of an encoder's own pooling on the pairs in ``path`` (read and checked now, before any
    model work, so a bad file fails fast): the scorer `tokenpool.model.onnx_export.make_variant` takes."""
    pairs = read_pairs(str(path))
    check_scorable(pairs, str(path))
    return lambda encoder: evaluate_pairs(encoder, pairs, [None], batch_size=batch_size)[None]


def beir_scorer(folder: str, batch_size: int = 32) -> Callable[[Any], float]:
    """nDCG@10 ×100 of an encoder's own pooling (documents truncated) on the BEIR ``folder`` (read now)."""
    data = read_beir(folder)
    return lambda encoder: 100.0 * evaluate_retrieval(data, encoder, batch_size=batch_size).rows[0].scores.ndcg_at_10
