"""Retrieval evaluation: embed a BEIR-layout corpus and its queries, search exactly, report nDCG@10 (linear
gains), recall@100 and MRR@10 per pooling strategy and document mode, as trec_eval defines them (so
pytrec_eval, BEIR and MTEB): averaged over every judged query, one with no grade > 0 scoring 0 on each."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, field
from typing import Any

import numpy as np

from ..errors import OptionError, is_int
from ..model.options import spell
from ..model.texts import DOCUMENT_PROMPT_NAMES, QUERY_PROMPT_NAME, check_prompt, side_prompt
from .beir import GRADE_LIMIT, RetrievalSet, retrieval_set_of
from .common import Label, check_budget, check_number, encode_every_way, number_label, plot_file, text_table
from .fusion import DEFAULT_RRF_K, DEFAULT_WEIGHT, interpolate, reciprocal_rank_fusion
from .lexical import BM25Settings, bm25_rows
from .modes import BM25_MODE, HYBRID_PREFIX, DocumentMode, ModePlan, plan_modes
from .search import BYTES_PER_SCORE, DEFAULT_MAX_BYTES, Ranking, check_ranking, exact_search, tie_ranks
from .sts import label_list, strategy_labels
from .units import check_units, search_form

__all__ = [
    "METRICS", "RetrievalResult", "RetrievalRow", "RetrievalScores", "evaluate_retrieval",
    "format_retrieval_table", "metrics_per_query", "plot_retrieval"
]  # fmt: skip

# (name, kind, cutoff)
METRICS: tuple[tuple[str, str, int], ...] = (
    ("nDCG@10", "ndcg", 10), ("recall@100", "recall", 100), ("MRR@10", "mrr", 10)
)  # fmt: skip
TOP_K = max(100, *(cutoff for _, _, cutoff in METRICS))


def metrics_per_query(
    indices: np.ndarray, relevance: tuple[np.ndarray, np.ndarray, np.ndarray], n_docs: int
) -> dict[str, np.ndarray]:
    """Per-query nDCG@10, recall@100 and MRR@10 (float64, in [0, 1]) of ``indices`` ((Q, k) document rows by
    rank, −1 past the end) against ``relevance`` (``(query row, document row, grade)`` arrays of the positive
    judgements; a query with none scores 0, as in pytrec_eval)."""
    indices = np.asarray(indices)
    if indices.ndim != 2:
        raise ValueError(f"indices must be 2-D (queries × rank), got shape {indices.shape}")
    n_queries, depth = indices.shape
    q_rows, d_rows, grades = _check_relevance(relevance, n_queries, n_docs)
    n_relevant = np.bincount(q_rows, minlength=n_queries)
    pair_keys = q_rows * n_docs + d_rows
    order = np.argsort(pair_keys, kind="stable")
    pair_keys, sorted_grades = pair_keys[order], grades[order].astype(np.float64)
    if len(pair_keys) > 1 and (np.diff(pair_keys) == 0).any():
        raise ValueError("relevance names a (query, document) pair twice")
    check_ranking(indices, n_docs)
    indices = indices.astype(np.int64, copy=False)

    gain = np.zeros(indices.shape, dtype=np.float64)
    if len(pair_keys):  # else nothing is relevant anywhere: every gain is 0
        ranked = np.arange(n_queries, dtype=np.int64)[:, None] * n_docs + indices
        pos = np.minimum(np.searchsorted(pair_keys, ranked), len(pair_keys) - 1)
        hit = (indices >= 0) & (pair_keys[pos] == ranked)
        gain = np.where(hit, sorted_grades[pos], 0.0)

    out: dict[str, np.ndarray] = {}
    for name, kind, cutoff in METRICS:
        top = gain[:, : min(cutoff, depth)]
        if kind == "ndcg":
            discounts = 1.0 / np.log2(np.arange(2, top.shape[1] + 2, dtype=np.float64))
            out[name] = _fraction(top @ discounts, _ideal_dcg(q_rows, grades, n_queries, cutoff))
        elif kind == "recall":
            out[name] = _fraction((top > 0).sum(axis=1), n_relevant)
        else:  # mrr
            found = top > 0
            first = np.argmax(found, axis=1)
            out[name] = np.where(found.any(axis=1), 1.0 / (first + 1), 0.0)
    return out


def _check_relevance(relevance: Any, n_queries: int, n_docs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``(query row, document row, grade)`` arrays, checked: one length, rows in range, grades > 0."""
    q_rows, d_rows, grades = (np.asarray(a) for a in relevance)
    if not (q_rows.shape == d_rows.shape == grades.shape) or q_rows.ndim != 1 or (
        q_rows.size and not all(np.issubdtype(rows.dtype, np.integer) for rows in (q_rows, d_rows))
    ) or not any(np.issubdtype(grades.dtype, kind) for kind in (np.integer, np.floating)):
        # (a float row 1.7 was read as row 1; bool grades, even none, were an OverflowError, "Python int too large")
        raise ValueError("relevance must be three 1-D arrays of one length (query row, document row, grade), the "
                         f"rows integers, the grades numbers; got {q_rows.dtype} {q_rows.shape}, {d_rows.dtype} "
                         f"{d_rows.shape}, {grades.dtype} {grades.shape}")  # fmt: skip
    bad = np.flatnonzero(~((grades > 0) & (grades <= GRADE_LIMIT)))  # (NaN, inf: nDCG NaN; 1e308: ideal DCG inf)
    if len(bad):  # (2**63 - 1 is 2.0**63 as a float64)
        raise ValueError(f"relevance must hold positive grades up to 2**63 only (non-relevant documents are left "
                         f"out); got grade {grades[bad[:1]].tolist()[0]!r} at query row {q_rows[bad[0]]}, document "
                         f"row {d_rows[bad[0]]}")  # fmt: skip
    for name, rows, limit in (("query", q_rows, n_queries), ("document", d_rows, n_docs)):
        outside = (rows < 0) | (rows >= limit)
        if len(rows) and outside.any():
            raise ValueError(f"relevance names {name} row {int(rows[outside][0])}, outside 0..{limit - 1} (past "
                             f"the ranking's {n_queries} queries and {n_docs} documents)")  # fmt: skip
    return q_rows.astype(np.int64), d_rows.astype(np.int64), grades


