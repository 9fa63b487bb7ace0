"""STS-style evaluation: read scored sentence pairs, pool one forward pass every way, report Spearman ×100
(computed here, average ranks for ties, so that the core needs no scipy)."""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.sparse import SparseRows
from ..core.strategies import parse_combination, parse_strategies, split_names, strategy_names
from ..errors import CorpusError, parse_number
from ..io.readers import csv_lines, csv_rows, open_binary, where
from .common import encode_every_way, plot_file, pooling_name, text_table, unit_rows

SCORE_NAMES = ("score", "label", "similarity", "gold", "gold_score", "relatedness")
DENSE_STRATEGIES = strategy_names("hidden", first="mean")  # `evaluate --strategies all` on a dense model


@dataclass
class Pairs:
    """Sentence pairs and their gold similarity scores."""

    first: list[str]
    second: list[str]
    scores: np.ndarray  # float64

    def __post_init__(self) -> None:  # (["a", "b"] against ["c"] compared "c" with both: a silent figure)
        counts = (len(self.first), len(self.second), len(self.scores))
        if len(set(counts)) > 1:
            raise ValueError("sentence pairs need one second sentence and one score per first sentence, got "
                             "{} first sentences, {} second sentences and {} scores".format(*counts))

    def __len__(self) -> int:
        return len(self.scores)


def _number(text: str) -> float | None:
    """``text`` (between blanks) as a float when it is a plain decimal (`parse_number`); one beyond float64's
    range reads as ±inf or 0 (`_score` refuses those)."""
    return parse_number(text.strip())


def _score(text: str, where: str) -> float:
    """The gold score ``text`` (from ``where``: "PATH, line N"), or a `CorpusError` naming it as written: not a
    plain decimal, or one float64 cannot hold (over ~1.8e308; or a nonzero one that would read as 0, tied with
    the pairs scored 0)."""
    value = _number(text)
    if value is None:
        raise CorpusError(f"{where}: score {text!r} is not a number")
    if not np.isfinite(value):
        raise CorpusError(f"{where}: score {text!r} is too large for a float64 (at most about 1.8e308)")
    if value == 0 and re.search(r"[1-9]", text.strip().lower().partition("e")[0]):  # (a nonzero digit)
        raise CorpusError(f"{where}: score {text!r} is too small for a float64: it would read as 0")
    return value


def _is_column_name(text: str) -> bool:
    """Whether a first line's score field is a header's column name in any script (``score``, ``ähnlichkeit``,
    ``相似度``, ``समानता``: a letter or ``_``, then letters, digits, combining marks, ``_ -``), not a malformed
    score ("3,2", "", "n/a", "nan", "½", "٣"), which would have dropped that pair unread."""
    name = text.strip()
    word = name[:1].isalpha() or name[:1] == "_"
    inner = all(c.isalnum() or c in "_ -" or unicodedata.category(c)[0] == "M" for c in name)
    return word and inner and name.lower() not in ("nan", "inf", "infinity")


def read_pairs(path: str) -> Pairs:
    """Read the STS-B layout (tab-separated, no header, fields 5–7 = score, s1, s2, extra columns ignored) or
    a 3-column file with a header (``score,s1,s2`` or ``s1,s2,score``; comma- or tab-separated); ``-``: stdin."""
    with open_binary(path) as fh:  # (read once: a pipe, or stdin for "-", too)
        raw = fh.read()
    numbered = csv_lines(io.BytesIO(raw), path)  # the non-blank lines, numbered from 1, without their endings
    path, source = where(path), path  # (the readers name ``source`` themselves: naming it twice quoted it twice)
    lines = [(number, line.rstrip("\r\n")) for number, line in numbered if line.strip()]
    if not lines:
        raise CorpusError(f"{path}: no sentence pairs")
    first = lines[0][1].split("\t")
    if len(first) >= 7:
        second = lines[1][1].split("\t") if len(lines) > 1 else []
        # a header: the score column's name in column 5 (line 2 is then read, and refused, as a pair: a bad or
        # missing line 2 was "line 1: score 'score' is not a number"), or another name above a pair (refused)
        named = _is_column_name(first[4]) and first[4].strip().lower().replace(" ", "_") in SCORE_NAMES
        header = named or (_is_column_name(first[4]) and len(second) >= 7 and _number(second[4]) is not None)
        if header and not named:  # GLUE's: old_index
            raise CorpusError(
                f"{path}, line 1: the header names column 5 {first[4]!r}, where the STS-B layout (genre, file, "
                f"year, id, score, sentence 1, sentence 2) has the score; name it score, or keep only the two "
                f"sentence columns and the score column (3 columns with a header)"
            )
        if header and len(lines) == 1:
            raise CorpusError(f"{path}: a header but no sentence pairs")
        return _pairs(path, _stsb_rows(path, lines[1:] if header else lines))
    return _pairs(path, _three_column_rows(path, lines, raw, source))


