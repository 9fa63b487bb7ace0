"""`embed_chunks_corpus`: ``tokenpool embed --chunks ...`` — one output row per chunk of every record.

Rows carry the record's number (``doc``, 0-based among the input's records), its id when the input has one
(``--id-field``/``--id-column``), the chunk's number within the record, its character span ``[start, end)`` in
the text, and the vector. npy output gets the row index in a sidecar ``OUT.chunks.jsonl`` (line i = row i);
parquet and jsonl carry the columns. Streaming and resumable exactly as `tokenpool.io.embedjob`: records are
encoded ``chunk_size`` at a time into the work folder, a manifest records the options (chunking mode
included), and the output appears only when complete. Every record is checked (text, spans) before the model
loads; after an error found while encoding (a span that covers no token) the output is not written, and
finished chunks stay in the work folder for ``--resume`` once the record is fixed (as `embed` keeps them).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorpusError, OptionError
from .embedjob import EmbedJob, EmbedResult, check_job, job_options, open_manifest, removed_when_done
from .readers import READERS, STDIN, _open_binary, decoded_lines, pyarrow_parquet, where
from .workdir import WorkDir, write_atomic
from .writers import sync, write_npy

INDEX_SUFFIX = ".chunks.jsonl"

# (line, text, id or None, spans or None)
ChunkRecord = tuple[int, str, str | None, Any]


@dataclass
class ChunkJob(EmbedJob):
    """An `EmbedJob` with chunks: ``chunks`` is ``tokens:SIZE[:OVERLAP]`` or ``spans``."""

    chunks: str = "tokens:256:32"
    chunking: str = "late"
    spans_field: str = "spans"
    id_field: str = "id"


def index_file_for(output: str | os.PathLike[str], suffix: str = INDEX_SUFFIX) -> Path:
    """The sidecar row index of an .npy output: ``OUT.chunks.jsonl`` (``suffix`` for other row jobs)."""
    out = Path(output)
    return out.with_name(out.name + suffix)


_CHUNK_INDEX_KEYS = ("doc", "chunk", "start", "end")


def is_row_index(path: Path, keys: tuple[str, ...]) -> bool:
    """True for a regular file whose first line starts a row of a tokenpool sidecar index with ``keys`` (or an
    empty file). Only the line's first 64 KiB are read: tokenpool writes those keys before any long field."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.readline(1 << 16)
    except OSError:
        return False
    if not head:
        return True
    return head.startswith(b'{"doc": ') and all(b'"' + key.encode() + b'": ' in head for key in keys)


ROW_OUTPUTS = ("npy", "parquet", "jsonl")  # what the row jobs (--chunks, --token-vectors) write


def check_row_output(output_format: str, option: str) -> None:
    """A row job writes .npy (with a sidecar), .parquet or .jsonl; any other output is refused up front."""
    if output_format not in ROW_OUTPUTS:
        raise CorpusError(f"{option} writes .npy, .parquet or .jsonl, not .{output_format}")


def check_sidecar(job: EmbedJob, output_format: str, sidecar: Path, keys: tuple[str, ...], what: str) -> None:
    """Before the model loads: the sidecar an .npy output writes is neither the input nor a file that tokenpool
    did not write (it is replaced only when it is an earlier run's index)."""
    if job.input != STDIN and (
        Path(job.input).resolve() == sidecar.resolve() or (sidecar.exists() and os.path.samefile(job.input, sidecar))
    ):
        raise CorpusError(f"{sidecar}: the input is named like the output's {what}, which the job writes")
    if output_format == "npy" and os.path.lexists(sidecar) and not is_row_index(sidecar, keys):
        raise CorpusError(
            f"{sidecar} exists and is not a tokenpool {what}; refusing to replace it (move it away, or name "
            f"another output)"
        )


# ---------------------------------------------------------------------------------------------- reading


def iter_chunk_records(job: ChunkJob, fmt: str, want_spans: bool) -> Iterator[ChunkRecord]:
    """Yield ``(line, text, id, spans)`` per record; ids from ``id_field`` where the records have it."""
    if fmt == "jsonl":
        yield from _jsonl_records(job, want_spans)
    elif fmt == "parquet":
        yield from _parquet_records(job, want_spans)
    else:
        if want_spans:
            raise CorpusError(f"--chunks spans needs .jsonl or .parquet input (a list of spans per record), not {fmt}")
        for line, text in READERS[fmt].read(job.input, field=job.field, column=job.column):
            yield line, text, None, None


