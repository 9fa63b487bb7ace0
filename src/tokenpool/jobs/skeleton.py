"""The one corpus job: read records, encode them in blocks, store chunks in a work folder, assemble the output.

Every output kind (`.pooled`, `.chunks`, `.tokens`) is a `Kind`: its row schema (`.rows`), options and encode
step; the skeleton does the rest for all of them. The work folder's manifest holds the options that decide the
output, the chunks done and the sha256 of the records read, which ``--resume`` checks before any new work (and
of the records an int8/uint8 calibration came from, some of them maybe beyond the records done: `check_sample`).
Blocks end at multiples of ``block_size`` and ``chunk_size`` counted from record 0 (or before a record that
would take one over the kind's weight), so where a chunk closes never changes how texts are batched: a
resumed run writes the bytes an uninterrupted one does.
"""

from __future__ import annotations

import errno
import filecmp
import hashlib
import itertools
import json
import math
import numbers
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from ..core.quantize import is_calibration_head
from ..errors import CorpusError, ModelOutputError, OptionError, is_int
from ..io.formats import check_text_options, input_format, output_format
from ..io.readers import (
    READERS,
    STDIN,
    TEXT_KEY,
    Records,
    check_readable,
    count_records,
    is_regular_file,
    iter_records,
    refuse_parquet_stdin,
    where,
)
from ..io.rows import RAGGED, Parts, RowSchema
from ..io.storage import calibration_file_for
from ..io.workdir import (
    MANIFEST_VERSION,
    WORK_SUFFIX,
    WorkDir,
    beside,
    check_output_name,
    check_work_dir,
    work_dir_for,
)
from ..io.writers import WRITERS, RowStream, replace_synced, sync
from ..model.folders import code_repo_files
from ..model.hub import TOKENIZER_NAMES, TOKENIZER_SUFFIXES
from ..model.request import MAX_SIZE, EncodeRequest, reads_spans
from ..model.safety import CODE_CONFIG_FILES
from .rows import record_id, row_indexes

LINES_SUFFIX = ".lines.txt"
ID_FIELD = "id"  # the default --id-field
DEFAULT_CHUNK_SIZE = 2048
DEFAULT_CHECKPOINT_SECONDS = 30.0  # a chunk closes at the first block end after this many seconds of work
DEFAULT_BLOCK_SIZE = 256  # records encoded (length-sorted, batched) together; a chunk is whole blocks
DEFAULT_BLOCK_TOKENS = 65536  # token vectors: tokens per block and chunk (~100 MB at hidden size 384)

END_KEY = "input_ended"  # the manifest's mark, written with its last chunk: the input's end cut its last block
BEFORE_LAST = "before_last"  # the manifest's counts before its last chunk, for `skip_done` to reopen that chunk
BEFORE_COUNTS = ("rows_done", "items_done", "has_ids", "prefix_sha256", "group_weight")
SAMPLE_KEY = "sample"  # the manifest's record of the first records a kind's stored state came from (`sample_entry`)

# a record: (line, text, values of the kind's extra fields, ...): kinds may append what they looked up
Item = tuple[Any, ...]


@dataclass
class EmbedJob:
    """What to embed and how: ``request`` is what is asked of each encode (`tokenpool.model.request`: the rows —
    pooled vectors or codes, sparse rows, ``chunks``, ``output="tokens"`` — batch size, prompt, ...); the other
    fields are the job's own. The encoder (model, pooling, normalize, dim, max length) is passed separately."""

    input: str
    output: str
    request: EncodeRequest = field(default_factory=EncodeRequest)
    input_format: str | None = None
    field: str = TEXT_KEY
    column: str = TEXT_KEY
    chunk_size: int = DEFAULT_CHUNK_SIZE
    skip_empty: bool = False
    resume: bool = False
    progress: bool = False
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS
    block_size: int = DEFAULT_BLOCK_SIZE
    spans_field: str = "spans"  # chunks="spans": the field or column of each record's spans
    id_field: str = ID_FIELD  # copied to each chunk or token row when the records have it
    block_tokens: int = DEFAULT_BLOCK_TOKENS  # token rows: tokens per block and chunk

    def place(self, number: int) -> str:
        """Where record ``number`` of the input is, as its reader says it: ``FILE, line N`` (``row N`` in parquet)."""
        unit = "row" if input_format(self.input, self.input_format) == "parquet" else "line"
        return f"{where(self.input)}, {unit} {number}"

    @property
    def kind(self) -> str:
        """Which rows the job writes: ``tokens``, ``chunks`` or ``vectors`` (pooled, or sparse rows)."""
        request = self.request
        return "tokens" if request.output == "tokens" else "chunks" if request.chunks is not None else "vectors"


@dataclass
class EmbedResult:
    """What a job wrote: ``rows`` rows of ``dimension`` values from ``records`` records; ``items``: the token
    vectors of token rows, the non-zeros of sparse rows."""

    output: Path
    rows: int
    records: int
    dimension: int
    chunks: int
    reused_chunks: int
    seconds: float
    lines_file: Path | None = None
    index_file: Path | None = None
    precision: str = "float32"
    sparse: bool = False
    items: int = 0
    calibration_file: Path | None = None


