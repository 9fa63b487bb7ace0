"""`embed_corpus`: stream a corpus through an `Encoder` in resumable chunks and assemble the output atomically.

Records are read lazily and encoded ``chunk_size`` at a time; each finished chunk goes to the work folder
(`tokenpool.io.workdir`), so memory stays bounded and a killed run resumes from its last complete chunk. The
output appears under its final name only once complete (temporary file + ``os.replace``).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import CorpusError
from .formats import input_format, output_format
from .readers import READERS, STDIN, check_readable, count_records, iter_records
from .workdir import MANIFEST_VERSION, WorkDir
from .writers import WRITERS, sync

LINES_SUFFIX = ".lines.txt"
DEFAULT_CHUNK_SIZE = 2048


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
    known suffix in an existing folder, the sizes positive, and neither the output nor its ``.lines.txt`` is
    the input. `embed_corpus` takes the result as ``formats=`` so that it does not check again.
    """
    in_fmt = input_format(job.input, job.input_format)
    out_fmt = check_output(job.output)
    check_readable(job.input)
    if job.chunk_size < 1 or job.batch_size < 1:
        raise CorpusError("--chunk-size and --batch-size must be at least 1")
    if job.input != STDIN:
        source = Path(job.input).resolve()
        if source == Path(job.output).resolve():
            raise CorpusError(f"{job.output}: the output would replace the input; name another output file")
        if job.skip_empty and source == lines_file_for(job.output).resolve():
            raise CorpusError(
                f"{lines_file_for(job.output)}: --skip-empty would write its line numbers over the input; "
                f"name another output file"
            )
    return JobFormats(in_fmt, out_fmt)


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
    options = job_options(encoder, job, in_fmt)
    runtime = {"batch_size": job.batch_size, "device": str(getattr(encoder, "device", ""))}
    with WorkDir(job.output) as work:
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
                "dimension": int(encoder.dimension),
                "chunks_done": 0,
                "records_done": 0,
                "rows_done": 0,
                "prefix_sha256": hashlib.sha256().hexdigest(),
                "runs": 0,
            }
        else:
            _check_resumable(manifest, options, work.path)
            _note_runtime_change(manifest.get("runtime", {}), runtime, log)
        manifest["runs"] += 1
        manifest["runtime"] = runtime
        reused = manifest["chunks_done"]
        lines_file = lines_file_for(job.output) if job.skip_empty else None
        try:
            _run_chunks(encoder, job, in_fmt, work, manifest, log)
            _assemble(work, manifest, out_fmt, Path(job.output), lines_file)
        except BaseException:
            if manifest["chunks_done"] == 0:  # nothing worth resuming: leave no folder behind
                work.remove()
            raise
        work.remove()
    return EmbedResult(
        Path(job.output),
        manifest["rows_done"],
        manifest["records_done"],
        manifest["dimension"],
        manifest["chunks_done"],
        reused,
        time.perf_counter() - started,
        lines_file,
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
) -> None:
    """Encode the records after the manifest's verified prefix, one chunk at a time."""
    records = iter_records(job.input, in_fmt, field=job.field, column=job.column)
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
        while True:
            chunk = [
                (done + i, line, text)
                for i, (line, text) in zip(range(job.chunk_size), records, strict=False)
            ]
            if not chunk:
                break
            for _, line, text in chunk:
                _record_hash(hasher, line, text)
            kept = [row for row in chunk if row[2].strip()] if job.skip_empty else chunk
            vectors = encode_texts(encoder, [text for _, _, text in kept], job, bar)
            if bar is not None and len(kept) < len(chunk):
                bar.update(len(chunk) - len(kept))
            pairs = np.array(
                [[i for i, _, _ in kept], [line for _, line, _ in kept]], dtype=np.int64
            ).reshape(2, -1)
            work.write_chunk(manifest["chunks_done"], vectors, pairs if job.skip_empty else None)
            done += len(chunk)
            manifest.update(
                chunks_done=manifest["chunks_done"] + 1,
                records_done=done,
                rows_done=manifest["rows_done"] + len(kept),
                prefix_sha256=hasher.hexdigest(),
            )
            work.write_manifest(manifest)
    finally:
        if bar is not None:
            bar.close()


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


def encode_texts(encoder: Any, texts: list[str], job: EmbedJob, bar: Any = None) -> np.ndarray:
    """Float32 ``len(texts) × dimension``: the encoder's own pooling, one forward pass per batch."""
    out = np.zeros((len(texts), int(encoder.dimension)), dtype=np.float32)
    if not texts:
        return out
    filled = np.zeros(len(texts), dtype=bool)
    # the token budget only when set: encoders written before it (test doubles, wrappers) keep working
    budget = {} if job.max_batch_tokens is None else {"max_batch_tokens": job.max_batch_tokens}
    for batch in encoder.iter_token_batches(
        texts, batch_size=job.batch_size, prompt=job.prompt, prompt_name=job.prompt_name, **budget
    ):
        indices = np.asarray(batch.indices)
        out[indices] = encoder.pool_batch(batch)
        filled[indices] = True
        if bar is not None:
            bar.update(len(indices))
    if not filled.all():
        raise RuntimeError(f"the encoder returned no vector for {int((~filled).sum())} of {len(texts)} texts")
    return out


def _chunk_stream(
    work: WorkDir, manifest: Mapping[str, Any], kept: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for ids, _, vectors in work.iter_chunks(manifest["chunks_done"], manifest["chunk_size"], kept):
        yield ids, vectors


def _assemble(
    work: WorkDir, manifest: Mapping[str, Any], out_fmt: str, output: Path, lines_file: Path | None
) -> None:
    kept = lines_file is not None
    tmp_lines = work.path / ("output" + LINES_SUFFIX)
    if kept:
        with open(tmp_lines, "wb") as fh:
            for _, lines, _ in work.iter_chunks(manifest["chunks_done"], manifest["chunk_size"], True):
                fh.write("".join(f"{n}\n" for n in lines.tolist()).encode())
            sync(fh)
    tmp = work.path / ("output." + out_fmt)
    WRITERS[out_fmt].write(
        tmp, _chunk_stream(work, manifest, kept), manifest["rows_done"], manifest["dimension"]
    )
    # the output first, then its line numbers; a lines file left by an earlier --skip-empty run would no
    # longer describe this output, so it goes
    os.replace(tmp, output)
    if kept:
        os.replace(tmp_lines, lines_file)
    else:
        lines_file_for(str(output)).unlink(missing_ok=True)
