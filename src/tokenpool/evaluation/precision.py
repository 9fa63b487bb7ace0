"""How much quality compact precisions keep: STS Spearman and retrieval scores computed on the codes as a
vector store compares them: cosine for float32/16, cosine of the integer codes (uint8's centred by −128; exact
int64 dot products) for int8/uint8, D − 2·Hamming(a, b) (the ±1 signs' dot product) for binary/ubinary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.quantize import (
    CALIBRATED_PRECISIONS,
    DEFAULT_CALIBRATION_SIZE,
    PACKED_PRECISIONS,
    PRECISIONS,
    Calibration,
    bytes_per_vector,
    check_codes,
    check_precision,
    dequantize,
    hamming_distance,
    quantize,
    unpack_signs,
)
from ..errors import OptionError, check_int, is_int
from ..model.folders import display_name
from ..model.options import check_bool
from ..model.request import EncodeRequest
from .beir import retrieval_set_of
from .common import check_budget, check_truncating, pooling_name, split_option, text_table, unit_rows
from .modes import truncate_mode
from .retrieval import TOP_K, RetrievalScores, SearchContext, evaluate_retrieval
from .sts import Pairs, cosine_rows, label_list, pool_pairs, spearman_x100

__all__ = [
    "PrecisionScore", "parse_precisions", "similarity_rows", "similarity_matrix", "evaluate_precisions",
    "check_calibration_size",
    "format_precision_table"
]  # fmt: skip


@dataclass(frozen=True)
class PrecisionScore:
    """One precision's result for one pooling: its score, that score / the float32 score, bytes per vector."""

    precision: str
    score: float
    kept: float | None  # None: the float32 score is 0 or below, no ratio (`kept_ratio`)
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"score": self.score, "kept": self.kept, "bytes_per_vector": self.bytes}


def kept_ratio(value: float, base: float) -> float | None:
    """``value / base``, what a precision keeps of float32's figure ``base``; None unless ``base`` > 0 (a
    negative Spearman made a worse code, −20 against −10, keep 200%)."""
    return value / base if base > 0 else None


def _percent(kept: float | None) -> str:
    """The table's ``kept`` cell, 8 characters: ``99.52%``, or ``n/a`` without a ratio."""
    return f"{'n/a':>8}" if kept is None else f"{100 * kept:>7.2f}%"


def parse_precisions(spec: str | Sequence[str]) -> list[str]:
    """``"all"`` → every precision; ``"int8,ubinary"`` or a list → those, float32 first (the baseline)."""
    if not isinstance(spec, (str, Sequence)):
        raise TypeError(f"precisions must be a comma-separated string or a list of names, got {type(spec).__name__}")
    parts = split_option(spec, "precision", (*PRECISIONS, "all")) if isinstance(spec, str) else list(spec)
    for odd in (p for p in parts if not isinstance(p, str)):
        raise TypeError(f"a precision is a name such as 'int8', got {type(odd).__name__} {odd!r:.100}")
    names = [p.strip().lower() for p in parts]  # (a list's "" is unknown, as "int8,," is: it was dropped unread)
    if names == ["all"]:
        return list(PRECISIONS)
    if not names:
        raise OptionError(f"no precision given; choose from {', '.join(PRECISIONS)} or all")
    chosen = [check_precision(name) for name in names]
    return ["float32", *[p for p in PRECISIONS if p in chosen and p != "float32"]]


def _centred(codes: np.ndarray, precision: str) -> np.ndarray:
    check_codes(np.asarray(codes), precision)  # (float vectors were truncated to integers: cosines of garbage)
    values = codes.astype(np.int64)
    return values - 128 if precision == "uint8" else values


def similarity_rows(a: np.ndarray, b: np.ndarray, precision: str, dimension: int) -> np.ndarray:
    """Row-wise similarity of two equal-length code arrays (float64), as the module docstring defines it."""
    precision = check_precision(precision)
    if np.shape(a) != np.shape(b):  # (3 rows against 1 were broadcast: figures of pairs that do not exist)
        raise ValueError(f"similarity_rows compares code arrays of one shape, got {np.shape(a)} and {np.shape(b)}")
    if precision in PACKED_PRECISIONS:  # the ±1 signs' dot product (float32 bytes were read as sign bits)
        x, y = (unpack_signs(codes, dimension=dimension) for codes in (a, b))
        return (x * y).sum(axis=-1, dtype=np.float64)
    if precision in CALIBRATED_PRECISIONS:  # integer codes below 2**7: their float64 products are exact
        return cosine_rows(_centred(a, precision), _centred(b, precision))
    return cosine_rows(a, b)