class JobFormats(NamedTuple):
    """What `check_job` found: the `READERS` name of the input and the `WRITERS` name of the output."""

    input: str
    output: str


class Kind:
    """One output kind's part of a job (subclasses set ``schema`` and ``width`` and define `encode`)."""

    schema: RowSchema
    width: int  # the manifest's ``dimension``: values per vector (or the vocabulary of sparse rows)
    extras: tuple[str, ...] = ()  # record fields read besides the text (ids, spans)
    lines_file = False  # --skip-empty writes OUT.lines.txt
    names_records = False  # `encode` names the records in its own errors
    block_weight: float = math.inf  # a block ends before the record that would take it over this weight
    chunk_weight: float = math.inf  # a chunk closes once its records weigh this much
    precision, sparse, calibration_file = "float32", False, None

    def __init__(self, encoder: Any, job: EmbedJob, out_fmt: str) -> None:
        self.encoder, self.job, self.out_fmt = encoder, job, out_fmt

    def options(self) -> dict[str, Any]:
        """What decides this kind's rows beyond `job_options` (a resumed run must match it)."""
        return {}

    def manifest_fields(self) -> dict[str, Any]:
        return {}

    def canonical_options(self, stored: dict[str, Any]) -> dict[str, Any]:
        """The `options` a partial run stored, in the form `options` gives them now (an earlier version may
        have stored an option as it was spelled), so that a resume compares like with like."""
        return stored

    def resumed(self, manifest: dict[str, Any], folder: Path) -> None:
        """Check what a resumed partial run stored (a calibration) against what was asked."""

    def prepare(self, items: Iterator[Item], manifest: dict[str, Any]) -> Iterator[Item]:
        """The records after those already done, as `encode` wants them (calibrated on, looked up)."""
        return items

    def weight(self, item: Item) -> int:
        return 0

    def encode(self, kept: list[tuple[int, Item]]) -> Parts:
        """The rows of ``kept`` (record number, record) pairs."""
        raise NotImplementedError

    def metadata(self, manifest: Mapping[str, Any]) -> dict[bytes, bytes] | None:
        """Parquet schema metadata of the output."""
        return None

    def side_files(self, work: WorkDir, manifest: Mapping[str, Any], output: Path) -> list[tuple[Path, Path]]:
        """The kind's side files (a calibration), each written in the work folder, with the path `assemble`
        renames it to once the output is in place; a file already there that says what the kind would write is
        given as that path twice, and left as it is."""
        return []


def lines_file_for(output: str | os.PathLike[str], suffix: str = LINES_SUFFIX) -> Path:
    """A side file of ``output``: ``<output><suffix>`` (--skip-empty's kept line numbers by default)."""
    return beside(output, suffix)


def check_common(job: EmbedJob) -> JobFormats:
    """What every job checks before a model loads: no per-call finishing in the request (the job's rows are the
    encoder's own vectors), input format and options, readable input, output name and folder, sizes; the input
    is no file the job writes or deletes (by path and by inode: links are caught)."""
    request = job.request
    given = [name for name in ("pooling", "truncate_dim", "normalize") if getattr(request, name) is not None]
    if given or request.finish is False:
        raise OptionError(f"{request.spell(given[0] if given else 'finish')}: a job writes the encoder's own finished "
                          f"vectors, as its manifest records them; build the Encoder with the pooling, truncate_dim "
                          f"or normalize wanted")  # fmt: skip
    _refuse_unread_fields(job)
    in_fmt = input_format(job.input, job.input_format)
    check_text_options(job.input, in_fmt, field=job.field, column=job.column)
    refuse_parquet_stdin(job.input, in_fmt)
    if job.kind != "vectors" and job.id_field != ID_FIELD and READERS[in_fmt].text_option is None:
        raise CorpusError(f"--id-field {job.id_field} names a field or column of each record; {where(job.input)} is "
                          f"read as {in_fmt}, whose records have none")  # fmt: skip
    out_fmt = output_format(job.output)
    out = _check_output_place(job)
    check_readable(job.input)
    _check_sizes(job)
    work = work_dir_for(job.output)
    check_side_file(job, Path(job.output), "the output would replace the input")
    check_side_file(job, lines_file_for(job.output), "the input is named like the output's line-numbers file, "
                    "which the job writes (--skip-empty) or removes")  # fmt: skip
    check_side_file(job, calibration_file_for(job.output), "the input is named like the output's calibration "
                    "file, which the job writes (int8/uint8) or removes")  # fmt: skip
    check_side_file(job, work, "the input is the output's work folder")
    for what, schema in row_indexes().items():  # written beside an .npy output, or removed as stale
        why = f"the input is named like the output's {what}, which the job writes or removes"
        check_side_file(job, lines_file_for(job.output, schema.sidecar), why)
    if job.input != STDIN and work.resolve() in Path(job.input).resolve().parents:
        raise CorpusError(f"{where(job.input)}: the input lies inside the output's work folder {where(work)}; "
                          f"move it first")  # fmt: skip
    folder = next((p for p in out.resolve().parents if p.name.endswith(WORK_SUFFIX)), None)
    if folder is not None:  # the job owning that folder deletes the files it names there (output.jsonl, ...)
        raise CorpusError(f"{where(job.output)}: the output would lie inside the tokenpool work folder "
                          f"{where(folder)}; name another output")  # fmt: skip
    return JobFormats(in_fmt, out_fmt)


