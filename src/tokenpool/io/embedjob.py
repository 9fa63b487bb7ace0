"""`embed_corpus`: stream a corpus through an `Encoder` in resumable chunks and assemble the output atomically.

Records are read lazily and encoded ``chunk_size`` at a time; each finished chunk goes to the work folder
(`tokenpool.io.workdir`), so memory stays bounded and a killed run resumes from its last complete chunk. The
output appears under its final name only once complete (temporary file + ``os.replace``).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import CorpusError, ModelOutputError
from .formats import input_format, output_format
from .readers import READERS, STDIN, check_readable, count_records, iter_records, where
from .workdir import MANIFEST_VERSION, WorkDir, work_dir_for
from .writers import WRITERS, sync

LINES_SUFFIX = ".lines.txt"
DEFAULT_CHUNK_SIZE = 2048
# a chunk is closed after at most this many seconds of work, even if it holds fewer than chunk_size records
DEFAULT_CHECKPOINT_SECONDS = 30.0
# records are encoded (length-sorted, batched) in blocks of this many; a chunk is a whole number of blocks, so
# where a chunk ends (by records or by time) never changes how texts are batched
DEFAULT_BLOCK_SIZE = 256
DEFAULT_CALIBRATION_SIZE = 1000


@dataclass
class EmbedJob:
    """What to embed and how; the encoder (model, pooling, normalize, dim, max length) is passed separately."""

    input: str
    output: str
    input_format: str | None = None
    field: str = "text"
    column: str = "text"
    batch_size: int = 32
    max_batch_tokens: int | None = None  # padded tokens per forward pass (batch_size stays the upper bound)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    prompt: str | None = None
    prompt_name: str | None = None
    skip_empty: bool = False
    resume: bool = False
    progress: bool = False
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS
    block_size: int = DEFAULT_BLOCK_SIZE
    # storage-ready outputs (tokenpool.io.storage): dense precision and calibration, sparse rows
    precision: str = "float32"
    calibration: str | None = None  # a calibration JSON file to reuse (int8/uint8)
    calibration_size: int = DEFAULT_CALIBRATION_SIZE  # else: calibrate on the first N records
    top_k: int | None = None
    threshold: float = 0.0
    tokens: bool = False  # sparse rows: add the decoded tokens
    dense: bool = False  # sparse models: write N × V float32 rows instead of sparse rows


@dataclass
class EmbedResult:
    """What `embed_corpus` wrote."""

    output: Path
    rows: int
    records: int
    dimension: int
    chunks: int
    reused_chunks: int
    seconds: float
    lines_file: Path | None
    precision: str = "float32"
    sparse: bool = False
    nnz: int = 0  # sparse outputs: non-zeros written
    calibration_file: Path | None = None


def lines_file_for(output: str | os.PathLike[str]) -> Path:
    """Where --skip-empty writes the kept line numbers: ``<output>.lines.txt``."""
    out = Path(output)
    return out.with_name(out.name + LINES_SUFFIX)


def check_output(output: str) -> str:
    """The output format, after checking that ``output`` can be created."""
    fmt = output_format(output)
    out = Path(output)
    if out.is_dir():
        raise CorpusError(f"{output}: is a directory; name an output file")
    if not out.resolve().parent.is_dir():
        raise CorpusError(f"{output}: folder {out.parent} does not exist")
    return fmt


class JobFormats(NamedTuple):
    """What `check_job` found: the `READERS` name of the input and the `WRITERS` name of the output."""

    input: str
    output: str


def check_job(job: EmbedJob) -> JobFormats:
    """Check everything about ``job`` that needs no model, before one loads; raise `CorpusError` if it cannot run.

    The input format is known (suffix or ``job.input_format``) and the input readable, the output named with a
    known suffix in an existing folder, the sizes positive, and the input is none of the files the job writes
    or deletes: the output, its ``.lines.txt``, its work folder or anything in it (compared by resolved path
    and by inode, so links are caught). `embed_corpus` takes the result as ``formats=`` so that it does not
    check again.
    """
    in_fmt = input_format(job.input, job.input_format)
    out_fmt = check_output(job.output)
    check_readable(job.input)
    check_storage_options(job, out_fmt)
    if isinstance(job.chunk_size, bool) or not isinstance(job.chunk_size, int) or job.chunk_size < 1:
        raise CorpusError(f"--chunk-size must be a positive integer, got {job.chunk_size!r}")
    if isinstance(job.batch_size, bool) or not isinstance(job.batch_size, int) or job.batch_size < 1:
        raise CorpusError(f"--batch-size must be a positive integer, got {job.batch_size!r}")
    if isinstance(job.block_size, bool) or not isinstance(job.block_size, int) or job.block_size < 1:
        raise CorpusError(f"block_size must be a positive integer, got {job.block_size!r}")
    seconds = job.checkpoint_seconds
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
        raise CorpusError(f"--checkpoint-seconds must be a number >= 0, got {seconds!r}")
    if job.input != STDIN:
        _check_not_a_side_file(job)
    return JobFormats(in_fmt, out_fmt)


def _check_not_a_side_file(job: EmbedJob) -> None:
    source = Path(job.input)
    resolved = source.resolve()
    work = work_dir_for(job.output)
    side = (
        (Path(job.output), "the output would replace the input"),
        (lines_file_for(job.output), "the input is named like the output's line-numbers file, which the job "
         "writes (--skip-empty) or removes"),
        (work, "the input is the output's work folder"),
    )
    for path, why in side:
        if resolved == path.resolve() or _same_file(source, path):
            raise CorpusError(f"{path}: {why}; name another output file")
    if work.resolve() in resolved.parents:
        raise CorpusError(f"{job.input}: the input lies inside the output's work folder {work}; move it first")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextmanager
def removed_when_done(work: WorkDir, manifest: Mapping[str, Any]) -> Iterator[None]:
    """Around a job's run and assembly: the work folder is removed when they finish, and when they fail before
    any chunk is finished (nothing worth resuming); finished chunks stay for --resume (after a bad record is
    fixed, or a refused resume is sorted out)."""
    try:
        yield
    except BaseException:
        if manifest["chunks_done"] == 0:
            work.remove()
        raise
    work.remove()


def open_manifest(
    work: WorkDir,
    job: EmbedJob,
    options: dict[str, Any],
    runtime: dict[str, Any],
    dimension: int,
    log: Callable[[str], None],
    verify: Callable[[WorkDir, dict], None],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a job's work folder (`embed_corpus`, ``--chunks``, ``--token-vectors``): a fresh one (with
    the job's own ``extra`` fields), or the partial run's after checking that --resume was asked and the options are
    the same, and ``verify(work, manifest)`` has checked every chunk it will reuse (before any new work)."""
    manifest = work.read_manifest()
    if manifest is not None and not job.resume:
        raise CorpusError(
            f"{work.path} holds a partial run ({manifest['records_done']} records done); pass --resume to "
            f"continue it, or delete that folder to start over"
        )
    if manifest is None:
        work.clear()
        manifest = {
            "version": MANIFEST_VERSION,
            "options": options,
            "runtime": runtime,
            "chunk_size": job.chunk_size,
            "dimension": dimension,
            "chunks_done": 0,
            "records_done": 0,
            "rows_done": 0,
            "prefix_sha256": hashlib.sha256().hexdigest(),
            "runs": 0,
            "chunks": [],  # per chunk: records and the sha256 of each file, checked before any reuse
            **(extra or {}),
        }
    else:
        _check_resumable(manifest, options, work.path)
        _note_runtime_change(manifest.get("runtime", {}), runtime, log)
        verify(work, manifest)
    manifest["runs"] += 1
    manifest["runtime"] = runtime
    return manifest