def _fraction(found: np.ndarray, possible: np.ndarray) -> np.ndarray:
    """``found / possible`` per query, 0 where nothing was possible (no relevant document)."""
    found = np.asarray(found, dtype=np.float64)
    return np.divide(found, possible, out=np.zeros_like(found), where=np.asarray(possible) > 0)


def _ideal_dcg(q_rows: np.ndarray, grades: np.ndarray, n_queries: int, cutoff: int) -> np.ndarray:
    """Σ over each query's best ``cutoff`` grades of grade / log2(rank + 1)."""
    order = np.lexsort((-grades.astype(np.float64), q_rows))
    q_sorted, g_sorted = q_rows[order], grades[order].astype(np.float64)
    rank = np.arange(len(q_sorted)) - np.searchsorted(q_sorted, q_sorted)  # 0-based rank within its query
    keep = rank < cutoff
    gains = g_sorted[keep] / np.log2(rank[keep] + 2.0)
    return np.bincount(q_sorted[keep], weights=gains, minlength=n_queries).astype(np.float64)


@dataclass(frozen=True)
class RetrievalScores:
    """Mean metrics over the evaluated queries, as fractions in [0, 1] (×100 in tables)."""

    ndcg_at_10: float
    recall_at_100: float
    mrr_at_10: float

    @classmethod
    def mean_of(cls, per_query: Mapping[str, np.ndarray]) -> RetrievalScores:
        """The means of `metrics_per_query`'s figures."""
        return cls(*(float(per_query[name].mean()) for name, _, _ in METRICS))

    def as_dict(self, scale: float = 1.0) -> dict[str, float]:
        """``{"nDCG@10": ..., "recall@100": ..., "MRR@10": ...}``, multiplied by ``scale``."""
        return {name: value * scale for (name, _, _), value in zip(METRICS, astuple(self), strict=True)}