def check_work(job: EmbedJob) -> None:
    """What `run` would refuse once the model had loaded, refused before (the last checks: every other refusal
    comes first, as it did): OUT's work folder when there is one (another program's folder, another job's lock,
    a name the job creates there that is no file of its own, a partial run without ``resume``), then OUT's
    folder when it cannot be written (the work folder and OUT are made there)."""
    work = WorkDir(job.output)
    if check_work_dir(work.path):
        work.check_unlocked()
        partial_run(work, job.resume)
    folder = Path(job.output).parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CorpusError(f"{where(job.output)}: folder {where(folder)} cannot be written (no permission, or a "
                          f"read-only file system)")  # fmt: skip


def _check_output_place(job: EmbedJob) -> Path:
    """OUT as a path, after checking that a file may be renamed onto it: a name short enough for the job's work
    folder, no folder, pipe, socket or device there, and its folder exists (a symlink at OUT is replaced, not
    followed)."""
    check_output_name(job.output)
    out = Path(job.output)
    if out.is_dir():
        raise CorpusError(f"{where(job.output)}: is a directory; name an output file")
    if out.exists() and not out.is_symlink() and not out.is_file():  # (the rename would remove it)
        raise CorpusError(f"{where(job.output)}: is a named pipe, socket or device, not a file; the output is "
                          f"renamed over what is at OUT, which would remove it: name a file")  # fmt: skip
    if not out.parent.is_dir():
        why = "is not a folder" if out.parent.exists() else "does not exist"
        raise CorpusError(f"{where(job.output)}: folder {where(out.parent)} {why}")
    return out


def _check_sizes(job: EmbedJob) -> None:
    """The job's sizes, named as its parameters (the command line checks its flags' values itself): chunk and
    block sizes (records, tokens) positive integers at most `MAX_SIZE` (the manifest records them, as it does the
    request's own sizes, which `EncodeRequest.check` bounds), checkpoint seconds a finite real number >= 0
    (numpy's too)."""
    for name in ("chunk_size", "block_size", "block_tokens"):
        value = getattr(job, name)
        if not is_int(value) or value < 1:
            raise CorpusError(f"{name} must be a positive integer, got {value!r}")
        if value > MAX_SIZE:
            raise OptionError(f"{job.request.spell(name, value)}: at most {MAX_SIZE}")
    seconds = job.checkpoint_seconds
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not 0 <= seconds < float("inf"):
        raise CorpusError(f"checkpoint_seconds must be a number >= 0, got {seconds!r}")


def _refuse_unread_fields(job: EmbedJob) -> None:
    """A record field named (not the default) to a job whose rows do not read it is refused, as the CLI refuses
    the flag: ``spans_field`` is for ``chunks="spans"``, ``id_field`` for chunk and token rows. (Sizes such as
    ``block_tokens`` may be given to every kind alike.)"""
    reads = {"spans_field": job.kind == "chunks" and reads_spans(job.request.chunks),
             "id_field": job.kind != "vectors"}  # fmt: skip
    defaults = {f.name: f.default for f in fields(EmbedJob)}
    unread = [name for name, read in reads.items() if not read and getattr(job, name) != defaults[name]]
    if unread:
        raise OptionError(f"{unread[0]}={getattr(job, unread[0])!r} is not read by this job (its rows: {job.kind}"
                          f"{', chunks ' + repr(job.request.chunks) if job.kind == 'chunks' else ''})")


def check_side_file(job: EmbedJob, path: Path, why: str) -> None:
    """`CorpusError` when the input is ``path``, a file the job writes or removes."""
    if job.input == STDIN:
        return
    same = Path(job.input).resolve() == path.resolve()
    with suppress(OSError):
        same = same or os.path.samefile(job.input, path)
    if same:
        raise CorpusError(f"{where(path)}: {why}; name another output file")


def check_index(job: EmbedJob, out_fmt: str, schema: RowSchema) -> None:
    """The row index an .npy output writes beside it is neither the input nor a file tokenpool did not write
    (an earlier run's index is replaced)."""
    if out_fmt == "npy":
        index = lines_file_for(job.output, schema.sidecar)
        check_replaceable(index, *side_files_of(job.output)[index])


def side_files_of(output: str | os.PathLike[str]) -> dict[Path, tuple[Callable[[bytes], bool], str]]:
    """Every side file a job writes beside ``output`` (or removes: an earlier run's, of any kind), with how its
    first 64 KiB show it is tokenpool's and what messages call it."""
    sides = {
        lines_file_for(output): (is_lines_file, "line-numbers file (--skip-empty)"),
        calibration_file_for(output): (is_calibration_head, "calibration file"),
    }
    for what, schema in row_indexes().items():
        sides[lines_file_for(output, schema.sidecar)] = (row_head_of(schema), what)
    return sides