def _jsonl_records(job: ChunkJob, want_spans: bool) -> Iterator[ChunkRecord]:
    place = where(job.input)
    with _open_binary(job.input) as fh:
        for number, line in decoded_lines(fh, job.input):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{place}, line {number}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise CorpusError(f"{place}, line {number}: expected a JSON object, got {type(obj).__name__}")
            text = obj.get(job.field)
            if not isinstance(text, str):
                raise CorpusError(f"{place}, line {number}: field {job.field!r} is missing or not a string")
            ident = obj.get(job.id_field)
            spans = obj.get(job.spans_field) if want_spans else None
            if want_spans and spans is None:
                raise CorpusError(f"{place}, line {number}: no field {job.spans_field!r} (--chunks spans needs one)")
            yield number, text, None if ident is None else str(ident), spans


def _parquet_records(job: ChunkJob, want_spans: bool) -> Iterator[ChunkRecord]:
    pq = pyarrow_parquet("reading .parquet")
    pfile = pq.ParquetFile(job.input)
    names = pfile.schema_arrow.names
    if job.column not in names:
        raise CorpusError(f"{job.input}: no column {job.column!r}; choose one with --column")
    if want_spans and job.spans_field not in names:
        raise CorpusError(f"{job.input}: no column {job.spans_field!r} (--chunks spans needs a list column)")
    columns = [job.column] + ([job.id_field] if job.id_field in names else []) + (
        [job.spans_field] if want_spans else []
    )
    row = 0
    for batch in pfile.iter_batches(columns=columns, batch_size=1024):
        data = {name: batch.column(i).to_pylist() for i, name in enumerate(columns)}
        for k, text in enumerate(data[job.column]):
            row += 1
            if not isinstance(text, str):
                raise CorpusError(f"{job.input}, row {row}: column {job.column!r} is not a string")
            ident = data[job.id_field][k] if job.id_field in data else None
            spans = data[job.spans_field][k] if want_spans else None
            yield row, text, None if ident is None else str(ident), spans


def check_records(job: ChunkJob, fmt: str, want_spans: bool) -> int:
    """A pass over the input before the model loads: every text non-blank (or skipped), every span list valid.
    Returns the number of records."""
    from ..core.chunking import check_spans

    count = 0
    for line, text, _, spans in iter_chunk_records(job, fmt, want_spans):
        count += 1
        if not text.strip() and not job.skip_empty:
            what = "empty" if not text else "only whitespace"
            raise CorpusError(f"{where(job.input)}, line {line}: the text is {what}; no chunk to embed (--skip-empty drops it)")
        if want_spans and text.strip():
            try:
                check_spans(spans, len(text), "")
            except OptionError as exc:
                raise CorpusError(f"{where(job.input)}, line {line}: {str(exc).removeprefix('document : ')}") from None
    return count


# ---------------------------------------------------------------------------------------------- the job


def chunk_options(encoder: Any, job: ChunkJob, in_fmt: str) -> dict[str, Any]:
    options = job_options(encoder, job, in_fmt)
    options.update(
        chunks=str(job.chunks),
        chunking=job.chunking,
        spans_field=job.spans_field,
        id_field=job.id_field,
        long_documents=getattr(encoder, "long_documents", "truncate"),
        window_stride=getattr(encoder, "window_stride", None),
    )
    if str(job.chunks).strip().lower().startswith("boundaries"):  # another version may cut other chunks
        from importlib.metadata import PackageNotFoundError, version

        try:
            options["splitter"] = f"semantic-text-splitter {version('semantic-text-splitter')}"
        except PackageNotFoundError:  # the split itself then names the missing extra
            options["splitter"] = "semantic-text-splitter (not installed)"
    return options


def check_chunk_job(job: ChunkJob) -> tuple[str, str]:
    """`check_job` plus the chunk options and a pass over the records; before the model loads."""
    from ..core.chunking import CHUNKINGS, parse_chunks

    formats = check_job(job)
    if job.input == "-":
        raise CorpusError("--chunks reads its input twice (a check, then the run); pass a file, not stdin")
    try:
        spec = parse_chunks(job.chunks)
    except OptionError as exc:
        raise CorpusError(f"--chunks: {exc}") from None
    if job.chunking not in CHUNKINGS:
        raise CorpusError(f"--chunking must be one of {', '.join(CHUNKINGS)}, got {job.chunking!r}")
    check_row_output(formats.output, "--chunks")
    check_sidecar(job, formats.output, index_file_for(job.output), _CHUNK_INDEX_KEYS, "chunk index")
    check_records(job, formats.input, spec == "spans")
    return formats


