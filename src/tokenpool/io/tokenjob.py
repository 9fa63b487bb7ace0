"""`embed_tokens_corpus`: ``tokenpool embed --token-vectors`` — every token's vector of every record.

One output row per record: its number (``doc``, 0-based among the input's records), its id when the input has
one (``--id-field``), ``n_tokens``, the token ids, each token's character span ``[start, end)`` in the text
(``[-1, -1]`` for tokens that are not from it: special tokens, a pooled prompt) and the token vectors — exactly
`Encoder.encode(texts, output="tokens")` and `Encoder.token_spans(texts)`, so the options that decide them
(``--long-documents``, ``--max-length``, ``--prompt``, ``--no-special-tokens``) mean what they mean there.

.parquet: columns ``doc``, ``id``, ``n_tokens``, ``token_ids`` (list<int64>), ``token_spans``
(list<fixed_size_list<int64>[2]>), ``token_embeddings`` (list<fixed_size_list<float32>[D]>). .jsonl: the same
fields per line. .npy is one (total tokens, D) float32 array, the rows of record after record, with a sidecar
``OUT.tokens.jsonl`` (line i describes output row i: ``doc``, ``id``, ``offset`` — its first row in the array —,
``n_tokens``, ``token_ids``, ``token_spans``).

Streaming and resumable as `tokenpool.io.chunkjob` (its manifest life cycle, input reading and resume checks
are reused): records go to the work folder a chunk at a time, every chunk file has its sha256 in the manifest,
and the output appears only when complete. Records are encoded in blocks that end at multiples of
``block_size`` and ``chunk_size`` counted from record 0, or before the record that would take a block over
``block_tokens`` tokens; a chunk closes after a block (at ``chunk_size`` records, ``block_tokens`` tokens or
``checkpoint_seconds``). So memory holds about two blocks' token vectors (one document's, when a document is
longer), and the batches a text is encoded in never depend on where a chunk was closed: a resumed run writes
the bytes an uninterrupted one does.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorpusError, ModelOutputError
from .chunkjob import (
    ChunkRecord,
    _hash,
    _ids_path,
    _read_ids,
    check_row_output,
    check_sidecar,
    index_file_for,
    iter_chunk_records,
    resume_prefix,
)
from .embedjob import (
    EmbedJob,
    EmbedResult,
    JobFormats,
    _progress_bar,
    check_assembled,
    check_job,
    job_options,
    open_manifest,
    removed_when_done,
)
from .readers import STDIN, pyarrow_parquet, where
from .workdir import WorkDir, write_atomic
from .writers import sync, write_npy

TOKENS_SUFFIX = ".tokens.jsonl"
# tokens per block (and per chunk) of records: ~100 MB of float32 vectors at hidden size 384
DEFAULT_BLOCK_TOKENS = 65536
# records whose tokens are looked up in one call (the tokenizer only: no model)
_SPAN_GROUP = 64
_INDEX_KEYS = ("doc", "offset", "n_tokens")


@dataclass
class TokenJob(EmbedJob):
    """An `EmbedJob` writing every token's vector: ``special_tokens`` keeps [CLS]/[SEP]-like tokens,
    ``id_field`` names the id copied to each row, ``block_tokens`` bounds the tokens encoded together."""

    special_tokens: bool = True
    id_field: str = "id"
    block_tokens: int = DEFAULT_BLOCK_TOKENS


@dataclass
class TokenResult(EmbedResult):
    """What `embed_tokens_corpus` wrote: ``rows`` records' rows holding ``tokens`` token vectors."""

    tokens: int = 0


def token_index_file_for(output: str | os.PathLike[str]) -> Path:
    """The sidecar of an .npy output: ``OUT.tokens.jsonl``."""
    return index_file_for(output, TOKENS_SUFFIX)


def check_token_job(job: TokenJob) -> JobFormats:
    """`check_job` plus what --token-vectors adds, before the model loads: the sidecar ``OUT.tokens.jsonl`` is
    neither the input nor a file tokenpool did not write (an .npy output replaces it)."""
    formats = check_job(job)
    check_row_output(formats.output, "--token-vectors")
    if formats.input == "parquet" and job.input == STDIN:
        raise CorpusError("parquet input cannot be read from stdin; pass a file")
    size = job.block_tokens
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise CorpusError(f"block_tokens must be a positive integer, got {size!r}")
    check_sidecar(job, formats.output, token_index_file_for(job.output), _INDEX_KEYS, "token index")
    return formats


# ---------------------------------------------------------------------------------------------- the job


