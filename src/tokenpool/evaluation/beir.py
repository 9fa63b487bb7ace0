"""Read a retrieval test set in the BEIR layout: ``corpus.jsonl`` (``_id``, ``text``, optional ``title``),
``queries.jsonl`` (``_id``, ``text``) and ``qrels.tsv`` or ``qrels/<split>.tsv`` (a header, then query-id,
corpus-id and an integer score: > 0 relevant, the nDCG gain). A document reads as BEIR's and MTEB's
``(title + " " + text).strip()``; every problem is a one-line `CorpusError` naming the file and the line."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorpusError, OptionError, is_int, parse_int
from ..io.readers import (
    check_encodable,
    decoded_lines,
    is_blank_json,
    json_object,
    open_readable,
    strip_newline,
    where,
)
from ..model.options import spell

__all__ = ["GRADE_LIMIT", "RetrievalSet", "document_text", "read_beir", "resolve_qrels", "retrieval_set_of"]

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_FILE = "qrels.tsv"
GRADE_LIMIT = 2**63  # grades are 64-bit integers, as trec_eval reads them (a C long): their sums stay finite
_FIELDS = ("_id", "title", "text")  # what a record is read for: one given twice is refused (which one is meant?)


def document_text(title: str, text: str) -> str:
    """The string a document is encoded as: BEIR's ``(title + " " + text).strip()``."""
    return (title + " " + text).strip()