def embed_chunks_corpus(
    encoder: Any, job: ChunkJob, log: Callable[[str], None], *, formats: Any = None
) -> EmbedResult:
    """Embed every chunk of every record of ``job.input`` into ``job.output`` (one row per chunk)."""
    from ..core.chunking import parse_chunks

    started = time.perf_counter()
    in_fmt, out_fmt = formats if formats is not None else check_chunk_job(job)
    spec = parse_chunks(job.chunks)
    options = chunk_options(encoder, job, in_fmt)
    runtime = {"batch_size": job.batch_size, "device": str(getattr(encoder, "device", ""))}
    with WorkDir(job.output) as work:
        manifest = open_manifest(work, job, options, runtime, int(encoder.dimension), log, _verify)
        reused = manifest["chunks_done"]
        with removed_when_done(work, manifest):
            _run(encoder, job, in_fmt, spec, work, manifest, log)
            _assemble(work, manifest, out_fmt, Path(job.output))
    return EmbedResult(
        Path(job.output),
        manifest["rows_done"],
        manifest["records_done"],
        manifest["dimension"],
        manifest["chunks_done"],
        reused,
        time.perf_counter() - started,
        None,
    )


def resume_prefix(records: Iterator[ChunkRecord], manifest: dict, work: WorkDir) -> Any:
    """Read the records the partial run already did and check them against its ``prefix_sha256``; returns the
    hasher, to go on with the records after them."""
    hasher = hashlib.sha256()
    done = manifest["records_done"]
    for _ in range(done):
        record = next(records, None)
        if record is None:
            raise CorpusError(f"refusing to resume: the input now has fewer than {done} records; delete {work.path}")
        _hash(hasher, record)
    if hasher.hexdigest() != manifest["prefix_sha256"]:
        raise CorpusError(
            f"refusing to resume: the first {done} records of the input differ from those the partial run read; "
            f"delete {work.path} to start over"
        )
    return hasher


def _verify(work: WorkDir, manifest: dict) -> None:
    for _ in _chunks(work, manifest):
        pass


def _hash(hasher: Any, record: ChunkRecord) -> None:
    line, text, ident, spans = record
    data = json.dumps([line, text, ident, spans], ensure_ascii=False).encode("utf-8", "surrogatepass")
    hasher.update(len(data).to_bytes(8, "little") + data)


def _run(
    encoder: Any, job: ChunkJob, in_fmt: str, spec: Any, work: WorkDir, manifest: dict, log: Callable[[str], None]
) -> None:
    records = iter_chunk_records(job, in_fmt, spec == "spans")
    hasher = resume_prefix(records, manifest, work)
    done = manifest["records_done"]
    if done:
        log(f"resuming {job.output}: {done} records already done; continuing with chunk {manifest['chunks_done']}")
    while True:
        batch = [(done + i, record) for i, record in zip(range(job.chunk_size), records, strict=False)]
        if not batch:
            break
        for _, record in batch:
            _hash(hasher, record)
        kept = [(i, r) for i, r in batch if r[1].strip()] if job.skip_empty else batch
        names = [f"{where(job.input)}, line {r[0]}" for _, r in kept]
        result = encoder.encode_chunks(
            [r[1] for _, r in kept],
            chunks=spec,
            spans=[r[3] for _, r in kept] if spec == "spans" else None,
            chunking=job.chunking,
            batch_size=job.batch_size,
            prompt=job.prompt,
            prompt_name=job.prompt_name,
            names=names,
            **({} if job.max_batch_tokens is None else {"max_batch_tokens": job.max_batch_tokens}),
        )
        record_of = np.array([i for i, _ in kept], dtype=np.int64)
        doc = record_of[result.doc] if len(result) else np.zeros(0, np.int64)
        meta = np.stack([doc, result.chunk, result.start, result.end]).astype(np.int64)
        ids = [kept[d][1][2] for d in result.doc.tolist()]
        index = manifest["chunks_done"]
        ids_data = json.dumps(ids).encode()
        write_atomic(_ids_path(work, index), ids_data)
        vectors = np.ascontiguousarray(result.vectors, dtype=np.float32)
        entry = {
            "records": [done, done + len(batch)],
            "ids_sha256": hashlib.sha256(ids_data).hexdigest(),
            "meta_sha256": work._save(work.chunk_path(index, "meta"), meta),
            "sha256": work._save(work.chunk_path(index), vectors),
            "shape": list(vectors.shape),
            "dtype": vectors.dtype.str,
        }
        done += len(batch)
        manifest["chunks"] = [*manifest["chunks"], entry]
        manifest.update(
            chunks_done=index + 1,
            records_done=done,
            rows_done=manifest["rows_done"] + len(result),
            prefix_sha256=hasher.hexdigest(),
        )
        work.write_manifest(manifest)