@dataclass
class RetrievalRow:
    """One (document mode, pooling) pair — or BM25 with its settings, or a fusion — with its scores,
    per-query figures and top-100 ranking."""

    mode: str
    pooling: str
    scores: RetrievalScores
    per_query: dict[str, np.ndarray]  # metric name → values in `RetrievalResult.query_ids` order
    ranking: Ranking
    units: int  # vectors searched (documents, or chunks when documents are split)
    seconds: float  # the mode's pass over the corpus (shared by its rows)
    texts: int  # corpus documents that pass encoded
    settings: dict[str, Any] = field(default_factory=dict)  # BM25's parameters, a fusion's (empty: dense)

    @property
    def texts_per_second(self) -> float:
        """Corpus documents encoded per second in this mode's pass."""
        return self.texts / self.seconds if self.seconds > 0 else math.inf


@dataclass
class RetrievalResult:
    """Everything `evaluate_retrieval` measured; ``rows`` in (mode, pooling) order."""

    data: RetrievalSet
    model: str
    rows: list[RetrievalRow]
    query_seconds: float
    configured: str = ""  # label of the encoder's own pooling
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def query_ids(self) -> list[str]:
        return self.data.query_ids

    def scores(self, pooling: str | None = None, mode: str | None = None) -> RetrievalScores:
        """The scores of one row; ``pooling=None``: the encoder's own pooling (or the only pooling)."""
        return self.row(pooling, mode).scores

    def row(self, pooling: str | None = None, mode: str | None = None) -> RetrievalRow:
        """The row of ``pooling`` (None: the encoder's own pooling, or the mode's only row) in ``mode`` (None:
        ``truncate``, or the only mode evaluated: ``modes="bm25"`` has no truncate row)."""
        modes = list(dict.fromkeys(row.mode for row in self.rows))
        mode = (modes[0] if len(modes) == 1 else "truncate") if mode is None else mode
        named = mode
        if isinstance(mode, str) and mode not in modes:  # (any case, as `plan_modes` reads it: "Truncate")
            alike = [name for name in modes if isinstance(name, str) and name.lower() == mode.lower()]
            if len(alike) > 1:  # custom modes {"Late": f, "late": g}: "LATE" names both
                raise KeyError(f"mode {mode!r} matches the modes {', '.join(map(repr, alike))} only in case; "
                               "give one as written")  # fmt: skip
            named = mode.lower()
        in_mode = [row for row in self.rows if row.mode == named]
        if pooling is None and len(in_mode) == 1:  # e.g. bm25, or a single pooling
            return in_mode[0]
        want = self.configured if pooling is None else pooling
        for name in (want, _as_label(want)):  # a row named as asked first, then as pooling= reads it
            for row in in_mode:
                if row.pooling == name:
                    return row
        have = [f"{r.mode}/{r.pooling}" for r in self.rows]  # (pooling None named pooling '' when not evaluated)
        own = pooling is None and not want  # (row("") is a pooling '' asked for, not the model's own)
        shown = "the model's own pooling (not among the poolings evaluated)" if own else f"pooling {want!r}"
        raise KeyError(f"no row for mode {mode!r} and {shown}; rows: {have}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: scores ×100 per row, with the corpus and query counts and the pooling label of the
        model's own rows (``configured``, the table's ``*``; None where no row is)."""
        rows = [
            {"mode": row.mode, "pooling": row.pooling, "scores_x100": row.scores.as_dict(100.0),
             "units": row.units, "texts_per_second": row.texts_per_second,
             **({"settings": row.settings} if row.settings else {})}
            for row in self.rows
        ]  # fmt: skip
        return {"model": self.model, "dataset": self.data.name, "documents": len(self.data.doc_ids),
                "queries": len(self.data.query_ids), "rows": rows, "configured": self.configured or None,
                **self.extra}  # fmt: skip

    def table(self) -> str:
        """Plain-text table, one row per (mode, pooling), figures ×100."""
        return format_retrieval_table(self)


def _as_label(pooling: Any) -> Any:
    """``pooling`` as the rows name one strategy label, read as `evaluate_retrieval` reads its ``pooling``
    ("MEAN" ran a row "mean" that row("MEAN") missed); else as given (several labels, a hybrid row's name)."""
    try:
        labels = strategy_labels(pooling) if isinstance(pooling, str) else [pooling]
    except ValueError:
        return pooling
    return labels[0] if len(labels) == 1 else pooling


def format_retrieval_table(result: RetrievalResult) -> str:
    """Columns mode, pooling, nDCG@10, recall@100, MRR@10 (×100) and texts/s; ``*`` marks the model's pooling."""
    pool_width = max(len("pooling"), *(len(r.pooling) + 2 for r in result.rows))
    mode_width = max(len("mode"), *(len(r.mode) for r in result.rows))
    columns = [("mode", mode_width, "<"), ("pooling", pool_width, "<"), *((name, 10, ">") for name, _, _ in METRICS),
               ("texts/s", 8, ">")]  # fmt: skip
    lines = text_table(columns, (
        [row.mode, f"{row.pooling} *" if row.pooling == result.configured else row.pooling,
         *(f"{v:.2f}" for v in row.scores.as_dict(100.0).values()), f"{row.texts_per_second:.1f}"]
        for row in result.rows
    ))  # fmt: skip
    if any(row.pooling == result.configured for row in result.rows):
        lines.append("* the model's configured pooling")
    return "\n".join(lines)


def plot_retrieval(result: RetrievalResult, path: str, title: str = "") -> None:
    """Grouped bar chart (one group per row, one bar per metric ×100) saved to ``path`` (needs matplotlib)."""
    one_mode = len({row.mode for row in result.rows}) == 1
    groups = [row.pooling if one_mode else f"{row.mode}\n{row.pooling}" for row in result.rows]
    names = [name for name, _, _ in METRICS]
    width = 0.8 / len(names)
    with plot_file(path, (max(5.0, 1.2 * len(groups) + 1.5), 3.8), title) as ax:
        x = np.arange(len(groups))
        for i, name in enumerate(names):
            values = [row.scores.as_dict(100.0)[name] for row in result.rows]
            bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=name)
            ax.bar_label(bars, fmt="%.1f", fontsize=6)
        ax.set_xticks(x, groups, fontsize=8, rotation=30 if len(groups) > 4 else 0)
        ax.set_ylim(0, 100)
        ax.set_ylabel("x100")
        ax.legend(fontsize=7, loc="upper right")