def similarity_matrix(
    queries: np.ndarray, documents: np.ndarray, precision: str, dimension: int, *, cosine: bool = True
) -> np.ndarray:
    """Query × document scores (float64) for ranking: dot products for float32/float16, ``D − 2·Hamming`` for
    binary/ubinary, for int8/uint8 the cosine of the codes (uint8 centred by −128) or, with ``cosine=False``,
    their raw integer dot products (which weigh each dimension by 1/step² and favour long code vectors)."""
    precision = check_precision(precision)
    if precision in PACKED_PRECISIONS:
        return (dimension - 2 * hamming_distance(queries, documents)).astype(np.float64)
    if precision in CALIBRATED_PRECISIONS:
        x, y = _centred(queries, precision), _centred(documents, precision)
        return unit_rows(x) @ unit_rows(y).T if cosine else (x @ y.T).astype(np.float64)
    return queries.astype(np.float64) @ documents.astype(np.float64).T


def _check_dense(encoder: Any, precisions: list[str]) -> None:
    """`OptionError` for a sparse (SPLADE) encoder and a precision beyond float32: its rows, made dense, are
    vocabulary-wide (int8 found dimensions without spread; binary packed a sign per vocabulary entry)."""
    if getattr(encoder, "is_sparse", False) and precisions != ["float32"]:
        named = ", ".join(precisions[1:])
        raise OptionError(f"precision {named} is for dense models; {display_name(encoder)} is a sparse (SPLADE) model")


def calibration_of(vectors: np.ndarray, count: int, encoder: Any, label: str) -> Calibration:
    """The ranges of the first ``count`` rows of ``vectors`` (pooled with ``label``: a strategy alone, not
    normalised, or the model's own pooling — None or its strategies' label —, normalised as the model does)."""
    model = display_name(encoder) if hasattr(encoder, "model_path") else None
    own = label in (None, "+".join(encoder.strategies))
    try:
        return Calibration.from_vectors(
            vectors[:count], model=model, model_id=getattr(encoder, "model_id", None),
            pooling=tuple(encoder.strategies) if label is None else tuple(label.split("+")),
            normalize=bool(encoder.normalize) if own else False,
        )  # fmt: skip
    except ValueError as err:
        # (the sentences there were: --calibration-size may ask for more)
        message = f"cannot calibrate {pooling_name(label)} on the first {len(vectors[:count])} sentences: {err}"
        raise OptionError(message) from None


def check_calibration_size(size: Any, precisions: Sequence[str], calibration: Any, caller: str = "python") -> None:
    """``size`` an int, and at least 2 texts where int8/uint8 ranges come from the data (no ``calibration``
    given): embed's rule and message, before any model runs (a size of 1 was refused after encoding every text)."""
    check_int(size, "calibration_size", error=OptionError)
    calibrated = [precision for precision in precisions if precision in CALIBRATED_PRECISIONS]
    if calibrated and calibration is None and size < 2:
        EncodeRequest(precision=calibrated[0], calibration_size=size, caller=caller).check()