def row_head_of(schema: RowSchema) -> Callable[[bytes], bool]:
    """Whether a file's first 64 KiB start the row index of ``schema``: a first line that starts a row with
    its keys (tokenpool writes them before any long field) and holds no vectors (a .jsonl output of these rows,
    named like an index, is another job's output: its rows hold them)."""
    keys = [f'"{c.name}": '.encode() for c in schema.shown(False, "sidecar") if c.kind != RAGGED]
    vectors = f'"{schema.array}": '.encode()

    def ours(head: bytes) -> bool:
        line = b"".join(head.partition(b"\n")[:2])
        return line.startswith(b'{"doc": ') and all(key in line for key in keys) and vectors not in line

    return ours


def check_replaceable(path: Path, ours: Callable[[bytes], bool], what: str) -> None:
    """A side file the job writes is absent or one ``ours`` recognises (from its first 64 KiB) as tokenpool's,
    an earlier run's, which is replaced; anything else (a user's file, a symlink) is refused, untouched."""
    head = _head(path)
    if os.path.lexists(path) and (head is None or not ours(head)):
        why = "is empty, so it cannot be told from a file of yours" if head == b"" else f"is not a tokenpool {what}"
        raise CorpusError(f"{where(path)} exists and {why}; refusing to replace it (move it away, or name another "
                          f"output)")  # fmt: skip


def _head(path: Path) -> bytes | None:
    """The first 64 KiB of a regular file (not a symlink); None for anything else or an unreadable file."""
    if path.is_file() and not path.is_symlink():
        with suppress(OSError), open(path, "rb") as fh:
            return fh.read(1 << 16)
    return None


def run(encoder: Any, job: EmbedJob, formats: JobFormats, kind: Kind, log: Callable[[str], None]) -> EmbedResult:
    """Run ``job`` for ``kind``: its chunks (resuming a partial run), then the output and its side files."""
    started = time.perf_counter()
    options = {**job_options(encoder, job, formats.input), **kind.options()}
    runtime = {"batch_size": job.request.batch_size, "max_batch_tokens": job.request.max_batch_tokens,
               "device": str(getattr(encoder, "device", ""))}  # fmt: skip
    with WorkDir(job.output, log) as work:
        manifest = open_manifest(work, job, kind, options, runtime, log)
        with removed_when_done(work, manifest):
            reused = run_chunks(job, formats.input, work, manifest, kind, log)
            lines, index = assemble(work, manifest, job, kind, formats.output)
    return EmbedResult(
        Path(job.output), manifest["rows_done"], manifest["records_done"], kind.width, manifest["chunks_done"],
        reused, time.perf_counter() - started, lines, index, kind.precision, kind.sparse, manifest["items_done"],
        kind.calibration_file,
    )  # fmt: skip


def id_checked(records: Records, job: EmbedJob, work: WorkDir | None = None) -> Records:
    """``records`` (``extras``: the id field first), each id one the id column stores (`record_id`, refused
    naming its line); at their end, an id field named (not the default) that is missing or null in every record
    (skipped ones too) is refused, as a missing text field is: a misspelt name would leave the rows without ids.
    The ``work`` folder of a run (stdin, a pipe: no check read them ahead) goes first, its chunks with it."""
    held = None  # (no record at all: nothing to hold one)
    for line, text, values in records:
        held = record_id(values[0], job.place, line) is not None or bool(held)
        yield line, text, values
    if held is False and job.id_field != ID_FIELD:
        if work is not None:
            work.remove()
        raise CorpusError(f"{where(job.input)}: --id-field {job.id_field!r} is missing or null in every record; "
                          f"name the field or column holding the ids, or leave --id-field out")  # fmt: skip


def job_options(encoder: Any, job: EmbedJob, in_fmt: str) -> dict[str, Any]:
    """Everything that decides the output's values: a resumed run must match these exactly."""
    from .._version import __version__, source_digest

    model = Path(encoder.model_path).resolve()
    files = model_stamps(model, bool(getattr(encoder, "trust_remote_code", False))) if model.is_dir() else {}
    runs = getattr(getattr(encoder, "runner", None), "path", None)  # the file a runtime runs (--onnx-file)
    config = getattr(encoder, "config", None)
    return {
        "tokenpool": __version__,
        "tokenpool_source": source_digest(),  # (another build under the same version: other bytes possible)
        "model": str(model),
        "model_files": files,
        "runtime": getattr(encoder, "runtime", "torch"),
        "runtime_file": None if runs is None else _runtime_stamps(Path(runs)),
        "config": {} if config is None else {f.name: _plain(getattr(config, f.name)) for f in fields(config)
                                              if f.name not in ("sources", "fallback")},  # descriptive only
        "pooling": [str(getattr(s, "value", s)) for s in encoder.strategies],
        "normalize": bool(encoder.normalize),
        "dim": encoder.truncate_dim,
        "dimension": int(encoder.dimension),
        "max_length": encoder.max_length,
        "add_eos": getattr(encoder, "add_eos", None),  # an EOS token appended to every text (last-token models)
        "long_documents": job.request.long_documents or getattr(encoder, "long_documents", "truncate"),
        "window_stride": getattr(encoder, "window_stride", None),
        "dtype": str(getattr(encoder, "dtype", None)),
        "prompt": job.request.prompt,
        "prompt_name": job.request.prompt_name,
        "input": "<stdin>" if job.input == STDIN else str(Path(job.input).resolve()),
        "input_format": in_fmt,
        "field": job.field if READERS[in_fmt].text_option == "field" else None,
        "column": job.column if READERS[in_fmt].text_option == "column" else None,
        "skip_empty": job.skip_empty,
        "chunk_size": int(job.chunk_size),
        "block_size": int(job.block_size),
    }  # fmt: skip


MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf", ".onnx", *TOKENIZER_SUFFIXES)


def model_stamps(model: Path, code: bool = False) -> dict[str, list[Any] | None]:
    """`_stamp` of each weights, config and tokenizer file of a model folder (``code``: and Python file, which
    trust_remote_code runs, and those of other repos its ``auto_map`` names: `code_repo_files`), by its path there:
    at the top and in its module folders (`_module_folder`, two levels at most, symlinked ones too)."""
    suffixes = MODEL_SUFFIXES + (".py",) * code
    found: dict[str, list[Any] | None] = {}
    for folder, subfolders, files in os.walk(model, followlinks=True):  # (no loop: two levels at most)
        below = Path(folder).relative_to(model)
        subfolders[:] = [] if len(below.parts) >= 2 else sorted(d for d in subfolders if _module_folder(d, below))
        for name in sorted(files):
            path = Path(folder) / name
            ours = path.suffix in suffixes or name in TOKENIZER_NAMES
            if ours and not name.startswith(".") and path.is_file():
                found[(below / name).as_posix()] = _stamp(path)
                if code and name in CODE_CONFIG_FILES:
                    found.update((key, file and _stamp(file)) for key, file in code_repo_files(path).items())
    return found


def _runtime_stamps(path: Path) -> list[Any]:
    """The file a runtime runs (resolved) and its `_stamp`, then the name and stamp of each of its external
    weight files (`tokenpool.model.onnx.onnx_data_files`: ``model.onnx_data``, ``model.onnx.data``)."""
    from ..model.onnx import onnx_data_files

    weights = [[data.name, *_stamp(data)] for data in onnx_data_files(path)]
    return [str(path.resolve()), *_stamp(path), *weights]


def _module_folder(name: str, below: Path) -> bool:
    """Whether `model_stamps` enters the subfolder ``name`` of the model folder's ``below``: not hidden ones
    (download metadata), work folders (``--model .``), nor ``onnx/`` (a run names its ``runtime_file``)."""
    return not (name.startswith(".") or WORK_SUFFIX in name or (not below.parts and name == "onnx"))


def _stamp(path: Path) -> list[Any]:
    """A model file's size and modification time, and where a symlink (or a symlinked folder) leads: a file
    replaced, or a link pointed at another file, between two runs differs in one of them."""
    info, real = path.stat(), os.path.realpath(path)
    return [info.st_size, info.st_mtime_ns, *([real] * (real != os.path.abspath(path)))]


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else list(value) if isinstance(value, tuple) else value


def open_manifest(
    work: WorkDir, job: EmbedJob, kind: Kind, options: dict, runtime: dict, log: Callable[[str], None]
) -> dict[str, Any]:
    """A fresh manifest, or the partial run's after checking that --resume was asked, the options are the
    same, and every chunk it will reuse is intact (before any new work)."""
    manifest = partial_run(work, job.resume)
    if manifest is None:
        work.clear()
        manifest = {
            "version": MANIFEST_VERSION, "options": options, "runtime": runtime, "chunk_size": int(job.chunk_size),
            "dimension": kind.width, "chunks_done": 0, "records_done": 0, "rows_done": 0, "items_done": 0,
            "has_ids": False, "prefix_sha256": hashlib.sha256().hexdigest(), "runs": 0, "chunks": [],
            **kind.manifest_fields(),
        }  # fmt: skip
    else:
        before = kind.canonical_options(dict(manifest.get("options", {})))
        changed = [key for key in sorted(set(before) | set(options)) if before.get(key) != options.get(key)]
        changed.sort(key=lambda key: key not in before or key not in options)  # values both runs set come first
        if changed:
            shown = "; ".join(_change(key, before.get(key), options.get(key)) for key in changed[:3])
            raise CorpusError(
                f"refusing to resume: options differ from the partial run ({shown}); rerun with the original "
                f"options, or delete {where(work.path)} to start over"
            )
        for key in ("batch_size", "max_batch_tokens", "device"):
            if manifest["runtime"].get(key) != runtime.get(key):
                log(f"note: {key} was {manifest['runtime'].get(key)!r}, now {runtime.get(key)!r}; the vectors may "
                    f"differ from an uninterrupted run in the last bits")  # fmt: skip
        kind.resumed(manifest, work.path)
        for _ in work.iter_chunks(manifest, kind.schema, not job.skip_empty):
            pass
    manifest["runs"] += 1
    manifest["runtime"] = runtime
    return manifest