def evaluate_retrieval(
    data: str | os.PathLike | RetrievalSet, encoder: Any = None, *,
    pooling: str | Sequence[str] | None = None,
    modes: str | Sequence[str] | Mapping[str, DocumentMode] = ("truncate",), split: str | None = None,
    batch_size: int = 64, max_batch_tokens: int | None = None, query_prompt: str | None = None,
    document_prompt: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
    ignore_identical_ids: bool = False, progress: bool = False,
    bm25: str | Mapping[str, Any] | BM25Settings | None = None, rrf_k: float = DEFAULT_RRF_K,
    hybrid_weight: float = DEFAULT_WEIGHT,
) -> RetrievalResult:  # fmt: skip
    """Embed a BEIR-layout folder's corpus and judged queries, search exactly, and score each ranking.

    - ``data``: a folder (`read_beir`, ``split`` picking ``qrels/<split>.tsv``) or a `RetrievalSet`.
    - ``encoder``: a `tokenpool.Encoder`, a model folder, or None for the bundled all-MiniLM-L6-v2 (not loaded
      when only ``bm25`` runs).
    - ``pooling``: None = the encoder's own pooling (``truncate_dim`` included); ``"all"`` = every strategy
      that fits the model; or names (``"mean,cls"``, ``["mean", "mean+max"]``). The model runs once per mode
      (``windows``, ``late-N``: once per pooling).
    - ``modes``: names from ``DOCUMENT_MODES``, ``"bm25"`` and ``"hybrid:MODE"`` (BM25 fused with MODE by
      reciprocal ranks, constant ``rrf_k``, and by min–max scores, BM25 weighing ``hybrid_weight``), or
      ``{name: DocumentMode}``; ``bm25``: `BM25Settings`, a mapping or ``"k1=1.2,stemmer=english"``.
    - ``batch_size`` / ``max_batch_tokens``: texts and padded tokens per forward pass, as in `Encoder.encode`.
    - prompts: None = the model's configured query / document prompt, ``""`` = none, else that text.
    - ``max_bytes``: memory for one block of query × unit scores (see `exact_search`).
    - ``ignore_identical_ids``: a query may not retrieve the document with its own id (BEIR's option).
    """
    retrieval_set = retrieval_set_of(data, split)
    # option checks before the model runs (a bad budget would otherwise surface after the corpus pass)
    if not is_int(batch_size) or batch_size < 1:
        raise OptionError(f"batch_size must be a positive integer, got {batch_size!r}")
    budget = check_budget(max_batch_tokens)
    if not is_int(max_bytes) or max_bytes < BYTES_PER_SCORE:
        raise OptionError(f"max_bytes must be an integer ≥ {BYTES_PER_SCORE} (one score), got {max_bytes!r}")
    plan = plan_modes(modes)
    _refuse_model_options(plan, pooling=pooling, query_prompt=query_prompt, document_prompt=document_prompt,
                          max_batch_tokens=max_batch_tokens)  # fmt: skip
    settings, fusion = check_lexical_options(plan, bm25, rrf_k, hybrid_weight)
    context = SearchContext(retrieval_set, max_bytes, ignore_identical_ids)
    rows: list[RetrievalRow] = []
    result = RetrievalResult(data=retrieval_set, model="", rows=rows, query_seconds=0.0)
    if plan.dense:
        encoder = _as_encoder(encoder)
        options = {"batch_size": batch_size, "progress": progress, **budget}
        _dense_rows(result, context, encoder, plan, pooling, (query_prompt, document_prompt), options)
    if plan.lexical:
        rows.append(_bm25_row(context, retrieval_set, settings))
    for base in plan.hybrids:
        rows.extend(_hybrid_rows(context, rows, base, **fusion))
    rows.sort(key=lambda row: plan.order.index(row.mode))
    return result