def embed_corpus(
    encoder: Any,
    job: EmbedJob,
    log: Callable[[str], None] | None = None,
    *,
    formats: JobFormats | None = None,
) -> EmbedResult:
    """Embed every record of ``job.input`` with ``encoder`` into ``job.output`` (row i = record i).

    ``formats``: the result of `check_job` on this job, when the caller checked it before loading the model;
    without it the job is checked here.
    """
    log = log or (lambda message: print(f"tokenpool: {message}", file=sys.stderr))
    started = time.perf_counter()
    in_fmt, out_fmt = formats if formats is not None else check_job(job)
    plan = plan_output(encoder, job, out_fmt)
    options = {**job_options(encoder, job, in_fmt), **plan.options}
    runtime = {"batch_size": job.batch_size, "device": str(getattr(encoder, "device", ""))}
    with WorkDir(job.output) as work:

        def verify(work: WorkDir, manifest: dict) -> None:
            plan.check_resumed(manifest, work.path)
            work.verify_chunks(manifest, job.skip_empty)  # every reused chunk checked before any new work

        manifest = open_manifest(
            work, job, options, runtime, int(encoder.dimension), log, verify, plan.manifest_fields()
        )
        reused = manifest["chunks_done"]
        lines_file = lines_file_for(job.output) if job.skip_empty else None
        with removed_when_done(work, manifest):
            _run_chunks(encoder, job, in_fmt, work, manifest, log, plan)
            plan.assemble(work, manifest, Path(job.output), lines_file, _assemble)
    return EmbedResult(
        Path(job.output),
        manifest["rows_done"],
        manifest["records_done"],
        manifest["dimension"],
        manifest["chunks_done"],
        reused,
        time.perf_counter() - started,
        lines_file,
        plan.precision,
        plan.sparse,
        int(manifest.get("nnz_done", 0)),
        plan.calibration_file,
    )