def _ids_path(work: WorkDir, index: int) -> Path:
    return work.chunk_path(index, "ids").with_suffix(".json")


def _read_ids(work: WorkDir, index: int, entry: dict) -> list:
    """Chunk ``index``'s ids file (a JSON list), checked against its sha256 in the manifest ``entry``."""
    path = _ids_path(work, index)
    try:
        data = path.read_bytes()
    except OSError as exc:
        work._fail(index, f"ids file cannot be read ({exc.strerror or exc})")
    if hashlib.sha256(data).hexdigest() != entry.get("ids_sha256"):
        work._fail(index, f"{path.name} does not match its sha256 in the manifest")
    return json.loads(data)


def _chunks(work: WorkDir, manifest: dict) -> Iterator[tuple[np.ndarray, list[str | None], np.ndarray]]:
    """Each chunk's (meta, ids, vectors), every file checked against its sha256 in the manifest first."""
    dim = int(manifest["dimension"])
    for index, entry in enumerate(manifest["chunks"]):
        meta = work._verified(work.chunk_path(index, "meta"), entry.get("meta_sha256"), index)
        vectors = work._verified(work.chunk_path(index), entry.get("sha256"), index)
        ids = _read_ids(work, index, entry)
        if (
            vectors.dtype != np.dtype("<f4")
            or vectors.ndim != 2
            or vectors.shape[1] != dim
            or meta.shape != (4, len(vectors))
            or len(ids) != len(vectors)
        ):
            work._fail(index, f"holds vectors {vectors.shape}, meta {meta.shape} and {len(ids)} ids, which disagree")
        yield meta, ids, vectors


def _assemble(work: WorkDir, manifest: dict, out_fmt: str, output: Path) -> None:
    rows, dim = manifest["rows_done"], manifest["dimension"]
    has_ids = any(any(i is not None for i in ids) for _, ids, _ in _chunks(work, manifest))
    tmp = work.path / ("output." + out_fmt)
    tmp_index = work.path / ("output" + INDEX_SUFFIX)
    if out_fmt == "npy":
        with open(tmp, "wb") as fh:
            write_npy(fh, ((meta[0], vectors) for meta, _, vectors in _chunks(work, manifest)), rows, dim)
            sync(fh)
        with open(tmp_index, "wb") as fh:
            for meta, ids, _ in _chunks(work, manifest):
                for k in range(meta.shape[1]):
                    fh.write(json.dumps(_row(meta, ids, k, has_ids)).encode() + b"\n")
            sync(fh)
    elif out_fmt == "jsonl":
        with open(tmp, "wb") as fh:
            for meta, ids, vectors in _chunks(work, manifest):
                for k, vector in enumerate(vectors.tolist()):
                    fh.write(json.dumps({**_row(meta, ids, k, has_ids), "embedding": vector}).encode() + b"\n")
            sync(fh)
    else:
        _write_parquet(tmp, _chunks(work, manifest), dim, has_ids)
    os.replace(tmp, output)
    if out_fmt == "npy":
        os.replace(tmp_index, index_file_for(output))  # checked before the run: absent, or an earlier index


def _row(meta: np.ndarray, ids: list, k: int, has_ids: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"doc": int(meta[0, k])}
    if has_ids:
        row["id"] = ids[k]
    row.update(chunk=int(meta[1, k]), start=int(meta[2, k]), end=int(meta[3, k]))
    return row


def _write_parquet(path: Path, chunks: Iterator, dim: int, has_ids: bool) -> None:
    pq = pyarrow_parquet("writing .parquet")
    import pyarrow as pa

    fields = [("doc", pa.int64())] + ([("id", pa.string())] if has_ids else []) + [
        ("chunk", pa.int64()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("embedding", pa.list_(pa.float32(), dim)),
    ]
    schema = pa.schema(fields)
    with pq.ParquetWriter(str(path), schema) as writer:
        for meta, ids, vectors in chunks:
            columns = {"doc": pa.array(meta[0])}
            if has_ids:
                columns["id"] = pa.array(ids, type=pa.string())
            columns.update(
                chunk=pa.array(meta[1]),
                start=pa.array(meta[2]),
                end=pa.array(meta[3]),
                embedding=pa.FixedSizeListArray.from_arrays(
                    pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1)), dim
                ),
            )
            writer.write_table(pa.table(columns, schema=schema))