def check_lexical_options(plan: ModePlan, bm25: Any, rrf_k: Any, hybrid_weight: Any) -> tuple[BM25Settings, dict]:
    """The BM25 settings (BM25's libraries found when it runs) and fusion options, checked before the model runs
    (by the command line too, after it refused --bm25, --rrf-k and --hybrid-weight where no mode reads them, as
    this does for the Python options)."""
    settings = BM25Settings.parse(bm25)
    if bm25 is not None and not plan.lexical:
        raise OptionError(f"{spell('bm25', bm25)} is for the bm25 and hybrid:MODE modes, and modes {list(plan.order)} "
                          "run neither")  # fmt: skip
    if plan.lexical:
        settings.libraries()
    fusion = check_fusion(rrf_k, hybrid_weight)
    if not plan.hybrids and (fusion["rrf_k"] != DEFAULT_RRF_K or fusion["weight"] != DEFAULT_WEIGHT):
        raise OptionError(f"{spell('rrf_k', rrf_k)} and {spell('hybrid_weight', hybrid_weight)} are for hybrid:MODE "
                          f"modes, and modes {list(plan.order)} run none")  # fmt: skip
    return settings, fusion


def _bm25_row(context: SearchContext, retrieval_set: RetrievalSet, settings: BM25Settings) -> RetrievalRow:
    """The bm25 mode's row: BM25 scores of every query and document, searched and scored as the dense rows."""
    started = time.perf_counter()
    queries, documents = bm25_rows(retrieval_set.doc_texts, retrieval_set.query_texts, settings)
    ranking = context.search(queries, documents)
    return context.row(BM25_MODE, settings.label(), ranking, len(retrieval_set.doc_ids),
                       time.perf_counter() - started, settings.as_dict())  # fmt: skip