def job_options(encoder: Any, job: EmbedJob, in_fmt: str) -> dict[str, Any]:
    """Everything that decides the output's values: a resumed run must match these exactly."""
    from .._version import __version__

    model = Path(encoder.model_path).resolve()
    weights = (
        {
            p.name: [p.stat().st_size, p.stat().st_mtime_ns]
            for p in sorted(model.glob("*"))
            if p.suffix in (".safetensors", ".bin", ".pt", ".gguf", ".onnx") and p.is_file()
        }
        if model.is_dir()
        else {}
    )
    return {
        "tokenpool": __version__,
        "model": str(model),
        "model_weights": weights,
        "config": _config_dict(encoder.config),
        "pooling": [str(getattr(s, "value", s)) for s in encoder.strategies],
        "normalize": bool(encoder.normalize),
        "dim": encoder.truncate_dim,
        "dimension": int(encoder.dimension),
        "max_length": encoder.max_length,
        "long_documents": getattr(encoder, "long_documents", "truncate"),
        "window_stride": getattr(encoder, "window_stride", None),
        "dtype": str(getattr(encoder, "dtype", None)),
        "prompt": job.prompt,
        "prompt_name": job.prompt_name,
        "input": "<stdin>" if job.input == STDIN else str(Path(job.input).resolve()),
        "input_format": in_fmt,
        "field": job.field if READERS[in_fmt].text_option == "field" else None,
        "column": job.column if READERS[in_fmt].text_option == "column" else None,
        "skip_empty": job.skip_empty,
        "chunk_size": job.chunk_size,
        "block_size": job.block_size,
    }


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    out = {}
    for f in fields(config):
        if f.name in ("sources", "fallback"):  # descriptive only; they do not change a vector
            continue
        value = getattr(config, f.name)
        out[f.name] = (
            dict(value) if isinstance(value, Mapping) else list(value) if isinstance(value, tuple) else value
        )
    return out


def _check_resumable(manifest: Mapping[str, Any], options: Mapping[str, Any], folder: Path) -> None:
    before = manifest.get("options", {})
    changed = [key for key in sorted(set(before) | set(options)) if before.get(key) != options.get(key)]
    if changed:
        shown = "; ".join(f"{key}: {before.get(key)!r} then, {options.get(key)!r} now" for key in changed[:3])
        raise CorpusError(
            f"refusing to resume: options differ from the partial run ({shown}); rerun with the "
            f"original options, or delete {folder} to start over"
        )