def embed_tokens_corpus(
    encoder: Any, job: TokenJob, log: Callable[[str], None], *, formats: JobFormats | None = None
) -> TokenResult:
    """Write every token's vector of every record of ``job.input`` into ``job.output`` (one row per record)."""
    started = time.perf_counter()
    in_fmt, out_fmt = formats if formats is not None else check_token_job(job)
    options = {
        **job_options(encoder, job, in_fmt),
        "output": "tokens",
        "special_tokens": bool(job.special_tokens),
        "id_field": job.id_field,
        "block_tokens": job.block_tokens,
    }
    runtime = {
        "batch_size": job.batch_size,
        "max_batch_tokens": job.max_batch_tokens,
        "device": str(getattr(encoder, "device", "")),
    }
    width = int(encoder.runner_width)  # token vectors are the model's own outputs, before any pooling
    with WorkDir(job.output) as work:
        manifest = open_manifest(work, job, options, runtime, width, log, _verify)
        manifest.setdefault("tokens_done", 0)
        manifest.setdefault("has_ids", False)
        reused = manifest["chunks_done"]
        with removed_when_done(work, manifest):
            _run(encoder, job, in_fmt, work, manifest, log)
            _assemble(work, manifest, out_fmt, Path(job.output))
    return TokenResult(
        Path(job.output),
        manifest["rows_done"],
        manifest["records_done"],
        width,
        manifest["chunks_done"],
        reused,
        time.perf_counter() - started,
        None,
        tokens=manifest["tokens_done"],
    )


# a record with the ids and character spans of its output tokens (None: skipped by --skip-empty)
_Item = tuple[ChunkRecord, Any]


def _with_spans(encoder: Any, job: TokenJob, records: Iterator[ChunkRecord]) -> Iterator[_Item]:
    """Each record with ``Encoder.token_spans`` of its text (the tokenizer only), looked up a group at a time."""
    while group := list(itertools.islice(records, _SPAN_GROUP)):
        for line, text, _, _ in group:
            _check_text(job, line, text)
        wanted = [k for k, r in enumerate(group) if not (job.skip_empty and not r[1].strip())]
        spans = encoder.token_spans(
            [group[k][1] for k in wanted],
            prompt=job.prompt,
            prompt_name=job.prompt_name,
            special_tokens=job.special_tokens,
        ) if wanted else []
        found: list[Any] = [None] * len(group)
        for k, pair in zip(wanted, spans, strict=True):
            found[k] = pair
        yield from zip(group, found, strict=True)


