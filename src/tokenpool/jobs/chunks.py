"""``tokenpool embed --chunks SPEC``: one row per chunk of every record (`tokenpool.jobs.rows.chunk_rows`,
.npy: with the row index ``OUT.chunks.jsonl``). Every record is checked before the model loads, so the input
is read twice and cannot be stdin.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from ..core.chunking import BoundaryChunks, check_spans, parse_chunks
from ..errors import CorpusError, OptionError, is_int
from ..io.readers import is_regular_file, iter_records, where
from ..io.rows import Parts
from ..model.request import EncodeRequest
from .rows import chunk_parts, chunk_rows, record_id
from .skeleton import EmbedJob, Item, JobFormats, Kind, check_index, id_checked

ROW_OUTPUTS = ("npy", "parquet", "jsonl")  # what chunk and token rows are written as


def check_row_output(out_fmt: str, option: str) -> None:
    """Chunk and token rows are written as .npy (with a row index), .parquet or .jsonl."""
    if out_fmt not in ROW_OUTPUTS:
        raise CorpusError(f"{option} writes .npy, .parquet or .jsonl, not .{out_fmt}")


def check(job: EmbedJob, formats: JobFormats) -> None:
    """The output, the row index, and a pass over the records (every text non-blank, skipped or embedded whole,
    every id one the id column stores, every span list valid); the chunk options are the request's."""
    if not is_regular_file(job.input):  # a pipe read by the check would be empty for the run
        raise CorpusError(
            f"{where(job.input)}: --chunks reads its input twice (a check, then the run); pass a regular file, "
            f"not stdin or a pipe"
        )
    spec = parse_chunks(job.request.chunks)
    check_row_output(formats.output, "--chunks")
    check_index(job, formats.output, chunk_rows(0))
    if spec == "spans":
        check_spans_input(formats.input)
    records = iter_records(job.input, formats.input, field=job.field, column=job.column, extras=_extras(job, spec))
    for line, text, values in id_checked(records, job):
        if not text.strip() and not job.skip_empty and job.request.empty_documents != "whole":
            what = "empty" if not text else "only whitespace"
            raise CorpusError(f"{job.place(line)}: the text is {what}; no chunk to embed (--skip-empty drops it)")
        if spec == "spans" and (text.strip() or not job.skip_empty):  # (a blank text kept is embedded whole)
            _check_spans(job, line, text, values[1])


def check_spans_input(fmt: str, option: str = "--chunks spans") -> None:
    """`CorpusError` unless input of the `READERS` format ``fmt`` carries a list of spans per record (``option``:
    how the caller spells spans chunks; Ray checks its input here too, before it starts)."""
    if fmt not in ("jsonl", "parquet"):
        raise CorpusError(f"{option} needs .jsonl or .parquet input (a list of spans per record), not {fmt}")


def _extras(job: EmbedJob, spec: Any) -> tuple[str, ...]:
    """The record fields read besides the text: the id, and the spans for ``--chunks spans``."""
    return (job.id_field, job.spans_field) if spec == "spans" else (job.id_field,)


def _check_spans(job: EmbedJob, line: int, text: str, spans: Any) -> None:
    if spans is None:
        # (the readers give None for a missing field and a null one alike)
        raise CorpusError(f"{job.place(line)}: field {job.spans_field!r} is missing or null (--chunks spans "
                          f"needs a list of [start, end] pairs)")  # fmt: skip
    if not text.strip() and isinstance(spans, (list, np.ndarray)) and len(spans) == 0:
        return  # a text embedded whole may have no span (`tokenpool.model.chunks.chunk_plan`)
    try:
        check_spans(spans, len(text), "")
    except OptionError:
        try:  # again, for the message: the record's values named as its JSON writes them ([true, 5], null)
            check_spans(_as_json(spans), len(text), "")
        except OptionError as exc:
            raise CorpusError(f"{job.place(line)}: {str(exc).removeprefix('document : ')}") from None


class _JsonArray(list):
    """A record's array whose repr is JSON's (`check_spans` names a bad value by its repr)."""

    def __repr__(self) -> str:
        return f"[{', '.join(map(repr, self))}]"


class _JsonValue:
    """A record's value that no span holds (true, null, 2.5, a string, an object), its repr JSON's."""

    def __init__(self, value: Any) -> None:
        try:
            self.text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            self.text = repr(value)

    def __repr__(self) -> str:
        return self.text


def _as_json(value: Any, depth: int = 2) -> Any:
    """A record's spans (a list of pairs: ``depth`` 2) with the reprs of JSON: lists and integers are kept as
    they are checked, every other value (refused alike) is a `_JsonValue`."""
    value = value.tolist() if isinstance(value, np.ndarray) else value
    if isinstance(value, list) and depth:
        return _JsonArray(_as_json(item, depth - 1) for item in value)
    return value if is_int(value) else _JsonValue(value)


class Chunks(Kind):
    """`chunk_rows`: `Encoder.encode_chunks` of each block's kept records."""

    names_records = True

    def __init__(self, encoder: Any, job: EmbedJob, out_fmt: str) -> None:
        super().__init__(encoder, job, out_fmt)
        self.spec = parse_chunks(job.request.chunks)
        self.extras = _extras(job, self.spec)
        self.width = int(encoder.dimension)
        self.schema = chunk_rows(self.width)

    def options(self) -> dict[str, Any]:
        job, request = self.job, self.job.request
        out = {"chunks": str(self.spec), "chunking": request.chunking, "spans_field": job.spans_field,
               "id_field": job.id_field, "empty_documents": request.empty_documents}  # fmt: skip
        if isinstance(self.spec, BoundaryChunks):  # another version of the splitter may cut other chunks
            try:
                out["splitter"] = f"semantic-text-splitter {version('semantic-text-splitter')}"
            except PackageNotFoundError:  # the split itself then names the missing extra
                out["splitter"] = "semantic-text-splitter (not installed)"
        return out

    def canonical_options(self, stored: dict[str, Any]) -> dict[str, Any]:
        """The stored chunk spec in canonical form (``tokens:4`` → ``tokens:4:0``): runs before stop 35 stored it
        as spelled; one that does not parse is left as it is (and so differs). Runs before stop 47 stored no
        ``empty_documents``: the default's."""
        stored = {"empty_documents": EncodeRequest.default("empty_documents"), **stored}
        try:
            return {**stored, "chunks": str(parse_chunks(stored.get("chunks")))}
        except OptionError:
            return stored

    def encode(self, kept: list[tuple[int, Item]]) -> Parts:
        job = self.job
        ids = [record_id(item[2][0], job.place, item[0]) for _, item in kept]
        result = self.encoder.run(
            job.request, [item[1] for _, item in kept], spans=[item[2][1] for _, item in kept] if self.spec == "spans"
            else None, names=[job.place(item[0]) for _, item in kept], show_progress_bar=False,
        )  # fmt: skip
        return chunk_parts(result, np.array([i for i, _ in kept], dtype=np.int64), ids)