def _note_runtime_change(
    before: Mapping[str, Any], now: Mapping[str, Any], log: Callable[[str], None]
) -> None:
    for key in ("batch_size", "device"):
        if before.get(key) != now.get(key):
            log(
                f"note: {key} was {before.get(key)!r}, now {now.get(key)!r}; the vectors may differ from an "
                f"uninterrupted run in the last bits"
            )


def _record_hash(hasher: Any, line: int, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    hasher.update(line.to_bytes(8, "little") + len(data).to_bytes(8, "little"))
    hasher.update(data)


def _run_chunks(
    encoder: Any,
    job: EmbedJob,
    in_fmt: str,
    work: WorkDir,
    manifest: dict[str, Any],
    log: Callable[[str], None],
    plan: Any = None,
) -> None:
    """Encode the records after the manifest's verified prefix, one chunk at a time."""
    records = iter_records(job.input, in_fmt, field=job.field, column=job.column)
    if plan is not None and plan.needs_calibration(manifest):
        # int8/uint8: the first records, read before any chunk is written, then put back in front of the stream
        head = list(itertools.islice(records, job.calibration_size))
        texts = [text for _, text in head if text.strip()] if job.skip_empty else [text for _, text in head]
        plan.calibrate(encoder, texts, manifest, lambda items: encode_texts(encoder, items, job))
        records = itertools.chain(head, records)
    hasher = hashlib.sha256()
    done = manifest["records_done"]
    for _ in range(done):
        try:
            line, text = next(records)
        except StopIteration:
            raise CorpusError(
                f"refusing to resume: the input now has fewer records than the {done} the partial run "
                f"had read; delete {work.path} to start over"
            ) from None
        _record_hash(hasher, line, text)
    if hasher.hexdigest() != manifest["prefix_sha256"]:
        raise CorpusError(
            f"refusing to resume: the first {done} records of the input differ from those the partial "
            f"run read; delete {work.path} to start over"
        )
    if done:
        log(
            f"resuming {job.output}: {manifest['chunks_done']} chunk(s), {done} records already done; "
            f"continuing with chunk {manifest['chunks_done']}"
        )
    bar = _progress_bar(job, in_fmt, done)
    try:
        while _run_one_chunk(encoder, job, records, hasher, work, manifest, bar, plan):
            pass
    finally:
        if bar is not None:
            bar.close()


def _run_one_chunk(
    encoder: Any,
    job: EmbedJob,
    records: Iterator[tuple[int, str]],
    hasher: Any,
    work: WorkDir,
    manifest: dict[str, Any],
    bar: Any,
    plan: Any = None,
) -> bool:
    """Encode the next chunk, block by block, until the record count reaches a multiple of ``job.chunk_size``
    or ``job.checkpoint_seconds`` of work have passed; store it and count it in the manifest. False at the end."""
    start = done = manifest["records_done"]
    started = time.monotonic()
    sparse = plan is not None and plan.sparse
    parts: list[Any] = []
    kept_ids: list[int] = []
    kept_lines: list[int] = []
    while True:
        # blocks end on multiples of block_size and of chunk_size counted from record 0, so the batches a text
        # is encoded in do not depend on where a chunk was closed by time
        want = min((done // job.block_size + 1) * job.block_size, (done // job.chunk_size + 1) * job.chunk_size)
        want -= done
        block = [(done + i, line, text) for i, (line, text) in zip(range(want), records, strict=False)]
        if not block:
            break
        for _, line, text in block:
            _record_hash(hasher, line, text)
        kept = [row for row in block if row[2].strip()] if job.skip_empty else block
        texts = [text for _, _, text in kept]
        try:
            parts.append(
                plan.encode_sparse(encoder, texts, job, bar) if sparse else encode_texts(encoder, texts, job, bar)
            )
        except ModelOutputError as err:  # name the record by its line, not its place in this block
            if err.index is None:
                raise
            raise err.at(f"{where(job.input)}, line {kept[err.index][1]}") from None
        if bar is not None and len(kept) < len(block):
            bar.update(len(block) - len(kept))
        kept_ids.extend(i for i, _, _ in kept)
        kept_lines.extend(line for _, line, _ in kept)
        done += len(block)
        if (
            len(block) < want
            or done % job.chunk_size == 0
            or time.monotonic() - started >= job.checkpoint_seconds
        ):
            break
    if done == start:
        return False
    pairs = np.array([kept_ids, kept_lines], dtype=np.int64).reshape(2, -1) if job.skip_empty else None
    if sparse:
        from ..core.sparse import concat_rows

        rows = concat_rows(parts, int(manifest["dimension"]))
        entry = work.write_sparse_chunk(manifest["chunks_done"], start, done, rows, pairs)
        manifest["nnz_done"] = int(manifest.get("nnz_done", 0)) + rows.nnz
    else:
        vectors = np.concatenate(parts) if parts else np.zeros((0, int(manifest["dimension"])), np.float32)
        if plan is not None:
            vectors = plan.quantize(vectors, manifest)  # codes of a compact precision (a pure function per row)
        entry = work.write_chunk(manifest["chunks_done"], start, done, vectors, pairs)
    manifest.update(
        chunks=[*manifest["chunks"], entry],
        chunks_done=manifest["chunks_done"] + 1,
        records_done=done,
        rows_done=manifest["rows_done"] + len(kept_ids),
        prefix_sha256=hasher.hexdigest(),
    )
    work.write_manifest(manifest)
    return True


def _progress_bar(job: EmbedJob, in_fmt: str, initial: int) -> Any:
    if not job.progress:
        return None
    from tqdm.auto import tqdm

    total = count_records(job.input, in_fmt)
    return tqdm(
        total=total,
        initial=initial,
        unit=" texts",
        desc="embedding",
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
    )


def vector_batches(encoder: Any, texts: list[str], **options: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(indices, vectors)`` per batch: `Encoder.iter_vector_batches` (every long-document mode), or for an
    encoder-like object without it (a wrapper, a test double) its ``iter_token_batches`` + ``pool_batch``."""
    stream = getattr(encoder, "iter_vector_batches", None)
    if stream is not None:
        yield from stream(texts, **options)
        return
    for batch in encoder.iter_token_batches(texts, **options):
        yield np.asarray(batch.indices), encoder.pool_batch(batch)


def encode_texts(encoder: Any, texts: list[str], job: EmbedJob, bar: Any = None) -> np.ndarray:
    """Float32 ``len(texts) × dimension``: the encoder's own pooling, one forward pass per batch."""
    out = np.zeros((len(texts), int(encoder.dimension)), dtype=np.float32)
    if not texts:
        return out
    filled = np.zeros(len(texts), dtype=bool)
    # the token budget only when set: encoders written before it (test doubles, wrappers) keep working
    budget = {} if job.max_batch_tokens is None else {"max_batch_tokens": job.max_batch_tokens}
    for indices, vectors in vector_batches(
        encoder, texts, batch_size=job.batch_size, prompt=job.prompt, prompt_name=job.prompt_name, **budget
    ):
        out[indices] = vectors
        filled[indices] = True
        if bar is not None:
            bar.update(len(indices))
    if not filled.all():
        raise RuntimeError(f"the encoder returned no vector for {int((~filled).sum())} of {len(texts)} texts")
    return out


def _chunk_stream(work: WorkDir, manifest: Mapping[str, Any], kept: bool, digest: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Verified chunks as ``(ids, vectors)``; ``digest`` sees every vector byte, in order."""
    for ids, _, vectors in work.iter_chunks(manifest, kept):
        digest.update(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
        yield ids, vectors


def _assemble(
    work: WorkDir,
    manifest: Mapping[str, Any],
    out_fmt: str,
    output: Path,
    lines_file: Path | None,
    write: Callable[[Path, bool], None] | None = None,
) -> None:
    """Write the output (and the --skip-empty lines file) in the work folder, check it, rename it into place;
    ``write(tmp, kept)`` writes (and checks) an output that is not float32 vectors: codes or sparse rows."""
    kept = lines_file is not None
    tmp_lines = work.path / ("output" + LINES_SUFFIX)
    if kept:
        with open(tmp_lines, "wb") as fh:
            for _, lines, _ in work.iter_chunks(manifest, True):
                fh.write("".join(f"{n}\n" for n in lines.tolist()).encode())
            sync(fh)
    tmp = work.path / ("output." + out_fmt)
    if write is not None:
        write(tmp, kept)
    else:
        digest = hashlib.sha256()
        WRITERS[out_fmt].write(
            tmp, _chunk_stream(work, manifest, kept, digest), manifest["rows_done"], manifest["dimension"]
        )
        check_assembled(tmp, out_fmt, manifest["rows_done"], manifest["dimension"], digest.hexdigest())
    # the output first, then its line numbers. A lines file left by an earlier --skip-empty run no longer
    # describes this output: it is removed only when it is one (tokenpool's format), never another file.
    os.replace(tmp, output)
    if kept:
        os.replace(tmp_lines, lines_file)
    else:
        _remove_stale_lines_file(lines_file_for(str(output)))


def check_assembled(
    path: Path, out_fmt: str, rows: int, dim: int, sha256: str | None = None, dtype: str = "<f4"
) -> None:
    """Read back the assembled output before it gets its final name: ``rows`` × ``dim`` vectors (and for .npy,
    exactly the vector bytes the verified chunks held; ``dtype`` for codes). A mismatch is a RuntimeError:
    nothing is renamed."""
    found: tuple[int, int] | None = None
    if out_fmt == "npy":
        with open(path, "rb") as fh:
            major, _ = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            expected_dtype = dtype
            shape, fortran, dtype = read_header(fh)
            offset = fh.tell()
            digest = hashlib.sha256()
            while block := fh.read(1 << 20):
                digest.update(block)
        size = path.stat().st_size - offset
        expected = np.dtype(expected_dtype)
        if fortran or dtype != expected or size != rows * dim * expected.itemsize or (
            sha256 is not None and digest.hexdigest() != sha256
        ):
            raise RuntimeError(f"the assembled {path.name} does not hold the {rows} x {dim} vectors of the chunks")
        found = tuple(shape) if len(shape) == 2 else None
    elif out_fmt == "parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        found = (int(meta.num_rows), dim)
    elif out_fmt == "jsonl":
        with open(path, "rb") as fh:
            found = (sum(1 for _ in fh), dim)
    if found is not None and found != (rows, dim):
        raise RuntimeError(f"the assembled {path.name} has shape {found}, expected {(rows, dim)}; nothing renamed")


def _remove_stale_lines_file(path: Path) -> None:
    if not path.is_file() or path.is_symlink():
        return
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return
    numbers = head.split(b"\n")
    complete = len(head) < 1 << 16
    if complete and numbers and numbers[-1] == b"":
        numbers.pop()
    if not complete:
        numbers = numbers[:-1]
    if all(n.isdigit() for n in numbers) and _increasing([int(n) for n in numbers]):
        path.unlink()


def _increasing(values: list[int]) -> bool:
    return all(a < b for a, b in zip(values, values[1:], strict=False))


def check_storage_options(job: EmbedJob, out_fmt: str) -> None:
    """The --precision/--calibration/sparse options that can be checked without the model."""
    from .storage import check_storage_options as check

    check(job, out_fmt)


def plan_output(encoder: Any, job: EmbedJob, out_fmt: str) -> Any:
    """What the job writes (float32 vectors / compact codes / sparse rows), checked against the model."""
    from .storage import OutputPlan

    return OutputPlan.for_job(encoder, job, out_fmt)