def evaluate_precisions(
    encoder: Any, pairs: Pairs, labels: str | Sequence[str], precisions: Sequence[str], *,
    calibration: Calibration | None = None, calibration_size: int = DEFAULT_CALIBRATION_SIZE,
    batch_size: int = 64, prompt: str | None = None, prompt_name: str | None = None, progress: bool = False,
    max_batch_tokens: int | None = None,
) -> tuple[dict[str, float], dict[str, list[PrecisionScore]], dict[str, Calibration]]:  # fmt: skip
    """STS Spearman ×100 per pooling (float32, as `evaluate_pairs`) and per precision, from one forward pass
    → (float32 scores, precision table per pooling, calibrations used). int8/uint8 ranges come from
    ``calibration`` (then only the encoder's own pooling is scored, and the calibration must fit it), else
    from the first ``calibration_size`` distinct sentences (every pair's first, then the second ones), per pooling."""
    precisions = parse_precisions(precisions)  # (list("int8,ubinary") was its characters: 'i' unknown)
    check_calibration_size(calibration_size, precisions, calibration)
    labels = label_list(labels, encoder)
    _check_dense(encoder, precisions)
    needs_ranges = any(p in CALIBRATED_PRECISIONS for p in precisions)
    own = "+".join(encoder.strategies)
    if calibration is not None:  # the encoder's own pooling, named by its strategies
        calibration.check_encoder(encoder)
        labels = [own]
    # the model's row holds its own vectors, normalised too (embed's codes; raw mean rows kept int8 better)
    pooled_as = {label: None if label == own else label for label in labels}
    vectors, i1, i2 = pool_pairs(
        encoder, pairs, list(dict.fromkeys(pooled_as.values())), batch_size=batch_size, prompt=prompt,
        prompt_name=prompt_name, progress=progress, max_batch_tokens=max_batch_tokens,
    )  # fmt: skip
    calibrations: dict[str, Calibration] = {}
    table: dict[str, list[PrecisionScore]] = {}
    for label in labels:
        floats = vectors[pooled_as[label]]
        if needs_ranges:
            calibrations[label] = calibration or calibration_of(floats, calibration_size, encoder, label)
        table[label] = rows = []
        for precision in precisions:
            codes = floats if precision == "float32" else quantize(floats, precision, calibrations.get(label))
            similarity = similarity_rows(codes[i1], codes[i2], precision, floats.shape[1])
            value = spearman_x100(similarity, pairs.scores, f"{pooling_name(label)} in {precision}")
            base = rows[0].score if rows else value
            size = stored_bytes(precision, floats)
            rows.append(PrecisionScore(precision, value, kept_ratio(value, base), size))
    return {label: rows[0].score for label, rows in table.items()}, table, calibrations


def stored_bytes(precision: str, vectors: Any) -> int:
    """Bytes per stored vector: `bytes_per_vector` of dense rows; for a sparse model's CSR rows (scipy or
    `SparseRows`), the mean bytes of a row in `tokenpool embed`'s .npz, rounded: an int32 index and a float32
    value per non-zero, and the row's int64 pointer (never the 4 × vocabulary bytes of a dense row)."""
    if hasattr(vectors, "indptr"):
        return round(8 * (int(vectors.indptr[-1]) / (len(vectors.indptr) - 1) + 1))
    return bytes_per_vector(precision, vectors.shape[-1])


def format_precision_table(label: str | None, rows: Sequence[PrecisionScore], source: str) -> str:
    """``precision  bytes  Spearman x100  kept`` for one pooling."""
    columns = [("precision", 10, "<"), ("bytes", 6, ">"), ("Spearman x100", 13, ">"), ("kept", 8, ">")]
    cells = [(row.precision, str(row.bytes), f"{row.score:.2f}", _percent(row.kept)) for row in rows]
    return "\n".join([f"precisions for {pooling_name(label, quote=False)} ({source})", *text_table(columns, cells)])


@dataclass(frozen=True)
class RetrievalPrecisionRow:
    """One way of searching with compact codes: its metrics, nDCG@10 / float32 nDCG@10, bytes per vector."""

    name: str
    precision: str
    scores: RetrievalScores
    kept: float | None  # None: the float32 nDCG@10 is 0, no ratio
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        figures = {"precision": self.precision, **self.scores.as_dict()}
        return {**figures, "kept": self.kept, "bytes_per_vector": self.bytes}


def search_vectors(codes: np.ndarray, precision: str, dimension: int) -> np.ndarray:
    """float32 vectors whose dot products rank like `similarity_matrix` on ``codes``: unit-length vectors
    (float16/32), unit-length centred codes (int8/uint8), ±1 signs (binary/ubinary: D − 2·Hamming)."""
    precision = check_precision(precision)
    if precision in PACKED_PRECISIONS:
        return unpack_signs(codes, dimension=dimension, precision=precision)
    if precision in CALIBRATED_PRECISIONS:
        return unit_rows(_centred(codes, precision)).astype(np.float32)
    return unit_rows(codes.astype(np.float32)).astype(np.float32)