def check_scorable(pairs: Pairs, path: str) -> None:
    """Spearman needs at least 2 pairs whose gold scores differ: refuse (before any model loads) otherwise."""
    if len(pairs.scores) < 2 or np.ptp(pairs.scores) == 0:
        n = len(pairs)
        found = f"got {n} pair{'' if n == 1 else 's'}" if n < 2 else f"all {n} pairs score {pairs.scores[0]:g}"
        raise CorpusError(f"{path}: need at least 2 pairs with differing gold scores, {found}")


def _stsb_rows(path: str, lines: list[tuple[int, str]]) -> Iterator[tuple[int, str, str, str]]:
    for number, text in lines:
        fields = text.split("\t")
        if len(fields) < 7:
            raise CorpusError(
                f"{path}, line {number}: {len(fields)} tab-separated fields; the STS-B layout has 7 "
                f"(genre, file, year, id, score, sentence 1, sentence 2)"
            )
        yield number, fields[4], fields[5], fields[6]


def _three_column_rows(
    path: str, lines: list[tuple[int, str]], raw: bytes, source: str
) -> Iterator[tuple[int, str, str, str]]:
    if "\t" in lines[0][1]:
        rows = [(number, text.split("\t")) for number, text in lines]
    else:  # RFC 4180 rows of the file's bytes ``raw``, named by the line where each starts (a quoted line
        # break was "malformed CSV"); a line of blanks is no row, as in ``lines`` (a quoted blank field is one)
        starts = {number for number, _ in lines}
        rows = [(n, row) for n, row in csv_rows(io.BytesIO(raw), source) if n in starts]
    (first, header), body = rows[0], [row for _, row in rows[1:]]
    if len(header) != 3:
        raise CorpusError(
            f"{path}: expected the STS-B layout (7 tab-separated fields, no header) or a header with 3 "
            f"columns (score,s1,s2 or s1,s2,score); the first line has {len(header)} field(s)"
        )
    if not body:
        raise CorpusError(f"{path}: a header but no sentence pairs")
    named = [i for i, name in enumerate(header) if name.strip().lower() in SCORE_NAMES]
    if len(named) == 1 and named[0] in (0, 2):
        col = named[0]
    elif _number(body[0][0] if body[0] else "") is not None:
        col = 0
    elif len(body[0]) == 3 and _number(body[0][2]) is not None:
        col = 2
    else:
        raise CorpusError(
            f"{path}: cannot tell which column holds the score; name it 'score' in the header "
            f"(first or last column)"
        )
    if not _is_column_name(header[col]):  # a pair where the header should be (its score a number, or a bad
        raise CorpusError(  # one such as "4_5" or "n/a"): it would be dropped unread
            f"{path}, line {first}: a pair (score {header[col]!r}) where the header should be; a 3-column "
            f"file starts with a header line (score,s1,s2 or s1,s2,score)"
        )
    s1, s2 = (1, 2) if col == 0 else (0, 1)
    for number, row in rows[1:]:
        if len(row) != 3:
            raise CorpusError(f"{path}, line {number}: {len(row)} field(s), expected 3")
        yield number, row[col], row[s1], row[s2]


def _pairs(path: str, rows: Iterable[tuple[int, str, str, str]]) -> Pairs:
    """The pairs of (line number, score, sentence 1, sentence 2) rows; every score must be a number."""
    first, second, scores = [], [], []
    for number, text, a, b in rows:
        scores.append(_score(text, f"{path}, line {number}"))
        first.append(a)
        second.append(b)
    return Pairs(first, second, np.asarray(scores, dtype=np.float64))