def partial_run(work: WorkDir, resume: bool) -> dict[str, Any] | None:
    """The manifest of the partial run in ``work`` (None: none), which only ``resume`` continues."""
    manifest = work.read_manifest()
    if manifest is not None and not resume:
        raise CorpusError(
            f"{where(work.path)} holds a partial run ({manifest['records_done']} records done); pass --resume "
            f"to continue it, or delete that folder to start over"
        )
    return manifest


def _change(key: str, then: Any, now: Any) -> str:
    """How a refused resume names an option that changed; of a mapping (the model's files), only the entries
    that changed (three at most)."""
    if isinstance(then, Mapping) and isinstance(now, Mapping):
        names = [name for name in sorted(set(then) | set(now)) if then.get(name) != now.get(name)]
        return "; ".join(f"{key} {name}: {then.get(name)!r} then, {now.get(name)!r} now" for name in names[:3])
    return f"{key}: {then!r} then, {now!r} now"


@contextmanager
def removed_when_done(work: WorkDir, manifest: Mapping[str, Any]) -> Iterator[None]:
    """Around a job's run and assembly: the work folder is removed when they finish, and when they fail before
    any chunk is finished (nothing worth resuming); finished chunks stay for --resume (after a bad record is
    fixed, or a refused resume is sorted out)."""
    try:
        yield
    except BaseException as exc:
        if manifest["chunks_done"] == 0:
            work.remove()
        if isinstance(exc, OSError) and exc.errno in WRITE_FAILED:  # the OS names no file: say where, what stays
            kept = manifest["chunks_done"]
            stays = f"its {kept} finished chunk(s) stay there" if kept else "nothing was kept"
            fix = "make room, then" if exc.errno in NO_ROOM else "once it can be written,"
            raise OSError(exc.errno, f"{exc.strerror or exc} while writing in {where(work.path)}; {stays}: "
                                     f"{fix} rerun with --resume") from None  # fmt: skip
        raise
    work.remove()


NO_ROOM = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}  # a full disk, file size or quota
WRITE_FAILED = NO_ROOM | {errno.EIO, errno.EROFS}  # and a failing disk, one gone read-only (reads: `decoded_lines`)