def _rescored(
    queries: np.ndarray, stored: np.ndarray, candidates: np.ndarray, ties: np.ndarray, k: int
) -> np.ndarray:
    """Each query's ``candidates`` (document rows, −1 = none) re-ranked by the cosine of ``queries[q]`` and
    ``stored[d]`` (float32 query against the stored codes; cosine as the float32 row: a dot product favoured long
    dequantized documents of a model that does not normalise), equal scores by ``ties`` (higher first) → (Q, k)
    rows, −1 past the end."""
    out = np.full((len(queries), k), -1, dtype=np.int64)
    for q in range(len(queries)):
        rows = candidates[q][candidates[q] >= 0]
        # each row's own sum (a matrix-vector product rounds a row by its place in the list: equal codes
        # scored apart by a bit, out of the tie order)
        scores = (unit_rows(stored[rows]) * queries[q].astype(np.float64)).sum(axis=1)
        order = np.lexsort((-ties[rows], -scores))[:k]
        out[q, : len(order)] = rows[order]
    return out


def evaluate_retrieval_precisions(
    data: Any, encoder: Any, precisions: Sequence[str], *, calibration: Calibration | None = None,
    calibration_size: int = DEFAULT_CALIBRATION_SIZE, rescore: int | Sequence[int] = (40,),
    batch_size: int = 64, query_prompt: str | None = None, progress: bool = False,
    max_batch_tokens: int | None = None, split: str | None = None,
) -> tuple[list[RetrievalPrecisionRow], Calibration | None]:  # fmt: skip
    """nDCG@10, recall@100 and MRR@10 of exact search over a BEIR folder (``split``: as `evaluate_retrieval`'s)
    or `RetrievalSet` with each precision's codes (the encoder's own pooling, documents truncated), and for
    int8/ubinary with the top ``rescore`` candidates re-ranked by the cosine of the float32 query and the stored
    codes. int8/uint8 ranges (queries' too): ``calibration``, else the first ``calibration_size`` documents."""
    precisions = parse_precisions(precisions)  # (list("int8,ubinary") was its characters: 'i' unknown)
    # (a negative size sliced documents[:-5]: every document but the last 5, silently; checked before the model runs)
    check_calibration_size(calibration_size, precisions, calibration)
    rescore = _rescore_depths(rescore)
    budget = check_budget(max_batch_tokens)
    retrieval_set = retrieval_set_of(data, split)
    check_truncating(encoder)  # (encode_documents pooled every window of an encoder built for "windows")
    _check_dense(encoder, precisions)
    if calibration is not None:
        calibration.check_encoder(encoder)
    if getattr(encoder, "is_sparse", False):
        return _sparse_rows(retrieval_set, encoder, batch_size=batch_size, query_prompt=query_prompt,
                            max_batch_tokens=max_batch_tokens, progress=progress), None  # fmt: skip
    shown = progress if progress is None else check_bool("progress", progress)  # (None: encode's own choice)
    options = {"batch_size": batch_size, "show_progress_bar": shown, **budget}
    queries = encoder.encode_queries(retrieval_set.query_texts, prompt=query_prompt, **options)
    documents = encoder.encode_documents(retrieval_set.doc_texts, **options)
    if any(p in CALIBRATED_PRECISIONS for p in precisions) and calibration is None:
        try:
            first = f"first {len(documents[:calibration_size])} documents"  # (the corpus may hold fewer)
            calibration = Calibration.for_encoder(encoder, documents[:calibration_size], source=first)
        except ValueError as err:
            raise OptionError(f"cannot calibrate on the {first}: {err}") from None
    table = _PrecisionSearch(retrieval_set, documents.shape[1])
    for precision in precisions:
        table.add_precision(precision, queries, documents, calibration, rescore)
    return table.rows, calibration


def _sparse_rows(retrieval_set: Any, encoder: Any, **options: Any) -> list[RetrievalPrecisionRow]:
    """A sparse (SPLADE) model's one row, float32: its CSR rows by dot product, as `evaluate_retrieval` ranks
    them (the cosine of vocabulary-wide dense rows ranked otherwise: a float32 row not the model's), with the
    bytes its documents' rows are stored in (`stored_bytes`)."""
    sizes: list[int] = []

    def truncated(*args: Any, **mode_options: Any) -> dict[Any, Any]:  # truncate_mode, counting its rows' bytes
        rows = truncate_mode(*args, **mode_options)
        sizes.append(stored_bytes("float32", rows[None].vectors))
        return rows

    result = evaluate_retrieval(retrieval_set, encoder, modes={"truncate": truncated}, **options)
    table = _PrecisionSearch(retrieval_set, encoder.output_width())
    table.add("float32 (dot product of sparse rows)", "float32", result.rows[0].ranking.indices, sizes[0])
    return table.rows