def average_ranks(values: Any) -> np.ndarray:
    """1-based ranks of ``values``; tied values share the mean of the ranks they span."""
    x = np.asarray(values, dtype=np.float64).ravel()
    # (return_index makes the sort stable: NaNs, each its own value, are ranked in turn)
    found = np.unique(x, return_index=True, return_inverse=True, return_counts=True, equal_nan=False)
    inverse, counts = found[2], found[3]
    return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # a group's last rank − half its other copies


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation of two equal-length samples (NaN when one side is constant)."""
    a, b = (np.asarray(v, dtype=np.float64).ravel() for v in (x, y))
    if a.shape != b.shape:
        raise ValueError(f"spearman needs two samples of one length, got {a.size} and {b.size}")
    if a.size < 2:
        raise ValueError(f"spearman needs at least 2 pairs, got {a.size}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("spearman got NaN values")
    ra, rb = (ranks - ranks.mean() for ranks in (average_ranks(a), average_ranks(b)))
    denominator = np.sqrt(np.dot(ra, ra) * np.dot(rb, rb))
    if denominator == 0:
        return float("nan")
    return float(np.clip(np.dot(ra, rb) / denominator, -1.0, 1.0))


def spearman_x100(similarity: Any, gold: Any, what: str) -> float:
    """Spearman ×100 of a model's similarities against the gold scores; a `CorpusError` naming ``what`` (the
    pooling, say) when it is undefined because every pair got the same similarity, never a NaN score."""
    value = spearman(similarity, gold)
    if np.isnan(value):
        side = (
            "the gold scores are all equal"
            if np.ptp(np.asarray(gold, dtype=np.float64)) == 0
            else f"{what} gives every pair the same similarity (is max_length so short that every text "
            f"keeps the same tokens?)"
        )
        raise CorpusError(f"Spearman is undefined: {side}")
    return 100.0 * value


def cosine_rows(a: Any, b: Any) -> np.ndarray:
    """Row-wise cosine similarity in float64; a zero vector has similarity 0 with anything. Rows are dense
    arrays or, both, sparse rows (`SparseRows` or scipy: a SPLADE model's vectors, never made dense)."""
    if not all(isinstance(v, SparseRows) or hasattr(v, "tocsr") for v in (a, b)):
        return np.einsum("ij,ij->i", unit_rows(a), unit_rows(b))
    a, b = (
        (v.to_scipy() if isinstance(v, SparseRows) else v.tocsr()).astype(np.float64) for v in (a, b)
    )  # fmt: skip

    def row_sums(m: Any) -> np.ndarray:
        return np.asarray(m.sum(axis=1), dtype=np.float64).reshape(-1)

    dots, norms = row_sums(a.multiply(b)), np.sqrt(row_sums(a.multiply(a)) * row_sums(b.multiply(b)))
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def strategy_labels(spec: str, sparse: bool = False) -> list[str]:
    """``all`` → every strategy that fits the model; otherwise the comma-separated names (``a+b`` concatenates)."""
    if spec.strip().lower() == "all":
        return ["splade"] if sparse else list(DENSE_STRATEGIES)
    parts = split_names(spec, separators=",")
    labels = list(dict.fromkeys("+".join(m.value for m in parse_strategies(part)) for part in parts))
    if not labels:
        raise ValueError("no pooling strategy given; use --pooling all or names such as mean,cls")
    return labels


def label_list(labels: str | Sequence[str | None], encoder: Any) -> list[Any]:
    """``labels`` as a list: a string is read as `strategy_labels` reads ``--pooling`` (``"mean"`` was pooled
    as the strategies 'm', 'e', 'a', 'n': "unknown pooling strategy 'm'"), and so is each string of a list, as
    `evaluate_retrieval` reads its ``pooling`` list (``["mean,cls"]`` was one row, the concatenation; ``["MEAN"]``
    a row 'MEAN'; ``[]`` an empty table); None (the encoder's own pooling) stays. Every name is read, then each
    label checked combinable (as embed reads --pooling) and against the encoder (`Encoder.check_pooling`: SPLADE
    pools logits only) before the model runs; ``encoder`` None: before a model loads."""
    sparse = bool(getattr(encoder, "is_sparse", False))
    if isinstance(labels, str):
        found = strategy_labels(labels, sparse)
    elif not isinstance(labels, Sequence) or not all(label is None or isinstance(label, str) for label in labels):
        raise TypeError(f"pooling labels must be a string or a list of strings (None: the encoder's own pooling), "
                        f"got {labels!r:.100}")  # fmt: skip
    elif not labels:
        return strategy_labels("", sparse)  # (refused: no strategy given)
    else:
        found = [name for label in labels for name in ([None] if label is None else strategy_labels(label, sparse))]
    for label in found:  # (a SPLADE model's "mean" was refused only after the first batch ran the model)
        if label is None:
            continue
        members = parse_combination(label)  # ("mean+splade" pools no model: it was refused after the model loaded)
        if hasattr(encoder, "check_pooling"):
            encoder.check_pooling(members)
    return list(dict.fromkeys(found))


def evaluate_pairs(
    encoder: Any, pairs: Pairs, labels: str | Sequence[str], *, batch_size: int = 64,
    prompt: str | None = None, prompt_name: str | None = None, progress: bool = False,
    max_batch_tokens: int | None = None,
) -> dict[str, float]:  # fmt: skip
    """Spearman ×100 of cosine similarity vs gold score per strategy, running the model once over the texts.
    ``labels``: strategy labels (``"mean"``, ``"mean+max"``, None for the encoder's own pooling) or one string
    as ``--pooling`` reads it (``"mean,cls"``, ``"all"``)."""
    labels = label_list(labels, encoder)
    vectors, i1, i2 = pool_pairs(
        encoder, pairs, labels, batch_size=batch_size, prompt=prompt, prompt_name=prompt_name,
        progress=progress, max_batch_tokens=max_batch_tokens,
    )  # fmt: skip
    return {
        label: spearman_x100(cosine_rows(vectors[label][i1], vectors[label][i2]), pairs.scores, pooling_name(label))
        for label in labels
    }


def pool_pairs(
    encoder: Any, pairs: Pairs, labels: Sequence[str | None], *, batch_size: int = 64,
    prompt: str | None = None, prompt_name: str | None = None, progress: bool = False,
    max_batch_tokens: int | None = None,
) -> tuple[dict[str | None, np.ndarray], np.ndarray, np.ndarray]:  # fmt: skip
    """One forward pass over the pairs' distinct sentences, pooled per label → (label → float32 vectors of the
    distinct sentences in first-seen order — a sparse model's as scipy CSR rows, never vocabulary-wide dense
    rows —, row of each first sentence, row of each second sentence)."""
    texts = list(dict.fromkeys((*pairs.first, *pairs.second)))
    if not texts:  # (a KeyError on the vectors no batch made, after the model loaded)
        raise ValueError("no sentence pairs to score")
    index = {text: i for i, text in enumerate(texts)}
    vectors = encode_every_way(
        encoder, texts, labels, batch_size=batch_size, prompt=prompt, prompt_name=prompt_name,
        progress=progress, desc="evaluating", max_batch_tokens=max_batch_tokens, sparse_rows=True,
    )  # fmt: skip
    vectors = {label: v.to_scipy() if isinstance(v, SparseRows) else v for label, v in vectors.items()}
    i1 = np.array([index[t] for t in pairs.first], dtype=np.int64)
    i2 = np.array([index[t] for t in pairs.second], dtype=np.int64)
    return vectors, i1, i2


def configured_label(scores: Mapping[str, float], configured: Sequence[str]) -> str | None:
    """The label of the row of the model's configured pooling (its strategies ``configured``, joined as a
    concatenation's label), or None when ``scores`` has no such row: the row tables star and reports name."""
    label = "+".join(configured)
    return label if label in scores else None


def format_table(scores: Mapping[str, float], configured: Sequence[str] = ()) -> str:
    """A plain-text table, one row per strategy; ``*`` marks the model's configured pooling."""
    own = configured_label(scores, configured)
    marked = {label for label in scores if label is None or label == own}  # None: the encoder's own pooling
    names = {label: "(its own)" if label is None else label for label in scores}
    width = max(len("pooling"), *(len(name) + 2 for name in names.values()))
    rows = [(f"{names[label]} *" if label in marked else names[label], f"{value:.2f}") for label, value in scores.items()]
    lines = text_table([("pooling", width, "<"), ("Spearman x100", 13, ">")], rows)
    if marked:
        lines.append("* the model's configured pooling")
    return "\n".join(lines)


def plot_scores(
    scores: Mapping[str, float], path: str, title: str = "", configured: Sequence[str] = ()
) -> None:
    """Bar chart of the scores, saved to ``path`` (needs matplotlib); the configured pooling's bar stands out."""
    labels = list(scores)
    values = [scores[k] for k in labels]
    marked = configured_label(scores, configured)
    with plot_file(path, (max(4.0, 1.1 * len(labels) + 1), 3.6), title) as ax:
        bars = ax.bar(labels, values, color=["#dd8452" if k == marked else "#4c72b0" for k in labels])
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
        ax.set_ylabel("Spearman x100")
        finite = [v for v in values if np.isfinite(v)]
        ax.set_ylim(min(0.0, *finite) if finite else 0.0, 100)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