@dataclass
class SearchContext:
    """What every ranking of one evaluation shares (`evaluate_retrieval`'s rows, the precision rows of
    `evaluate_retrieval_precisions`): the set, its tie order and judgements, the search budget."""

    data: RetrievalSet
    max_bytes: int = DEFAULT_MAX_BYTES
    ignore_identical_ids: bool = False

    def __post_init__(self) -> None:
        self.ties = tie_ranks(self.data.doc_ids)
        self.exclude = None
        if self.ignore_identical_ids:  # (the set's own id → row map; -1: no document has the query's id)
            rows = [self.data.doc_position(q, -1) for q in self.data.query_ids]
            self.exclude = np.asarray(rows, dtype=np.int64)
        self.relevance = self.data.relevance()

    def search(
        self, queries: Any, units: Any, doc_index: np.ndarray | None = None, k: int = TOP_K
    ) -> Ranking:
        """Exact top-``k`` search; with sparse rows only the documents that share a term are retrieved."""
        ranking = exact_search(
            queries, units, doc_index, tie_rank=self.ties, n_docs=len(self.data.doc_ids), k=k,
            max_bytes=self.max_bytes, exclude=self.exclude,
        )  # fmt: skip
        return ranking if isinstance(units, np.ndarray) else ranking.matched()

    def scores(self, indices: np.ndarray) -> tuple[dict[str, np.ndarray], RetrievalScores]:
        """(`metrics_per_query`, their means) of a ranking's document rows against the set's judgements."""
        per_query = metrics_per_query(indices, self.relevance, len(self.data.doc_ids))
        return per_query, RetrievalScores.mean_of(per_query)

    def row(
        self, mode: str, pooling: str, ranking: Ranking, units: int, seconds: float, settings: Any = None
    ) -> RetrievalRow:
        """The `RetrievalRow` of one ranking: per-query metrics and their means."""
        per_query, scores = self.scores(ranking.indices)
        return RetrievalRow(mode, pooling, scores, per_query, ranking, units, seconds, len(self.data.doc_ids),
                            settings or {})  # fmt: skip


def _dense_rows(
    result: RetrievalResult, context: SearchContext, encoder: Any, plan: ModePlan, pooling: Any,
    prompts: tuple[str | None, str | None], options: dict[str, Any],
) -> None:  # fmt: skip
    """Encode the queries once and the corpus once per document mode; one row per (mode, pooling label)."""
    labels, shown = _labels(encoder, pooling)
    configured = shown[0] if pooling is None else "+".join(encoder.strategies)
    result.model = str(getattr(encoder, "model_path", ""))
    result.configured = configured if configured in shown else ""
    q_prompt, q_name = _side_prompt(encoder, prompts[0], (QUERY_PROMPT_NAME,))
    d_prompt, d_name = _side_prompt(encoder, prompts[1], DOCUMENT_PROMPT_NAMES)
    for mode in plan.dense.values():
        getattr(mode, "prepare", lambda encoder: None)(encoder)
    data = context.data
    started = time.perf_counter()
    queries = encode_every_way(
        encoder, data.query_texts, labels, prompt=q_prompt, prompt_name=q_name, desc="queries",
        sparse_rows=True, **options,
    )  # fmt: skip
    result.query_seconds = time.perf_counter() - started
    for mode_name, mode in plan.dense.items():
        started = time.perf_counter()
        units = mode(encoder, data.doc_texts, labels, prompt=d_prompt, prompt_name=d_name, **options)
        seconds = time.perf_counter() - started
        for label, name in zip(labels, shown, strict=True):
            unit = check_units(units, label, mode_name, data.doc_ids)
            ranking = context.search(search_form(queries[label]), search_form(unit.vectors), unit.doc_index)
            result.rows.append(context.row(mode_name, name, ranking, len(unit.doc_index), seconds))
        del units