def _rescore_depths(rescore: int | Sequence[int]) -> list[int]:
    """The rescoring depths: one positive int, or a sequence of them (``rescore=40`` was a TypeError, 'int' is
    not iterable, after nothing was checked)."""
    depths = [rescore] if is_int(rescore) else rescore
    if isinstance(depths, str) or not isinstance(depths, Sequence):
        raise OptionError(f"rescore must be a positive int or a list of them, got {rescore!r}")
    for candidates in depths:
        if not is_int(candidates) or candidates < 1:
            raise OptionError(f"rescore candidates must be positive ints, got {candidates!r}")
    return [int(candidates) for candidates in depths]


RESCORED_PRECISIONS = ("int8", "ubinary")  # the precisions whose top candidates `--rescore` ranks again
_HOW = {"float32": "", "float16": "", "int8": " (cosine of the codes)", "uint8": " (cosine of the codes)"}


class _PrecisionSearch:
    """The rows of `evaluate_retrieval_precisions`: exact search over each precision's codes, scored against
    the set's judgements (the first row, float32 in practice, is what nDCG@10 is kept against)."""

    def __init__(self, retrieval_set: Any, dimension: int) -> None:
        self.context = SearchContext(retrieval_set)
        self.dimension = dimension
        self.rows: list[RetrievalPrecisionRow] = []

    def add(self, name: str, precision: str, indices: np.ndarray, size: int | None = None) -> None:
        """The row of a ranking; ``size``: bytes per stored vector (None: `bytes_per_vector`)."""
        _, scores = self.context.scores(indices)
        base = self.rows[0].scores.ndcg_at_10 if self.rows else scores.ndcg_at_10
        size = bytes_per_vector(precision, self.dimension) if size is None else size
        kept = kept_ratio(scores.ndcg_at_10, base)
        self.rows.append(RetrievalPrecisionRow(name, precision, scores, kept, size))

    def add_precision(
        self, precision: str, queries: np.ndarray, documents: np.ndarray, calibration: Any, rescore: Sequence[int]
    ) -> None:
        """The row of ``precision``'s codes, and for int8/ubinary one row per rescoring depth: the top
        candidates re-ranked by the cosine of the float32 query and the stored (dequantized / ±1) codes."""
        q_codes, d_codes = quantize(queries, precision, calibration), quantize(documents, precision, calibration)
        by_codes = (search_vectors(q_codes, precision, self.dimension), search_vectors(d_codes, precision, self.dimension))
        ranking = self.context.search(*by_codes)
        self.add(precision + _HOW.get(precision, " (Hamming distance)"), precision, ranking.indices)
        if precision not in RESCORED_PRECISIONS:
            return
        if precision == "int8":
            stored = dequantize(d_codes, "int8", calibration)
        else:
            stored = unpack_signs(d_codes, dimension=self.dimension)
        for candidates in rescore:
            shortlist = self.context.search(*by_codes, k=candidates).indices  # (k past the corpus: all of it)
            reranked = _rescored(queries, stored, shortlist, self.context.ties, TOP_K)
            self.add(f"{precision} + float32 rescoring of the top {candidates}", precision, reranked)


def format_retrieval_precision_table(rows: Sequence[RetrievalPrecisionRow], source: str) -> str:
    """One line per way of searching: bytes, nDCG@10, recall@100, MRR@10 (×100) and the nDCG@10 kept."""
    width = max(len("precision"), *(len(row.name) for row in rows))
    figures = [("nDCG@10", 8, ">"), ("recall@100", 10, ">"), ("MRR@10", 7, ">")]
    columns = [("precision", width, "<"), ("bytes", 6, ">"), *figures, ("kept", 8, ">")]
    cells = [(row.name, str(row.bytes), *(f"{100 * v:.2f}" for v in row.scores.as_dict().values()), _percent(row.kept))
             for row in rows]  # fmt: skip
    return "\n".join([f"precisions, exact search ({source}); scores x100", *text_table(columns, cells)])