@dataclass
class RetrievalSet:
    """A corpus, the queries to evaluate (every judged one, in ``queries.jsonl`` order; one with no grade > 0
    scores 0, as in BEIR) and ``qrels``: {query id: {document id: grade}}, grades ≤ 0 kept as non-relevant."""

    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    name: str = ""
    _doc_positions: dict[str, int] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.doc_ids) != len(self.doc_texts):
            raise ValueError(f"{len(self.doc_ids)} document ids but {len(self.doc_texts)} document texts")
        if len(self.query_ids) != len(self.query_texts):
            raise ValueError(f"{len(self.query_ids)} query ids but {len(self.query_texts)} query texts")
        if not self.doc_ids or not self.query_ids:  # no mean over no query (NaN), no search in no corpus
            raise ValueError(f"a RetrievalSet needs documents and queries, got {len(self.doc_ids)} and "
                             f"{len(self.query_ids)}")  # fmt: skip
        for check in (_check_strings, _check_unique):
            check("document id", self.doc_ids)
            check("query id", self.query_ids)
        _check_strings("document text", self.doc_texts)  # (BM25 failed in bm25s: 'NoneType' has no 'lower')
        _check_strings("query text", self.query_texts)
        positions = {doc_id: i for i, doc_id in enumerate(self.doc_ids)}
        if not isinstance(self.qrels, Mapping):
            raise ValueError(f"qrels must map query ids to {{document id: grade}}, got {type(self.qrels).__name__}")
        known = set(self.query_ids)
        unasked = next((query_id for query_id in self.qrels if query_id not in known), None)
        if unasked is not None:  # (its judgements were dropped: a smaller set than the one given, silently)
            raise ValueError(f"qrels judge query {unasked!r}, which is not among the query ids")
        for query_id in self.query_ids:
            _check_grades(query_id, self.qrels.get(query_id), positions)
        self._doc_positions = positions

    def doc_position(self, doc_id: str, default: int | None = None) -> int:
        """Row of ``doc_id`` in ``doc_ids`` (KeyError when absent, unless a ``default`` is given)."""
        assert self._doc_positions is not None
        return self._doc_positions[doc_id] if default is None else self._doc_positions.get(doc_id, default)

    def relevance(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The positive judgements as arrays ``(query row, document row, grade)``, sorted by query row."""
        judged = [(q, self.doc_position(doc_id), grade) for q, query_id in enumerate(self.query_ids)
                  for doc_id, grade in self.qrels[query_id].items() if grade > 0]  # fmt: skip
        q_rows, d_rows, grades = np.asarray(judged, dtype=np.float64).reshape(-1, 3).T
        return q_rows.astype(np.int64), d_rows.astype(np.int64), grades.copy()


def _check_grades(query_id: str, grades: Any, positions: Mapping[str, int]) -> None:
    """A query's judgements: a non-empty ``{document id: grade}`` of known documents and integer grades, as
    trec_eval takes them (a float grade was a fractional gain, NaN silently non-relevant)."""
    if grades is not None and not isinstance(grades, Mapping):
        raise ValueError(f"qrels of query {query_id!r} must map document ids to grades, got {grades!r:.80}")
    if not grades:
        raise ValueError(f"query {query_id!r} has no judgement in qrels")
    for doc_id, grade in grades.items():
        if doc_id not in positions:
            raise ValueError(f"qrels of query {query_id!r} name the unknown document {doc_id!r}")
        why = _grade_error(grade)
        if why:
            raise ValueError(f"qrels of query {query_id!r} grade document {doc_id!r} {why}")


def _grade_error(grade: Any) -> str:
    """Why ``grade`` is no qrels grade ("" when it is one): an integer in [-2**63, 2**63) (10**400 was an
    OverflowError, grades of 10**308 summed to an infinite ideal DCG)."""
    if not is_int(grade):
        return f"{grade!r} ({type(grade).__name__}); a grade must be an integer"
    if not -GRADE_LIMIT <= int(grade) < GRADE_LIMIT:
        shown = Decimal(int(grade)).normalize()  # (str() refuses over 4300 digits)
        return f"{shown:.20g}, outside the 64-bit integers (-2**63 to 2**63 - 1, as trec_eval reads a grade)"
    return ""


def _check_strings(what: str, values: list[str]) -> None:
    """Refuse an id or text that is not a string (ties are ordered by the ids' UTF-8 bytes, as trec_eval orders
    them), None included (it was the search's "none found" and passed)."""
    bad = next((i for i, value in enumerate(values) if not isinstance(value, str)), None)
    if bad is not None:
        value = values[bad]
        raise ValueError(f"every {what} must be a string, got {value!r:.80} ({type(value).__name__}) at position {bad}")


def _check_unique(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}")
        seen.add(value)


def resolve_qrels(folder: Path, split: str | None = None) -> Path:
    """The judgements file: ``qrels/<split>.tsv`` when a split is named, else ``qrels.tsv``, else
    ``qrels/test.tsv`` (how BEIR's downloads ship)."""
    if split is not None:
        if not split or os.sep in split or "/" in split or split in (".", ".."):
            raise CorpusError(f"split must be a plain name such as test or dev, got {split!r}")
        path = folder / "qrels" / f"{split}.tsv"
        if not path.is_file():
            raise CorpusError(f"{where(folder)}: no qrels/{split}.tsv (splits found: {_splits(folder) or 'none'})")
        return path
    for candidate in (folder / QRELS_FILE, folder / "qrels" / "test.tsv"):
        if candidate.is_file():
            return candidate
    found = _splits(folder)
    hint = f" (splits found in qrels/: {found}; read one with {spell('split', 'NAME')})" if found else ""
    raise CorpusError(f"{where(folder)}: no {QRELS_FILE} (nor qrels/test.tsv); a BEIR folder needs relevance judgements{hint}")


def _splits(folder: Path) -> str:
    """The split names of ``folder``'s ``qrels/*.tsv`` files, for a message ("" when qrels/ is no folder)."""
    return ", ".join(sorted(p.stem for p in (folder / "qrels").glob("*.tsv")))


def retrieval_set_of(data: Any, split: str | None = None) -> RetrievalSet:
    """``data`` as a `RetrievalSet`: one already read, or a folder read by `read_beir` (``split`` picking
    ``qrels/<split>.tsv``, which a set already read cannot take: `OptionError`)."""
    if isinstance(data, RetrievalSet):
        if split is not None:
            raise OptionError(f"split={split!r} applies to a folder; this RetrievalSet is already read")
        return data
    return read_beir(data, split)


def read_beir(folder: str | os.PathLike, split: str | None = None) -> RetrievalSet:
    """Read a BEIR-layout folder (see the module docstring); ``split`` picks ``qrels/<split>.tsv``."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CorpusError(
            f"{where(Path(folder))}: not a folder (a BEIR folder holds {CORPUS_FILE}, {QUERIES_FILE}, {QRELS_FILE})"
        )
    missing = [name for name in (CORPUS_FILE, QUERIES_FILE) if not (root / name).is_file()]
    if missing:
        raise CorpusError(
            f"{where(Path(folder))}: missing {' and '.join(missing)} (a BEIR folder holds {CORPUS_FILE}, "
            f"{QUERIES_FILE} and {QRELS_FILE})"
        )
    qrels_path = resolve_qrels(root, split)

    doc_ids, doc_texts = [], []
    corpus_path = root / CORPUS_FILE
    for number, doc_id, record in _records(corpus_path):
        text = _string_field(record, "text", corpus_path, number, required=True)
        title = _string_field(record, "title", corpus_path, number, required=False)
        doc_ids.append(doc_id)
        doc_texts.append(document_text(title, text))
    if not doc_ids:
        raise CorpusError(f"{where(corpus_path)}: no documents")

    queries_path = root / QUERIES_FILE
    queries = {
        query_id: (number, _string_field(record, "text", queries_path, number, required=True))
        for number, query_id, record in _records(queries_path)
    }
    if not queries:
        raise CorpusError(f"{where(queries_path)}: no queries")

    qrels = _read_qrels(qrels_path, queries, set(doc_ids))
    if not any(max(grades.values()) > 0 for grades in qrels.values()):
        raise CorpusError(f"{where(qrels_path)}: no query has a relevant document (score > 0)")
    query_ids = [qid for qid in queries if qid in qrels]
    for qid in query_ids:
        number, text = queries[qid]
        if not text.strip():
            raise CorpusError(f"{where(queries_path)}, line {number}: query {qid!r} has an empty text")
    texts, judged = [queries[qid][1] for qid in query_ids], {qid: qrels[qid] for qid in query_ids}
    return RetrievalSet(doc_ids, doc_texts, query_ids, texts, judged, root.resolve().name)


def _records(path: Path) -> Iterator[tuple[int, str, dict]]:
    """(line number, _id, JSON object) for every non-blank line of ``path``; an _id seen before is refused."""
    first_line: dict[str, int] = {}
    with open_readable(str(path)) as fh:
        for number, line in decoded_lines(fh, str(path)):  # (the corpus readers' decoding and UTF-16 hint)
            if is_blank_json(line):  # (JSON's whitespace: a line of U+000C is refused, as `embed` does)
                continue
            record = json_object(line, str(path), number, _FIELDS)  # (the corpus reader's checks and messages)
            record_id = _record_id(record, path, number)
            if record_id in first_line:
                raise CorpusError(f"{where(path)}, line {number}: duplicate _id {record_id!r} (first on line "
                                  f"{first_line[record_id]})")  # fmt: skip
            first_line[record_id] = number
            yield number, record_id, record


def _record_id(record: dict, path: Path, number: int) -> str:
    value = record.get("_id")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise CorpusError(f"{where(path)}, line {number}: _id must be a string, got {_shown(record, '_id')}")
    value = str(value)
    check_encodable(value, str(path), number, "_id")  # (a \ud800 escape failed in the tie order, file unnamed)
    if not value or value != value.strip() or "\t" in value or "\n" in value:
        raise CorpusError(
            f"{where(path)}, line {number}: _id {value!r} is empty or has surrounding/inner whitespace "
            f"that qrels.tsv cannot name"
        )
    return value


def _string_field(record: dict, name: str, path: Path, number: int, *, required: bool) -> str:
    value = record.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise CorpusError(f"{where(path)}, line {number}: {name!r} must be a string, got {_shown(record, name)}")
    check_encodable(value, str(path), number, name)  # a JSON \ud800 escape: refused here, as embed refuses it
    return value


def _shown(record: dict, name: str) -> str:
    """How a message names a record's field that is no string: missing, null (a field there but null was named
    missing), or its value and type."""
    value = record.get(name)
    return "missing" if name not in record else "null" if value is None else f"{value!r:.80} ({type(value).__name__})"


def _read_qrels(path: Path, queries: dict[str, tuple[int, str]], docs: set[str]) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open_readable(str(path)) as fh:
        lines = [(number, strip_newline(line)) for number, line in decoded_lines(fh, str(path)) if line.strip()]
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != 3:
            raise CorpusError(
                f"{where(path)}, line {number}: {len(fields)} tab-separated field(s), expected 3 "
                f"(query-id, corpus-id, score)"
            )
        query_id, doc_id, score_text = (f.strip() for f in fields)
        score = parse_int(score_text)
        judged = query_id in queries and doc_id in docs  # a judgement with a bad score is no header
        if score is None and not judged and number == lines[0][0]:  # the header (query-id corpus-id score)
            continue
        if score is None:
            raise CorpusError(f"{where(path)}, line {number}: score {score_text!r} is not an integer")
        if why := _grade_error(score):
            raise CorpusError(f"{where(path)}, line {number}: score {why}")
        if query_id not in queries:
            raise CorpusError(f"{where(path)}, line {number}: unknown query id {query_id!r} (not in {QUERIES_FILE})")
        if doc_id not in docs:
            raise CorpusError(f"{where(path)}, line {number}: unknown corpus id {doc_id!r} (not in {CORPUS_FILE})")
        grades = qrels.setdefault(query_id, {})
        if grades.get(doc_id, score) != score:
            raise CorpusError(
                f"{where(path)}, line {number}: query {query_id!r} judges document {doc_id!r} twice, "
                f"with scores {grades[doc_id]} and {score}"
            )
        grades[doc_id] = score
    if not qrels:
        raise CorpusError(f"{where(path)}: no judgements")
    return qrels