def _hybrid_rows(
    context: SearchContext, rows: list[RetrievalRow], base: str, rrf_k: float, weight: float
) -> list[RetrievalRow]:
    """BM25 fused with each row of document mode ``base``: by reciprocal ranks and by min–max scores."""
    lexical = next(row for row in rows if row.mode == BM25_MODE)
    out = []
    for dense in [row for row in rows if row.mode == base]:
        pair = [lexical.ranking, dense.ranking]
        fused = (
            (f"{dense.pooling}, rrf k={number_label(rrf_k)}", {"fusion": "rrf", "k": rrf_k},
             reciprocal_rank_fusion(pair, context.ties, k=rrf_k, depth=TOP_K)),
            (f"{dense.pooling}, bm25 weight {number_label(weight)}", {"fusion": "interpolation", "bm25_weight": weight},
             interpolate(pair, [weight, 1.0 - weight], context.ties, depth=TOP_K)),
        )  # fmt: skip
        for name, settings, ranking in fused:
            settings = {**settings, "dense": f"{base}/{dense.pooling}", "bm25": lexical.settings}
            out.append(context.row(HYBRID_PREFIX + base, name, ranking, dense.units,
                                   lexical.seconds + dense.seconds, settings))  # fmt: skip
    return out


def _refuse_model_options(plan: ModePlan, **given: Any) -> None:
    """`OptionError` for a model option (pooling, a prompt, a token budget) given when no document mode runs the
    model (``modes="bm25"``): it was dropped without a word, as the command line refuses its flags there."""
    if plan.dense:
        return
    for name, value in given.items():
        if value is not None:
            raise OptionError(f"{spell(name, value)} is read by the model, and modes {list(plan.order)} run none (no "
                              "model runs for bm25 alone)")  # fmt: skip


def check_fusion(rrf_k: Any, weight: Any) -> dict[str, float]:
    """The fusion options as numbers: rrf_k ≥ 0 and a BM25 weight in [0, 1], refused before the model runs."""
    return {
        "rrf_k": check_number(spell("rrf_k"), rrf_k, error=OptionError),
        "weight": check_number(
            spell("hybrid_weight"), weight, high=1.0, allowed="a number in [0, 1]", error=OptionError
        ),
    }


def _as_encoder(encoder: Any) -> Any:
    if encoder is not None and hasattr(encoder, "iter_token_batches"):
        return encoder
    if encoder is not None and not isinstance(encoder, (str, os.PathLike)):
        raise TypeError(f"encoder must be a tokenpool.Encoder, a model folder or None, got "
                        f"{type(encoder).__name__}")
    from ..model.encoder import Encoder

    return Encoder(encoder)


def _labels(encoder: Any, pooling: str | Sequence[str] | None) -> tuple[list[Label], list[str]]:
    """(labels to pool with, names shown): None → the encoder's own pooling."""
    if pooling is None:
        name = "+".join(encoder.strategies)
        if encoder.truncate_dim is not None:
            name += f" (dim {encoder.truncate_dim})"
        return [None], [name]
    if not isinstance(pooling, str) and (
        not isinstance(pooling, Sequence) or not all(isinstance(p, str) for p in pooling)
    ):  # (None, the encoder's own pooling, is pooling=None here, not a list entry)
        raise TypeError(f"pooling must be None, a string or a list of strings, got {pooling!r}")
    labels = label_list(pooling, encoder)  # (as evaluate_pairs reads its labels)
    return list(labels), labels


def _side_prompt(encoder: Any, prompt: str | None, names: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(prompt, prompt_name) for one side: an explicit text, else the side's prompt as `encode_queries` /
    `encode_documents` pick it (`side_prompt`: never the model's default prompt of the other side)."""
    if prompt is not None:
        check_prompt(prompt, None)
        return prompt, None
    return side_prompt(encoder.config, names)