def hash_records(hasher: Any, items: Iterable[Item]) -> Any:
    """Add records (each its line, text and extra fields) to ``hasher``, the sha256 of the records read."""
    for item in items:
        data = json.dumps(item[:3], ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
        hasher.update(len(data).to_bytes(8, "little") + data)
    return hasher


def skip_done(records: Iterator[Item], manifest: dict, work: WorkDir) -> tuple[Any, Iterator[Item], dict]:
    """Read the records a partial run already did and check them against its ``prefix_sha256``; returns the
    hasher, the records after them and the manifest's changes. When the input ended in the last chunk
    (`END_KEY`: its last block was cut short there) and now goes on, that chunk is reopened: the changes
    put the manifest back as it was before it (`run_chunks` makes them once the resume is checked) and its records
    are encoded again with the ones after them, in the blocks and row groups an uninterrupted run makes."""
    hasher, done, read = hashlib.sha256(), manifest["records_done"], 0
    end = manifest.get(END_KEY) and manifest["chunks"]
    start = manifest["chunks"][-1]["records"][0] if end else done
    for record in itertools.islice(records, start):
        hash_records(hasher, [record])
        read += 1
    before, last = hasher.copy(), list(itertools.islice(records, done - start))
    hash_records(hasher, last)
    read += len(last)
    if read < done:
        why = f"the input now has fewer records than the {done} the partial run had read"
    elif hasher.hexdigest() != manifest["prefix_sha256"]:
        why = f"the first {done} records of the input differ from those the partial run read"
    elif end and (more := list(itertools.islice(records, 1))):
        reopened = dict(manifest[BEFORE_LAST], chunks=manifest["chunks"][:-1], chunks_done=len(manifest["chunks"]) - 1,
                        records_done=start, **{END_KEY: False})  # fmt: skip
        return before, itertools.chain(last, more, records), reopened
    else:
        return hasher, records, {}
    raise CorpusError(f"refusing to resume: {why}; delete {where(work.path)} to start over")


def sample_entry(items: list[Item], what: str, whole: bool) -> dict[str, Any]:
    """The manifest's `SAMPLE_KEY`: the first records of the input (``items``, from record 0) that ``what`` was
    computed from, by count and sha256 (as `hash_records` adds them), and whether they were the ``whole``
    input (a sample cut short by its end), for a resume to check (`check_sample`)."""
    hasher = hash_records(hashlib.sha256(), items)
    return {"what": what, "records": len(items), "sha256": hasher.hexdigest(), "whole": whole}


def check_sample(records: Iterator[Item], hasher: Any, manifest: Mapping[str, Any], work: WorkDir) -> Iterator[Item]:
    """The records after the verified prefix (``hasher``: its sha256 so far), once the manifest's sample records
    that lie beyond it (a calibration may come from records no chunk holds yet) are checked: the sample's sha256
    goes on from the prefix's; a sample that was the whole input must still be (a longer input would give
    another sample). The records read are put back in front of the stream."""
    sample, done = manifest.get(SAMPLE_KEY), manifest["records_done"]
    if not sample:
        return records
    beyond = max(sample["records"] - done, 0)  # (none: the prefix check covered them)
    ahead = list(itertools.islice(records, beyond + bool(sample.get("whole"))))
    hasher = hash_records(hasher.copy(), ahead[:beyond])
    n, what, why = sample["records"], sample["what"], None
    if beyond and (len(ahead) < beyond or hasher.hexdigest() != sample["sha256"]):
        why = f"the first {n} records of the input differ from those the partial run computed its {what} from"
    elif len(ahead) > beyond:
        why = f"the partial run computed its {what} from the whole input, {n} records, and the input now has more"
    if why:
        raise CorpusError(f"refusing to resume: {why}; delete {where(work.path)} to start over")
    return itertools.chain(ahead, records)


def blocks(items: Iterator[Item], job: EmbedJob, kind: Kind, done: int) -> Iterator[tuple[list[Item], bool]]:
    """The records in blocks ending at multiples of ``block_size`` and ``chunk_size`` (counted from record 0),
    or before the record that would take a block over ``kind.block_weight`` (a heavier record is a block of
    its own), each with whether the end of the input cut it. A record is read only when its block needs it;
    block ends depend on the records alone."""
    pending: Item | None = None
    while True:
        end = min((done // job.block_size + 1) * job.block_size, (done // job.chunk_size + 1) * job.chunk_size)
        block: list[Item] = []
        weight, ended = 0, False
        while done + len(block) < end:
            item, pending = pending if pending is not None else next(items, None), None
            if item is None:
                ended = True
                break
            if block and weight + kind.weight(item) > kind.block_weight:
                pending = item
                break
            block.append(item)
            weight += kind.weight(item)
        if not block:
            return
        done += len(block)
        yield block, ended


def run_chunks(
    job: EmbedJob, in_fmt: str, work: WorkDir, manifest: dict, kind: Kind, log: Callable[[str], None]
) -> int:
    """Encode the records after the manifest's verified prefix block by block; a chunk closes at a multiple of
    ``chunk_size`` records, at ``kind.chunk_weight``, or after ``checkpoint_seconds`` of work. Returns how many
    chunks of a partial run were reused."""
    records = iter_records(job.input, in_fmt, field=job.field, column=job.column, extras=kind.extras)
    if job.kind != "vectors" and not is_regular_file(job.input):  # (a file's ids: checked before the model loaded)
        records = id_checked(records, job, work)
    hasher, records, reopened = skip_done(records, manifest, work)
    records = check_sample(records, hasher, {**manifest, **reopened}, work)
    if reopened:  # the last chunk reopened: uncounted on disk before its files are written again
        manifest.update(reopened)  # (not before: a refused resume with no chunk left would remove the folder)
        work.write_manifest(manifest)
    done, start, reused = manifest["records_done"], manifest["records_done"], manifest["chunks_done"]
    if done:
        log(f"resuming {where(job.output)}: {reused} chunk(s), {done} records already done; continuing with "
            f"chunk {reused}")  # fmt: skip
    bar: Any = None
    if job.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=count_records(job.input, in_fmt), initial=done, unit=" texts", desc="embedding",
                   file=sys.stderr, dynamic_ncols=True, smoothing=0.1)  # fmt: skip
    parts: list[Parts] = []
    weight, clock = manifest.get("group_weight", 0), time.monotonic()  # weight since the last close by size
    try:
        for block, ended in blocks(kind.prepare(records, manifest), job, kind, done):
            hash_records(hasher, block)
            kept = [(done + k, item) for k, item in enumerate(block) if not job.skip_empty or item[1].strip()]
            with nullcontext() if kind.names_records else named_lines(job, [item for _, item in kept]):
                parts.append(kind.encode(kept))  # a model error names the record by its file and line
            done += len(block)
            weight += sum(kind.weight(item) for item in block)
            if bar is not None:
                bar.update(len(block))
            by_size = done % job.chunk_size == 0 or weight >= kind.chunk_weight
            if by_size or time.monotonic() - clock >= job.checkpoint_seconds:
                weight, carried = (0, None) if by_size else (weight, weight)
                store_chunk(work, manifest, kind.schema, start, done, parts, hasher, carried, ended)
                start, parts, clock = done, [], time.monotonic()
        if done > start:  # closed by the end of the input: joined to the next, as by time, when its blocks are whole
            store_chunk(work, manifest, kind.schema, start, done, parts, hasher, None if ended else weight, ended)
    finally:
        if bar is not None:
            bar.close()
    return reused


@contextmanager
def named_lines(job: EmbedJob, items: list[Item]) -> Iterator[None]:
    """A `ModelOutputError` of a call on the texts of ``items`` (records, in the call's order) names its text
    by the record's file and line."""
    try:
        yield
    except ModelOutputError as err:
        if err.index is None:
            raise
        raise err.at(job.place(items[err.index][0])) from None


def store_chunk(
    work: WorkDir, manifest: dict, schema: RowSchema, start: int, stop: int, blocks: list[Parts], hasher: Any,
    carried: int | None = None, ended: bool = False,
) -> None:  # fmt: skip
    """Store records ``start``..``stop``-1 as chunk files, then count them in the manifest (atomically), with
    the counts before them (`BEFORE_LAST`). ``carried``: the chunk closed by time alone (`row_groups` joins it
    to the next), with this weight; ``ended``: the end of the input closed it (`END_KEY`, in the same write)."""
    parts = schema.concat(blocks)
    index = manifest["chunks_done"]
    entry = work.write_chunk(index, start, stop, parts)
    if carried is not None:
        entry["joins_next"] = True
    ids = any(v is not None for c in schema.stored if c.optional for v in parts[c.key])
    counted = dict(
        manifest,
        chunks=[*manifest["chunks"], entry],
        chunks_done=index + 1,
        records_done=stop,
        rows_done=manifest["rows_done"] + len(parts[schema.record_key]),
        items_done=manifest["items_done"] + schema.items(parts),
        has_ids=bool(manifest["has_ids"] or ids),
        prefix_sha256=hasher.hexdigest(),
        group_weight=carried or 0,
        **{BEFORE_LAST: {key: manifest.get(key, 0) for key in BEFORE_COUNTS}, END_KEY: ended},
    )
    work.write_manifest(counted)
    manifest.update(counted)  # once on disk: a failed write leaves the count as the folder has it


def assemble(
    work: WorkDir, manifest: dict, job: EmbedJob, kind: Kind, out_fmt: str
) -> tuple[Path | None, Path | None]:
    """Write the output (its line numbers, its row index) in the work folder from the verified chunks, check
    it, rename it into place, then the kind's side files. Returns the line-numbers file and row index written:
    none without rows (an empty one could not be told from a user's file by the next run: it would refuse)."""
    schema, output, rows = kind.schema, Path(job.output), manifest["rows_done"]
    lines = lines_file_for(output) if rows and kind.lines_file and job.skip_empty else None
    index = lines_file_for(output, schema.sidecar) if rows and out_fmt == "npy" and schema.sidecar else None

    def chunks() -> Iterator[Parts]:  # verified again; one row group (chunks closed by size) at a time
        return row_groups(manifest, schema, work.iter_chunks(manifest, schema, not job.skip_empty))

    tmp_lines = work.path / ("output" + LINES_SUFFIX)
    if lines is not None:
        with open(tmp_lines, "wb") as fh:
            for parts in chunks():
                fh.write("".join(f"{n}\n" for n in parts["line"].tolist()).encode())
            sync(fh)
    tmp = work.path / f"output.{out_fmt}"
    tmp_index = work.path / f"output{schema.sidecar}" if index is not None else None
    stream = RowStream(schema, chunks, manifest["rows_done"], manifest["items_done"], manifest["has_ids"],
                       kind.metadata(manifest))  # fmt: skip
    WRITERS[out_fmt].write(tmp, stream, tmp_index)
    written = [(tmp_lines, lines)] * (lines is not None) + [(tmp_index, index)] * (tmp_index is not None)
    written += kind.side_files(work, manifest, output)
    # an earlier run's side files (any kind's: line numbers, row indexes, calibration) go before the output is
    # replaced, unless they hold what this run writes there; this run's come after it. A kill between leaves the
    # output without them (--resume puts them there), never beside rows they do not describe. Each is removed
    # or replaced only when it is tokenpool's (checked again here: a file may have been put there meanwhile).
    same = {final for new, final in written if _head(final) is not None and filecmp.cmp(new, final, shallow=False)}
    sides = side_files_of(output)
    for _, final in written:
        if final not in same:
            check_replaceable(final, *sides[final])
    for path, (ours, _) in sides.items():
        if path not in same and (head := _head(path)) is not None and ours(head):
            path.unlink()
    replace_synced(tmp, output)
    for new, final in written:
        if final not in same:
            replace_synced(new, final)
    return lines, index


def row_groups(manifest: Mapping[str, Any], schema: RowSchema, chunks: Iterator[Parts]) -> Iterator[Parts]:
    """The rows of ``chunks``, a chunk closed by time alone (``joins_next``) joined to the next one: the
    groups are the chunks a run closed by size alone would have written, whenever it was killed."""
    pending: list[Parts] = []
    for entry, parts in zip(manifest["chunks"], chunks, strict=True):
        pending.append(parts)
        if not entry.get("joins_next"):
            yield pending[0] if len(pending) == 1 else schema.concat(pending)
            pending = []
    if pending:
        yield schema.concat(pending)


def is_lines_file(head: bytes) -> bool:
    """Whether ``head`` (a file's first 64 KiB) is what --skip-empty writes: increasing line numbers (at least
    one: an empty file may be a user's, and is neither replaced nor removed)."""
    if not head:
        return False
    numbers = head.split(b"\n")
    if head.endswith(b"\n") or len(head) >= 1 << 16:  # a last line that ends, or one cut at 64 KiB
        numbers.pop()
    values = [int(n) for n in numbers if n.isdigit()]
    return len(values) == len(numbers) and all(a < b for a, b in zip(values, values[1:], strict=False))