def _check_text(job: TokenJob, line: int, text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CorpusError(
            f"{where(job.input)}, line {line}: the text holds a lone surrogate (U+{ord(text[exc.start]):04X} at "
            f"character {exc.start + 1}), which is not text"
        ) from None


def _blocks(items: Iterator[_Item], job: TokenJob, done: int) -> Iterator[list[_Item]]:
    """The records in blocks: a block ends at a multiple of ``block_size`` or ``chunk_size`` (counted from
    record 0), or before the record that would take it over ``block_tokens`` tokens (a longer record is a block
    of its own). Where blocks end depends on the records alone, never on where a chunk was closed."""
    head = next(items, None)
    while head is not None:
        limit = min((done // job.block_size + 1) * job.block_size, (done // job.chunk_size + 1) * job.chunk_size)
        block, tokens = [head], _count(head)
        head = next(items, None)
        while head is not None and done + len(block) < limit and tokens + _count(head) <= job.block_tokens:
            block.append(head)
            tokens += _count(head)
            head = next(items, None)
        done += len(block)
        yield block


def _count(item: _Item) -> int:
    return 0 if item[1] is None else len(item[1][0])


def _run(
    encoder: Any, job: TokenJob, in_fmt: str, work: WorkDir, manifest: dict, log: Callable[[str], None]
) -> None:
    records = iter_chunk_records(job, in_fmt, False)  # type: ignore[arg-type]  # reads field/column/id_field
    hasher = resume_prefix(records, manifest, work)
    done = start = manifest["records_done"]
    if done:
        log(f"resuming {job.output}: {done} records already done; continuing with chunk {manifest['chunks_done']}")
    bar = _progress_bar(job, in_fmt, done)
    budget = {} if job.max_batch_tokens is None else {"max_batch_tokens": job.max_batch_tokens}
    rows: list[tuple[int, str | None, np.ndarray, np.ndarray, np.ndarray]] = []
    tokens = 0
    started = time.monotonic()
    try:
        for block in _blocks(_with_spans(encoder, job, records), job, done):
            kept = [(done + k, item) for k, item in enumerate(block) if item[1] is not None]
            try:
                states = encoder.encode(
                    [item[0][1] for _, item in kept],
                    output="tokens",
                    special_tokens=job.special_tokens,
                    batch_size=job.batch_size,
                    prompt=job.prompt,
                    prompt_name=job.prompt_name,
                    **budget,
                ) if kept else []
            except ModelOutputError as err:  # name the record by its line, not its place in this block
                if err.index is None:
                    raise
                raise err.at(f"{where(job.input)}, line {kept[err.index][1][0][0]}") from None
            for (index, ((line, _, ident, _), (ids, spans))), vectors in zip(kept, states, strict=True):
                if len(vectors) != len(ids):
                    raise RuntimeError(f"line {line}: {len(vectors)} token vectors but {len(ids)} token ids")
                rows.append((index, ident, vectors, ids, spans))
                tokens += len(ids)
            for item in block:
                _hash(hasher, item[0])
            done += len(block)
            if bar is not None:
                bar.update(len(block))
            if done % job.chunk_size == 0 or tokens >= job.block_tokens or (
                time.monotonic() - started >= job.checkpoint_seconds
            ):
                _write_chunk(work, manifest, start, done, rows, hasher)
                rows, tokens, start, started = [], 0, done, time.monotonic()
        if done > start:
            _write_chunk(work, manifest, start, done, rows, hasher)
    finally:
        if bar is not None:
            bar.close()


def _write_chunk(work: WorkDir, manifest: dict, start: int, stop: int, rows: list, hasher: Any) -> None:
    """Store records ``start``..``stop``-1 as chunk files, then count them in the manifest (atomically)."""
    width = int(manifest["dimension"])
    index = manifest["chunks_done"]
    meta = np.array([[r[0] for r in rows], [len(r[3]) for r in rows]], dtype=np.int64).reshape(2, -1)
    vectors = np.concatenate([r[2] for r in rows]) if rows else np.zeros((0, width), np.float32)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.concatenate([r[3] for r in rows]) if rows else np.zeros(0, np.int64)
    spans = np.concatenate([r[4] for r in rows]) if rows else np.zeros((0, 2), np.int64)
    tokens = np.concatenate([ids[None, :], spans.T]).astype(np.int64)  # (3, T): id, start, end
    names = [r[1] for r in rows]
    names_data = json.dumps(names).encode()
    write_atomic(_ids_path(work, index), names_data)
    entry = {
        "records": [start, stop],
        "ids_sha256": hashlib.sha256(names_data).hexdigest(),
        "meta_sha256": work._save(work.chunk_path(index, "meta"), meta),
        "tokens_sha256": work._save(work.chunk_path(index, "tokens"), tokens),
        "sha256": work._save(work.chunk_path(index), vectors),
        "shape": list(vectors.shape),
        "dtype": vectors.dtype.str,
    }
    manifest.update(
        chunks=[*manifest["chunks"], entry],
        chunks_done=index + 1,
        records_done=stop,
        rows_done=manifest["rows_done"] + len(rows),
        tokens_done=manifest["tokens_done"] + len(vectors),
        has_ids=bool(manifest["has_ids"] or any(n is not None for n in names)),
        prefix_sha256=hasher.hexdigest(),
    )
    work.write_manifest(manifest)


# (doc and n_tokens per row, ids per row, (3, T) token ids and spans, (T, D) vectors) of one chunk
_Chunk = tuple[np.ndarray, list, np.ndarray, np.ndarray]


def _chunks(work: WorkDir, manifest: dict) -> Iterator[_Chunk]:
    """Each chunk, every file checked against its sha256 in the manifest and against the others."""
    width = int(manifest["dimension"])
    expected_start = 0
    for index, entry in enumerate(manifest["chunks"]):
        records = entry.get("records")
        if not (isinstance(records, list) and len(records) == 2 and records[0] == expected_start <= records[1]):
            work._fail(index, f"covers records {records!r}, after a chunk that ended at {expected_start}")
        meta = work._verified(work.chunk_path(index, "meta"), entry.get("meta_sha256"), index)
        tokens = work._verified(work.chunk_path(index, "tokens"), entry.get("tokens_sha256"), index)
        vectors = work._verified(work.chunk_path(index), entry.get("sha256"), index)
        names = _read_ids(work, index, entry)
        if (
            vectors.dtype != np.dtype("<f4")
            or vectors.ndim != 2
            or vectors.shape[1] != width
            or meta.ndim != 2
            or meta.shape[0] != 2
            or len(names) != meta.shape[1]
            or int(meta[1].sum()) != len(vectors)
            or tokens.shape != (3, len(vectors))
            or (meta.shape[1] and (meta[0].min() < records[0] or meta[0].max() >= records[1]))
        ):
            work._fail(index, f"holds vectors {vectors.shape}, rows {meta.shape} and tokens {tokens.shape}, which disagree")
        expected_start = records[1]
        yield meta, names, tokens, vectors
    if expected_start != manifest["records_done"]:
        raise CorpusError(
            f"{work.manifest_path}: chunks cover {expected_start} records, the manifest counts "
            f"{manifest['records_done']}; delete {work.path} to start over"
        )


def _verify(work: WorkDir, manifest: dict) -> None:
    for _ in _chunks(work, manifest):
        pass


def _rows(meta: np.ndarray, names: list, tokens: np.ndarray, has_ids: bool) -> Iterator[tuple[dict, int, int]]:
    """Per output row: its fields (doc, id, n_tokens, token_ids, token_spans) and its token range in the chunk."""
    ends = np.cumsum(meta[1])
    for k in range(meta.shape[1]):
        a, b = int(ends[k] - meta[1, k]), int(ends[k])
        row: dict[str, Any] = {"doc": int(meta[0, k])}
        if has_ids:
            row["id"] = names[k]
        row.update(
            n_tokens=b - a, token_ids=tokens[0, a:b].tolist(), token_spans=tokens[1:, a:b].T.tolist()
        )
        yield row, a, b


def _assemble(work: WorkDir, manifest: dict, out_fmt: str, output: Path) -> None:
    """Write the output (and for .npy its token index) in the work folder, check it, rename it into place."""
    width, has_ids = int(manifest["dimension"]), bool(manifest["has_ids"])
    tmp = work.path / ("output." + out_fmt)
    tmp_index = work.path / ("output" + TOKENS_SUFFIX)
    if out_fmt == "npy":
        digest = hashlib.sha256()
        with open(tmp, "wb") as fh, open(tmp_index, "wb") as index:
            offset = 0

            def vectors_and_index() -> Iterator[tuple[None, np.ndarray]]:
                nonlocal offset
                for meta, names, tokens, vectors in _chunks(work, manifest):
                    for row, a, _ in _rows(meta, names, tokens, has_ids):
                        line = {"doc": row.pop("doc"), **({"id": row.pop("id")} if has_ids else {}), "offset": offset + a}
                        index.write(json.dumps({**line, **row}).encode() + b"\n")
                    offset += len(vectors)
                    digest.update(vectors.tobytes())
                    yield None, vectors

            write_npy(fh, vectors_and_index(), manifest["tokens_done"], width)
            sync(fh)
            sync(index)
        check_assembled(tmp, "npy", manifest["tokens_done"], width, digest.hexdigest())
    elif out_fmt == "jsonl":
        with open(tmp, "wb") as fh:
            for meta, names, tokens, vectors in _chunks(work, manifest):
                for row, a, b in _rows(meta, names, tokens, has_ids):
                    row["token_embeddings"] = vectors[a:b].tolist()
                    fh.write(json.dumps(row).encode() + b"\n")
            sync(fh)
        check_assembled(tmp, "jsonl", manifest["rows_done"], width)
    else:
        _write_parquet(tmp, _chunks(work, manifest), width, has_ids)
        check_assembled(tmp, "parquet", manifest["rows_done"], width)
    os.replace(tmp, output)
    sidecar = token_index_file_for(output)
    if out_fmt == "npy":
        os.replace(tmp_index, sidecar)  # checked before the run: absent, or an earlier token index


def _write_parquet(path: Path, chunks: Iterator[_Chunk], width: int, has_ids: bool) -> None:
    pq = pyarrow_parquet("writing .parquet")
    import pyarrow as pa

    fields = [("doc", pa.int64())] + ([("id", pa.string())] if has_ids else []) + [
        ("n_tokens", pa.int64()),
        ("token_ids", pa.list_(pa.int64())),
        ("token_spans", pa.list_(pa.list_(pa.int64(), 2))),
        ("token_embeddings", pa.list_(pa.list_(pa.float32(), width))),
    ]
    schema = pa.schema(fields)
    with pq.ParquetWriter(str(path), schema) as writer:
        for meta, names, tokens, vectors in chunks:
            offsets = pa.array(np.concatenate([[0], np.cumsum(meta[1])]).astype(np.int32))
            columns: dict[str, Any] = {"doc": pa.array(meta[0])}
            if has_ids:
                columns["id"] = pa.array(names, type=pa.string())
            spans = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(tokens[1:].T).reshape(-1)), 2)
            embeddings = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), width)
            columns.update(
                n_tokens=pa.array(meta[1]),
                token_ids=pa.ListArray.from_arrays(offsets, pa.array(tokens[0])),
                token_spans=pa.ListArray.from_arrays(offsets, spans),
                token_embeddings=pa.ListArray.from_arrays(offsets, embeddings),
            )
            writer.write_table(pa.table(columns, schema=schema))
