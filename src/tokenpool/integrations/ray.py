"""Embed a Ray Dataset (or parquet/JSON/text files) with `tokenpool.Encoder`, one model per Ray actor.

Needs the ``ray`` extra: ``pip install "tokenpool[encode,ray]"``. ``tokenpool embed --ray`` calls `embed_parquet`.
"""

from __future__ import annotations

import csv
import gc
import importlib
import io
import logging
import math
import numbers
import os
import posixpath
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tokenpool.core.quantize import CALIBRATED_PRECISIONS, HEAD_BYTES, Calibration, is_calibration_head
from tokenpool.errors import BAD_INPUT, CorpusError, OptionError, check_int, classify, is_int, shown_name
from tokenpool.io import readers
from tokenpool.io.formats import READERS, format_for_suffix
from tokenpool.io.readers import COMPRESSION_SUFFIXES, TEXT_KEY, check_readable, is_string_type, null_text
from tokenpool.io.storage import calibration_uri_for, rows_metadata
from tokenpool.jobs import DEFAULT_CALIBRATION_SIZE
from tokenpool.jobs.chunks import check_spans_input
from tokenpool.jobs.pooled import calibrate, holds, is_given_file
from tokenpool.jobs.rows import chunk_parts, chunk_rows, sparse_rows, token_parts, token_rows, vector_rows
from tokenpool.model.options import EncoderOptions, device_parts
from tokenpool.model.outputs import encode_sparse_rows
from tokenpool.model.request import EncodeRequest, reads_spans, unread_options

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

__all__ = ["embed_dataset", "embed_parquet", "EmbedBatch"]

DOC_SOURCE = "__tokenpool_doc"  # each row's number, added by embed_dataset for chunk and token rows
ORDER_KEY = "__tokenpool_order"  # embed_parquet's `order_column`: its writer's key to the input's order
SPANS_COLUMN = "spans"  # the default spans_column of chunks="spans"
NULL_TEXTS = "null value(s) in a batch"  # how an actor refuses null texts (`embed_parquet` then names the row)
CLI_COLUMN_FLAGS = {"column": "--field / --column", "spans_column": "--spans-field"}  # tokenpool embed's names
PART_NAME = "part-{:020d}-{:010d}.parquet"  # a part file's name: its first row's input position, chunk
NOSET_GPUS = "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"  # "1"/"true" (Ray's env_bool): actors see every GPU
COMPLETE_MARKER = "_SUCCESS"  # written into embed_parquet's output folder last, as Spark and Hadoop jobs mark theirs


def _user_columns(batch: Any) -> list[str]:
    """The batch's columns as the caller knows them (without the row number and order key tokenpool adds)."""
    return [name for name in batch.column_names if name not in (DOC_SOURCE, ORDER_KEY)]


def _refuse_reserved(batch: Any) -> Any:
    """``batch`` (of the caller's dataset, before tokenpool numbers its rows; or the dataset's column names)
    when it has no column of tokenpool's own names, `DOC_SOURCE` or `ORDER_KEY`, which tokenpool's row numbers
    would overwrite (and leave out of the output); else refused, naming it. Also a Ray map function, for
    datasets whose schema is not known up front."""
    names = batch.column_names if hasattr(batch, "column_names") else batch
    taken = [name for name in (DOC_SOURCE, ORDER_KEY) if name in names]
    if taken:
        raise ValueError(
            f"the dataset has a column {taken[0]!r}, a name tokenpool uses for the row numbers it adds; rename "
            "that column"
        )
    return batch


def last_column(order_column: str) -> str:
    """The name of the flag that chunk rows carry beside ``order_column``: True on a document's last chunk."""
    return f"{order_column}_last"


class EmbedBatch:
    """Ray Data callable class: loads the Encoder once per actor, then adds the rows of ``request`` (checked
    on the driver) to each ``pyarrow.Table`` batch as the CLI's row schema (`tokenpool.jobs.rows`) has them,
    every other column passing through: pooled vectors (or codes) as ``output_column``, SPLADE
    ``indices``/``values``, token rows, or one row per chunk (other columns repeated; the text, and
    ``spans_column``, left out). ``doc``: the input row's position (unique, increasing in input order, not
    consecutive: see `embed_dataset`; from 0 in a batch called directly); ``order_column``: that position on
    every row (and, for chunk rows, ``<order_column>_last``: True on each document's last chunk)."""

    def __init__(
        self, column: str, output_column: str, options: EncoderOptions, request: EncodeRequest,
        spans_column: str = SPANS_COLUMN, order_column: str | None = None,
    ) -> None:  # fmt: skip
        self.column, self.output_column, self.spans_column = column, output_column, spans_column
        self.order_column = order_column
        from tokenpool.model.encoder import Encoder

        self.encoder = Encoder.from_options(options, caller=request.caller)  # (--dim on a sparse model: as given)
        self.request = request.check_encoder(self.encoder)  # a calibration made with another model fails here
        self.sparse = self.request.writes_sparse(self.encoder)  # (chunk and token rows: float32 as the CLI's)

    def __call__(self, batch: pa.Table) -> pa.Table:
        batch = _without_views(batch)
        if self.column not in batch.column_names:
            raise _no_column(self.request, "column", self.column, _user_columns(batch))
        texts = batch.column(self.column)
        if texts.null_count:
            raise ValueError(f"column {self.column!r} has {texts.null_count} {NULL_TEXTS}")
        import pyarrow as pa

        if pa.types.is_dictionary(texts.type):  # a pandas categorical column: its values (as the CLI reads it)
            texts = texts.cast(texts.type.value_type)
        if not is_string_type(texts.type):
            raise TypeError(f"column {self.column!r} must hold strings, got {texts.type}")

        docs = (batch.column(DOC_SOURCE).to_numpy() if DOC_SOURCE in batch.column_names
                else np.arange(batch.num_rows)).astype(np.int64)  # fmt: skip
        return self._table(batch, *self._rows(batch, texts.to_pylist(), docs), docs)

    def _rows(self, batch: pa.Table, texts: list[str], docs: Any) -> tuple[Any, dict[str, Any], Any]:
        """This batch's rows: the row schema of the output kind (`tokenpool.jobs.rows`), its parts, and for
        chunk rows the batch position of each row's text."""
        request = self.request
        if self.sparse:
            found = encode_sparse_rows(self.encoder, texts, request)
            parts = {"doc": docs, "nnz": np.diff(found.indptr), "indices": found.indices, "values": found.values}
            return sparse_rows(int(self.encoder.dimension)), parts, None
        if request.output == "chunks":
            spans = None
            if reads_spans(request.chunks):
                if self.spans_column not in batch.column_names:
                    raise _no_column(request, "spans_column", self.spans_column, _user_columns(batch))
                spans = batch.column(self.spans_column).to_pylist()
            # rows have no file and line: errors name a document by the start of its text
            names = [f"{self.column}={text[:40]!r}{'…' if len(text) > 40 else ''}" for text in texts]
            result = self.encoder.run(request, texts, spans=spans, names=names, show_progress_bar=False)
            return chunk_rows(int(self.encoder.dimension)), chunk_parts(result, docs), result.doc
        if request.output == "tokens":
            width = int(self.encoder.runner_width)
            states = self.encoder.run(request, texts, show_progress_bar=False)
            pairs = self.encoder.token_spans(texts, special_tokens=request.special_tokens is not False) if texts else []
            return token_rows(width), token_parts(docs, None, pairs, list(states), width), None
        vectors = self.encoder.run(request, texts, show_progress_bar=False)
        return vector_rows(vectors.shape[1], vectors.dtype.str), {"doc": docs, "embedding": vectors}, None

    def _table(self, batch: pa.Table, schema: Any, parts: dict[str, Any], positions: Any, docs: Any) -> pa.Table:
        """The batch's other columns (repeated per row, for chunk rows), then the kind's columns as the CLI
        writes them: its array column named ``output_column``; the row's position as ``doc`` (chunk and token
        rows: Ray passes the input's own columns, ids included, instead of ``id``); last ``order_column``."""
        import pyarrow as pa

        columns = schema.arrow_columns(parts, has_ids=False)
        if schema.columns[0].name != "doc":
            del columns[schema.columns[0].name]  # one row per text: the input's columns say which
        added = []  # (name, column) in output order, after the kind's own columns
        if self.order_column is not None:
            added.append((self.order_column, pa.array(docs if positions is None else docs[positions], pa.int64())))
        if self.order_column is not None and positions is not None:  # a document's chunk rows are consecutive
            last = np.ones(len(positions), dtype=bool)
            last[:-1] = positions[1:] != positions[:-1]
            added.append((last_column(self.order_column), pa.array(last)))
        if schema.array in columns:
            added.append((self.output_column, columns.pop(schema.array)))
        names = [name for name, _ in added]
        for i, name in enumerate(names):  # one name for two columns would keep only the last one
            if name in columns or name in names[:i]:
                raise ValueError(f"output_column / order_column {name!r} names a column the job already writes "
                                 f"({[*columns, *names[:i]]}); give it another name")  # fmt: skip
        columns.update(added)
        read = _reads(self.request, self.column, self.spans_column).values()  # chunks' inputs
        taken = {*read, DOC_SOURCE} if positions is not None else {DOC_SOURCE}
        kept = [name for name in batch.column_names if name not in taken]
        for name in columns:
            if name in kept:
                raise ValueError(f"output column {name!r} already exists in the dataset")
        # chunk rows (flat-map): each document's other columns, repeated for each of its chunks; built column by
        # column: a table of no columns has no rows to take (text-only datasets)
        take = pa.array(positions, type=pa.int64()) if positions is not None else None
        passed = {n: batch.column(n) if take is None else batch.column(n).take(take) for n in kept}
        return pa.table({**passed, **columns}, metadata=self._metadata())

    def _metadata(self) -> dict[bytes, bytes] | None:
        """The schema metadata `tokenpool embed` gives the same rows (pooled rows: precision, calibration, sparse
        vocabulary)."""
        if self.request.output != "vectors":
            return None
        return rows_metadata(self.request.precision, int(self.encoder.dimension), sparse=self.sparse,
                             calibration=None if self.sparse else self.request.calibration)  # fmt: skip


def _without_views(batch: pa.Table) -> pa.Table:
    """``batch`` with its string_view / binary_view types (pyarrow >= 16), also inside list / struct / map columns,
    as string / binary, the types `tokenpool embed` writes them as: Arrow takes no rows of a view (chunk rows, sort)."""
    import pyarrow as pa

    plain = {getattr(pa, view)(): kind for view, kind in (("string_view", pa.string()), ("binary_view", pa.binary()))
             if hasattr(pa, view)}  # fmt: skip

    def without(kind: Any) -> Any:
        def field(item: Any) -> Any:
            return item.with_type(without(item.type))

        if pa.types.is_map(kind):
            return pa.map_(field(kind.key_field), field(kind.item_field), kind.keys_sorted)
        if pa.types.is_struct(kind):
            return pa.struct([field(item) for item in kind])
        if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind):
            return pa.list_(field(kind.value_field), getattr(kind, "list_size", -1))
        return pa.large_list(field(kind.value_field)) if pa.types.is_large_list(kind) else plain.get(kind, kind)

    schema = pa.schema([field.with_type(without(field.type)) for field in batch.schema], metadata=batch.schema.metadata)
    return batch if schema.equals(batch.schema) else batch.cast(schema)


def _check_schema(
    ds: ray.data.Dataset, column: str, output_column: str, request: Any, spans_column: str, order_column: str | None
) -> bool:
    """The column options, and the dataset's columns against them when its schema is known (then True)."""
    _check_column_names(request.caller, column=column, output_column=output_column, spans_column=spans_column,
                        **({} if order_column is None else {"order_column": order_column}))  # fmt: skip
    if order_column is not None and _increasing_id() is None:
        import ray

        raise RuntimeError(
            f"order_column needs Ray >= 2.55 (monotonically_increasing_id); this is Ray {ray.__version__}"
        )
    # Only when the schema is known without running the pipeline; otherwise EmbedBatch checks each batch.
    schema = ds.schema(fetch_if_missing=False)
    if schema is None:
        return False
    names = list(schema.names)
    _refuse_reserved(names)
    read = _reads(request, column, spans_column)
    for option, name in read.items():
        if name not in names:
            raise _no_column(request, option, name, names)
    chunks = request.output == "chunks"
    added: list[str] = []  # the columns a batch gains besides output_column, as `EmbedBatch._table` adds them
    if request.output in ("chunks", "tokens"):
        kind = chunk_rows(0) if chunks else token_rows(0)
        added = [c.name for c in kind.shown(False, "rows") if c.name != kind.array]
    ordering = [] if order_column is None else [order_column, *([last_column(order_column)] if chunks else [])]
    for name in (*added, output_column, *ordering):
        if name in names and (not chunks or name not in read.values()):
            raise ValueError(f"output column {name!r} already exists in the dataset; columns: {names}")
    return True


def _reads(request: EncodeRequest, column: str, spans_column: str) -> dict[str, str]:
    """The dataset's columns that the job reads, by option: ``column``, and ``spans_column`` for chunks="spans"."""
    return {"column": column, **({"spans_column": spans_column} if reads_spans(request.chunks) else {})}


def _no_column(request: EncodeRequest, option: str, column: str, names: list[str]) -> ValueError:
    """The refusal of a column that the job reads (``option``, `_reads`) and the dataset lacks."""
    said = f"{column!r} ({CLI_COLUMN_FLAGS[option]})" if request.caller == "cli" else repr(column)
    if option == "spans_column":
        return ValueError(f"{request.spell('chunks', short=True)} needs a spans column {said}; columns: {names}")
    return ValueError(f"column {said} not in the dataset; columns: {names}")


def _check_column_names(caller: str, **named: Any) -> None:
    """Each column option (``column``, ``output_column``, ...) a non-empty string, checked on the driver; named
    by its flag for ``caller="cli"`` (`tokenpool embed --ray`)."""
    for name, value in named.items():
        if not isinstance(value, str) or not value:
            said = CLI_COLUMN_FLAGS.get(name, name) if caller == "cli" else name
            raise ValueError(f"{said} must be a column name, got {value!r}")


def _loaded(calibration: Any) -> Any:
    """A calibration given as a dict or a JSON file, loaded on the driver (actors may not see the file)."""
    if isinstance(calibration, dict):
        return Calibration.from_dict(calibration)
    return Calibration.load(calibration) if isinstance(calibration, (str, os.PathLike)) else calibration


def _increasing_id() -> Any:
    """Ray's ``monotonically_increasing_id()`` expression, or None for a Ray without it."""
    try:
        from ray.data.expressions import monotonically_increasing_id
    except ImportError:
        return None
    return monotonically_increasing_id()


def embed_dataset(
    ds: ray.data.Dataset, *, column: str = TEXT_KEY, output_column: str = "embedding",
    model: str | None = None, pooling: Any = "auto", batch_size: int = 64,
    concurrency: int | tuple[int, int] = 1, num_gpus: float = 0, num_cpus: float | None = None,
    encode_batch_size: int | None = None, precision: str = "float32", calibration: Any = None,
    top_k: int | None = None, threshold: float = 0.0, max_batch_tokens: int | None = None,
    output: str = "vectors", special_tokens: bool = True, chunks: Any = None, chunking: str = "late",
    spans_column: str = SPANS_COLUMN, order_column: str | None = None, caller: str = "python",
    **encoder_options: Any,
) -> ray.data.Dataset:  # fmt: skip
    """Lazily add ``output_column`` (float32 vectors of ``column``'s texts) to ``ds``; other columns pass
    through.

    ``concurrency`` actors (or a (min, max) range) each load the model once, with ``num_gpus`` GPUs and
    ``num_cpus`` CPUs; ``batch_size`` rows per actor call, ``encode_batch_size`` (default: ``batch_size``) per
    forward pass; ``encoder_options`` go to `tokenpool.Encoder`. ``precision`` writes codes (int8/uint8: with
    a ``calibration``, a `Calibration` or its JSON file, that every actor uses unchanged); SPLADE models add
    ``indices``/``values`` instead (``top_k``/``threshold``); ``output="tokens"``: each text's token vectors;
    ``chunks``/``chunking``: one row per chunk, as in `Encoder.encode_chunks`. ``order_column`` (Ray >= 2.55):
    an int64 column increasing in input order, since Ray may hand blocks on out of order (chunk rows also get
    ``<order_column>_last``, True on a document's last chunk). ``caller="cli"``: refusals name the options as
    flags (``--dim 64``), as `EncodeRequest.caller`. Details: docs/integrations.md.
    """
    # an unknown or bad option is an error here, not later inside every actor
    options = _actor_options(model, pooling, encoder_options, batch_size, encode_batch_size, num_gpus, num_cpus,
                             concurrency, caller)  # fmt: skip
    calibration = _loaded(calibration)
    request = EncodeRequest(
        output=output, precision=precision, calibration=calibration, chunks=chunks, chunking=chunking,
        batch_size=encode_batch_size or batch_size, max_batch_tokens=max_batch_tokens, special_tokens=special_tokens,
        top_k=top_k, threshold=threshold, caller=caller,
    ).check(options)  # fmt: skip
    known = _check_schema(ds, column, output_column, request, spans_column, order_column)
    _refuse_ignored(request, spans_column)
    if not known:  # the dataset's columns are checked as its batches come
        ds = ds.map_batches(_refuse_reserved, batch_format="pyarrow", batch_size=None, zero_copy_batch=True)
    # each row's number (`DOC_SOURCE`): unique, increasing in input order (the task that adds it, then the row
    # in it; tasks are numbered as their inputs arrive, in order under preserve_order); Ray < 2.55: none (each
    # batch numbers its own documents from 0)
    increasing = _increasing_id()
    if increasing is not None and (request.output in ("chunks", "tokens") or order_column is not None):
        ds = ds.with_column(DOC_SOURCE, increasing)
    return ds.map_batches(
        EmbedBatch,
        fn_constructor_kwargs={"column": column, "output_column": output_column, "options": options,
                               "request": request, "spans_column": spans_column, "order_column": order_column},  # fmt: skip
        batch_size=batch_size, batch_format="pyarrow", compute=_actor_pool(concurrency),
        **_placement(num_gpus, num_cpus),
    )  # fmt: skip


def _refuse_ignored(request: EncodeRequest, spans_column: str) -> None:
    """Options given where the job would not read them are refused (as the command line refuses its flags, by
    the same rules: `unread_options`). ``request``: checked, with ``calibration_size`` None when not taken."""
    given = {name for name, set_ in (
        ("chunking", request.chunking != EncodeRequest.default("chunking")), ("spans", spans_column != SPANS_COLUMN),
        ("calibration_size", request.calibration_size not in (None, DEFAULT_CALIBRATION_SIZE)),
    ) if set_}  # fmt: skip
    why = {"chunks": "without chunks", "spans chunks": "without chunks='spans'",
           "calibrated precision": "without precision='int8' or 'uint8'",
           "no calibration": "with a calibration (it fixes the ranges)"}  # fmt: skip
    for name, lacks in unread_options(given, chunks=request.chunks, precision=request.precision,
                                      calibration=request.calibration):  # fmt: skip
        shown = f"spans_column={spans_column!r}" if name == "spans" else f"{name}={getattr(request, name)!r}"
        raise OptionError(f"{shown} would be ignored {why[lacks]}")


def _actor_options(
    model: Any, pooling: Any, encoder_options: dict[str, Any], batch_size: Any, encode_batch_size: Any,
    num_gpus: Any, num_cpus: Any, concurrency: Any, caller: str = "python",
) -> EncoderOptions:  # fmt: skip
    """What every actor (and the calibration task) builds its Encoder from (an unknown option is a TypeError),
    and what each actor is given (batch sizes, GPUs and CPUs, ``concurrency``: None is `embed_parquet`'s default),
    checked on the driver: by `embed_parquet` before Ray starts or a calibration is computed."""
    options = EncoderOptions(model=None if model is None else str(model), pooling=pooling, **encoder_options)
    for name, value in (("batch_size", batch_size), ("encode_batch_size", encode_batch_size)):
        if value is not None:
            check_int(value, name)
    for name, amount in (("num_gpus", num_gpus), ("num_cpus", 0 if num_cpus is None else num_cpus)):
        if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or not 0 <= amount < math.inf:
            raise ValueError(f"{name} must be >= 0, a finite number; got {amount!r}")
    device = options.device
    gpu = is_int(device) or (device is not None and str(device).startswith("cuda"))  # (torch reads an int as cuda:N)
    if gpu and not num_gpus:
        raise ValueError(f"device={device!r} needs num_gpus > 0, so that Ray gives each actor a GPU")
    index = device if is_int(device) else device_parts(device)[1] if gpu else None
    seen = max(1, math.ceil(num_gpus))  # the GPUs an actor sees, cuda:0 on (Ray sets its CUDA_VISIBLE_DEVICES)
    if index is not None and index >= seen and os.environ.get(NOSET_GPUS, "").lower() not in ("1", "true"):
        said = EncodeRequest(caller=caller).spell
        raise ValueError(f"{said('device', device)} names GPU {index}, but each Ray actor sees only the {seen} GPU(s) "
                         f"Ray gives it, from cuda:0; use {said('device', 'cuda')}")  # fmt: skip
    if concurrency is not None:
        _actor_pool(concurrency)
    return options


def _actor_pool(concurrency: Any) -> Any:
    """``concurrency`` actors, or a (min, max) autoscaling range of them (positive ints, as a single count: Ray
    takes 1.5 and fails when the dataset runs)."""
    from ray.data import ActorPoolStrategy

    if isinstance(concurrency, tuple):
        if len(concurrency) != 2 or not all(is_int(n) for n in concurrency) or not 1 <= concurrency[0] <= concurrency[1]:
            raise ValueError(f"concurrency must be a positive int or (min, max) of ints with 1 <= min <= max, got "
                             f"{concurrency!r}")  # fmt: skip
        return ActorPoolStrategy(min_size=int(concurrency[0]), max_size=int(concurrency[1]))
    if not is_int(concurrency) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive int or (min, max), got {concurrency!r}")
    return ActorPoolStrategy(size=int(concurrency))


def _without_compression(input_uri: str) -> tuple[str, dict[str, Any]]:
    """(the lower-case file name of ``input_uri`` without a compression suffix such as ``.gz``, the arguments
    that make Ray's readers decompress it: named, since Ray's own guess takes lower-case suffixes only)."""
    name = posixpath.basename(input_uri.rstrip("/")).lower()
    for suffix in COMPRESSION_SUFFIXES:  # those Ray's readers decompress (pyarrow's Codec.detect)
        if name.endswith(suffix):
            import pyarrow as pa

            return name.removesuffix(suffix), {"arrow_open_stream_args": {"compression": pa.Codec.detect(name).name}}
    return name, {}


def input_format_of(input_uri: str) -> str:
    """The `tokenpool.io.readers.READERS` name for ``input_uri``, from its suffix (a compression suffix such as
    ``.gz`` ignored; ``.json`` read as JSON Lines); a folder or an unknown suffix is read as parquet."""
    name, _ = _without_compression(input_uri)
    if name.endswith(".json"):
        return "jsonl"
    return format_for_suffix(name, READERS) or "parquet"


def _read(input_uri: str, column: str) -> ray.data.Dataset:
    """``input_uri`` as a Ray Dataset, read by Ray's own reader for its format (`input_format_of`)."""
    import ray.data

    fmt = input_format_of(input_uri)
    name, opened = _without_compression(input_uri)
    if fmt == "parquet":  # a parquet file, or a folder of them, by the CLI's suffixes (Ray's own: .parquet only)
        return ray.data.read_parquet(input_uri, file_extensions=[s[1:] for s in READERS["parquet"].suffixes])
    if fmt == "jsonl" and name.endswith(".json"):  # (compressed: no extension filter; Ray's lacks .json.bz2)
        return ray.data.read_json(input_uri, **opened, **({"file_extensions": None} if opened else {}))
    if fmt not in ("txt", "jsonl", "csv", "tsv"):
        raise ValueError(f"{shown_name(input_uri)}: {fmt} input is not supported with Ray")
    if fmt == "txt" and column != TEXT_KEY:
        raise ValueError(f"a text file gives a 'text' column, but column={column!r} was asked for")
    files = ray.data.read_binary_files(input_uri, include_paths=True, **opened)
    if fmt == "txt":
        return files.flat_map(_text_lines)
    # .jsonl/.csv/.tsv: one table per file (`_file_table`) in a task of its own: Ray fuses a map_batches into a CPU
    # actor pool (then one actor read and embedded a whole file) but not one whose remote args differ from the
    # actors' (here a 1-byte memory request; ray_remote_args_fn, which also stops it, is deprecated in Ray 2.60)
    return files.map_batches(_file_table, fn_args=(fmt, column), batch_size=1, batch_format="pyarrow", memory=1)


def _text_lines(row: dict[str, Any]) -> list[dict[str, str]]:
    """A file of `ray.data.read_binary_files` as rows of one line each, read as `tokenpool embed` reads a .txt:
    strict UTF-8 without a BOM, lines end at ``\\n`` (or ``\\r\\n``) only, an empty line is the text ``""``; so
    row i is line i+1. (Ray's read_text splits at ``\\r``, form feeds, U+2028, ... too, and keeps the BOM.)"""
    lines = readers.decoded_lines(io.BytesIO(row["bytes"]), row["path"])
    return [{TEXT_KEY: readers.strip_newline(line)} for _, line in lines]


def _file_table(batch: pa.Table, fmt: str, column: str) -> pa.Table:
    """A .jsonl/.csv/.tsv file of `ray.data.read_binary_files` (a batch of one) as one table, read and checked as
    `tokenpool embed` reads it (its errors name the file and line), each column of one type over the whole file
    (a flat_map's rows would be typed per block by Ray: null in one, int64 in the next; CSV timestamps pickled)."""
    (data,), (path,) = batch.column("bytes").to_pylist(), batch.column("path").to_pylist()
    if fmt == "jsonl":
        return _json_table(io.BytesIO(data), path, column)
    return _csv_table(io.BytesIO(data), path, column, tab=fmt == "tsv")


def _csv_table(data: io.BytesIO, path: str, column: str, tab: bool) -> pa.Table:
    """A .csv/.tsv file as `tokenpool.io.readers.table_columns` reads it (its quoting rules and errors). The text
    column holds strings ("123", "true", "" stay texts); the other columns get the types pyarrow's CSV reader
    infers, from a CSV of their values written here (so ids stay numbers)."""
    import pyarrow as pa
    from pyarrow import csv as pa_csv

    columns = readers.table_columns(data, path, column, tab=tab)
    others = [name for name in columns if name != column]
    inferred = None
    if others:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(others)
        writer.writerows(zip(*(columns[name] for name in others), strict=True))
        parse = pa_csv.ParseOptions(newlines_in_values=True)
        inferred = pa_csv.read_csv(io.BytesIO(text.getvalue().encode()), parse_options=parse)
    return pa.table({name: pa.array(values, pa.string()) if name == column else inferred.column(name)
                     for name, values in columns.items()})  # fmt: skip


def _json_table(data: io.BytesIO, path: str, column: str) -> pa.Table:
    """A .jsonl file as `tokenpool.io.readers.jsonl_objects` reads it (the same errors, naming the file and line),
    every field checked as a read one is, since every field goes on to the output. A field that no one Arrow
    column type holds (numbers in some records, strings in others) is refused naming it, as pyarrow's JSON
    reader refuses it, and so is an integer outside int64 (Ray would write pickled objects) or a type parquet
    cannot store (objects with no keys in every record: parquet's own check, on no rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    objects = [obj for _, obj in readers.jsonl_objects(data, path, column, every=True)]
    place = readers.where(path)
    columns = {column: pa.array([], pa.string())} if not objects else {}
    for name in dict.fromkeys(name for obj in objects for name in obj):
        try:
            columns[name] = pa.array([obj.get(name) for obj in objects])
            pq.write_table(pa.table({name: columns[name]}).slice(0, 0), pa.BufferOutputStream())
        except pa.ArrowNotImplementedError as exc:
            raise CorpusError(f"{place}: field {name!r} is of a type parquet cannot store ({exc}); give its objects "
                              "a key in some record, or leave the field out") from None  # fmt: skip
        except OverflowError:  # (pyarrow's JSON reader would read it as a double, rounded)
            raise CorpusError(f"{place}: field {name!r} holds an integer outside int64 ({-2**63}..{2**63 - 1}); "
                              "give it as a string") from None  # fmt: skip
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise CorpusError(f"{place}: field {name!r} holds values that no one parquet column type holds "
                              f"({exc}); give it one JSON type in every record") from None  # fmt: skip
    return pa.table(columns)


def _placement(num_gpus: float, num_cpus: float | None) -> dict[str, float]:
    """The resources an actor (or the calibration task) asks Ray for: those given."""
    _refuse_unplaceable(num_gpus, num_cpus)
    asked = {"num_gpus": num_gpus} if num_gpus else {}
    return asked if num_cpus is None else {**asked, "num_cpus": num_cpus}


def _refuse_unplaceable(num_gpus: float, num_cpus: float | None, actors: int = 0) -> None:
    """Refuse an actor (or the calibration task) that no node can hold: Ray would wait for it forever (a job
    with num_gpus=1 hung on a machine without a GPU). A node holds it when it has ``num_gpus`` GPUs and
    ``num_cpus`` CPUs (those asked for). The nodes are the cluster's alive ones and, on an autoscaling cluster,
    the node types it may start (its cluster config, which Ray Train checks its workers against), so a job
    waiting for a GPU node to come up is left to wait. Not checked where Ray cannot tell the config.
    ``actors`` (a job reading its input: `embed_parquet`) are refused too where, on a cluster that cannot
    scale up, they take its CPUs (``num_cpus`` each, Ray's one where None) but for less than the one CPU each
    reading task asks for (a 1-CPU machine waited forever with the defaults)."""
    import ray

    wanted = {name: amount for name, amount in (("GPU", num_gpus), ("CPU", num_cpus)) if amount}
    if not (wanted or actors) or not ray.is_initialized():
        return
    try:
        from ray._private.state import state  # (no public API for the cluster config)

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - another Ray: whether it may scale is unknown, so nothing is refused
        return
    alive = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    nodes = alive + [dict(group.resources) for group in getattr(config, "node_group_configs", ()) if group.max_count]
    if not any(all(node.get(name, 0) >= amount for name, amount in wanted.items()) for node in nodes):
        asked = ", ".join(f"num_{name.lower()}s={amount:g}" for name, amount in wanted.items())
        has = sorted({(node.get("GPU", 0), node.get("CPU", 0)) for node in nodes})
        raise ValueError(f"{asked} per actor, but no node of the Ray cluster has as many (its nodes' (GPUs, CPUs): "
                         f"{has}); Ray would wait for one forever")  # fmt: skip
    cpus, each = sum(node.get("CPU", 0) for node in alive), 1 if num_cpus is None else num_cpus
    if actors and len(nodes) == len(alive) and cpus - actors * each < 1:
        raise ValueError(f"concurrency={actors} actors with num_cpus={each:g} each take {actors * each:g} of the Ray "
                         f"cluster's {cpus:g} CPU(s), which cannot scale up, leaving less than the 1 CPU a task "
                         f"reading the input needs: Ray would wait forever; pass a smaller concurrency= or "
                         f"num_cpus= (at most {max(cpus - 1, 0) / actors:g} each for {actors} actors)")  # fmt: skip


def _task(function: Any, num_gpus: float, num_cpus: float | None) -> Any:
    """``function`` as a Ray task with an actor's resources (one CPU where ``num_cpus`` is None)."""
    import ray

    return ray.remote(**_placement(num_gpus, 1 if num_cpus is None else num_cpus))(function)


def _default_concurrency(num_gpus: float) -> int:
    """One actor per node, or per ``num_gpus`` of the cluster's GPUs; bad input (a `ValueError`) where no actor
    fits now (a cluster that scales up needs ``concurrency`` given)."""
    import ray

    if num_gpus > 0:
        _refuse_unplaceable(num_gpus, None)
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus < num_gpus:
            raise ValueError(f"num_gpus={num_gpus:g} per actor, but the Ray cluster has {gpus:g} GPU(s) now; give "
                             "concurrency= for a cluster that will scale up")  # fmt: skip
        return max(1, int(gpus // num_gpus))
    return max(1, sum(1 for node in ray.nodes() if node.get("Alive")))


def embed_parquet(
    input_uri: str, output_uri: str, *, address: str | None = None, column: str = TEXT_KEY,
    output_column: str = "embedding", model: str | None = None, pooling: Any = "auto", batch_size: int = 64,
    concurrency: int | tuple[int, int] | None = None, num_gpus: float = 0, num_cpus: float | None = None,
    encode_batch_size: int | None = None, precision: str = "float32", calibration: Any = None,
    calibration_size: int = DEFAULT_CALIBRATION_SIZE, top_k: int | None = None, threshold: float = 0.0,
    max_batch_tokens: int | None = None, output: str = "vectors", special_tokens: bool = True,
    chunks: Any = None, chunking: str = "late", spans_column: str = SPANS_COLUMN, caller: str = "python",
    **encoder_options: Any,
) -> Any:  # fmt: skip
    """Read ``input_uri`` (parquet file/folder; .jsonl/.json/.csv/.txt by suffix), embed, write parquet files.

    On the Ray cluster at ``address`` (None: a local Ray), with any URI pyarrow understands (local, s3://,
    ...); ``concurrency`` None: one actor per GPU (or per node); the other options as in `embed_dataset`.
    int8/uint8 without ``calibration``: the first ``calibration_size`` rows fix the ranges (in a Ray task)
    before any shard starts; the calibration is written to ``<output_uri>.calibration.json`` and returned
    (else None)."""
    input_uri, output_uri = os.fspath(input_uri), os.fspath(output_uri)  # (a pathlib.Path names a local one)
    columns = {"column": column, "output_column": output_column, "spans_column": spans_column}
    asked = {"output": output, "precision": precision, "chunks": chunks, "chunking": chunking, "top_k": top_k,
             "threshold": threshold, "max_batch_tokens": max_batch_tokens, "special_tokens": special_tokens}
    # every option fails here, before Ray starts or a calibration is computed
    options = _actor_options(model, pooling, encoder_options, batch_size, encode_batch_size, num_gpus, num_cpus,
                             concurrency, caller)  # fmt: skip
    request = EncodeRequest(**asked, calibration=calibration, calibration_size=calibration_size,
                            batch_size=encode_batch_size or batch_size, caller=caller).check(options)
    output_uri, in_order, given_beside = _checked_job(input_uri, output_uri, request, columns)
    calibrated = request.precision in CALIBRATED_PRECISIONS

    with _ray_session(address):
        concurrency = _default_concurrency(num_gpus) if concurrency is None else concurrency
        actors = concurrency[0] if isinstance(concurrency, tuple) else concurrency  # (Ray's 1 CPU each: None)
        _refuse_unplaceable(num_gpus, 1 if num_cpus is None else num_cpus, actors)
        ds = _read(input_uri, column)
        if calibrated:
            calibration = _calibration(ds, request, column, options, num_gpus, num_cpus, input_uri)
        embedded = embed_dataset(
            ds, **columns, **asked, model=model, pooling=pooling, batch_size=batch_size, concurrency=concurrency,
            num_gpus=num_gpus, num_cpus=num_cpus, encode_batch_size=encode_batch_size, calibration=calibration,
            order_column=ORDER_KEY if in_order else None, caller=caller, **encoder_options,
        )  # fmt: skip
        _write(embedded, output_uri, in_order, request.output == "chunks", input_uri, column)
        _write_no_rows(ds, output_uri, (num_gpus, num_cpus), **columns, options=options,
                       request=replace(request, calibration=calibration))  # fmt: skip
        _mark_complete(output_uri)
        if calibrated:
            _write_beside(output_uri, calibration, given_beside)
        return calibration if calibrated else None


def _write(ds: Any, output_uri: str, in_order: bool, chunked: bool, input_uri: str, column: str) -> None:
    """Run the job: `write_in_order` tasks into a folder created here, else (a Ray < 2.55) Ray's own writer; a
    failed task's error as the user's (`_users_errors`)."""
    fs, root = _filesystem(output_uri)
    fs.create_dir(root, recursive=True)  # (an empty input leaves an empty folder: `_write_no_rows`)
    with _users_errors(input_uri, column):
        if not in_order:
            ds.write_parquet(output_uri)
            return
        ds.map_batches(
            write_in_order, fn_kwargs={"output_uri": output_uri, "chunked": chunked}, batch_size=None,
            batch_format="pyarrow",
        ).materialize()  # fmt: skip


@contextmanager
def _users_errors(input_uri: str | None = None, column: str = TEXT_KEY) -> Iterator[None]:
    """A Ray task or actor (its constructor too) that failed on a worker: its error as the user's (`_user_error`),
    a null text of ``input_uri``'s ``column`` named by its file and row."""
    import ray

    handled = sys.exc_info()[1]  # the caller's own error (a job run in its except block): kept
    try:
        yield
    except ray.exceptions.RayError as err:
        _end_actors(err, handled)
        if input_uri is not None and NULL_TEXTS in str(err):  # an actor sees rows, not files: found here
            _refuse_null_texts(input_uri, column)
        raise _user_error(err) from err


def _end_actors(err: Exception, handled: BaseException | None) -> None:
    """End the failed job's actors (each holding a model and its CPUs or GPUs) now, not at some later garbage
    collection: until then the next job waits for their resources (a GPU job on a one-GPU node hung). Ray Data
    lets go of them in reference cycles that the tracebacks of ``err`` and of the exceptions it was raised from
    keep (frames of Ray Data's executor): those go (the worker's traceback is in ``err``'s message), up to
    ``handled``, the caller's error that the chain ends in when the job ran in an ``except`` block (kept)."""
    chained, seen = [err], {id(handled)}
    while chained:
        error = chained.pop()
        if error is not None and id(error) not in seen:
            seen.add(id(error))
            error.__traceback__ = None
            chained += [error.__cause__, error.__context__]
    gc.collect()


def _no_rows(batch: pa.Table, actor: dict[str, Any]) -> pa.Table:
    """What an `EmbedBatch` built from ``actor`` makes of ``batch`` (a Ray task)."""
    return EmbedBatch(**actor)(batch)


def _write_no_rows(source: ray.data.Dataset, output_uri: str, resources: tuple[float, Any], **actor: Any) -> None:
    """Where the job wrote no part file (an input of no rows), one of no rows with the columns (and schema
    metadata) rows get, as `tokenpool embed` writes a table of no rows: what an `EmbedBatch` built from
    ``actor`` makes of no rows of ``source``'s columns (the text column, when Ray cannot tell them), in a Ray
    task with the actors' resources."""
    import pyarrow as pa
    import pyarrow.fs
    import pyarrow.parquet as pq
    import ray

    fs, root = _filesystem(output_uri)
    if fs.get_file_info(pyarrow.fs.FileSelector(root)):
        return
    schema = getattr(source.schema(fetch_if_missing=False), "base_schema", None)
    if not isinstance(schema, pa.Schema):  # not known before reading (.jsonl, .txt, .csv): the columns read
        read = _reads(actor["request"], actor["column"], actor["spans_column"]).values()
        schema = pa.schema([(name, pa.string()) for name in read])
    with _users_errors():
        rows = ray.get(_task(_no_rows, *resources).remote(schema.empty_table(), actor))
    pq.write_table(rows, f"{root}/{PART_NAME.format(0, 0)}", filesystem=fs)


def _mark_complete(output_uri: str) -> None:
    """Write the empty `COMPLETE_MARKER` into the output folder once every part file is there: a folder without
    it is a job that stopped before the end (readers of parquet folders skip names that start with "_")."""
    fs, root = _filesystem(output_uri)
    with fs.open_output_stream(f"{root}/{COMPLETE_MARKER}"):
        pass


def _checked_job(
    input_uri: str, output_uri: str, request: EncodeRequest, columns: dict[str, str]
) -> tuple[str, bool, bool]:
    """(the output URI, whether tokenpool's ordered writer writes it, whether the calibration given is the
    calibration file beside it: only read, `_write_beside`) once the options the checked ``request`` leaves are
    checked (`_refuse_ignored`, a spans input's format, the ``columns`` names), nothing there would be replaced
    (an existing output, a calibration file not tokenpool's) and a local input can be read (FileNotFoundError
    when missing, as Ray raises it, else `check_readable`'s `CorpusError`): before Ray starts."""
    _refuse_ignored(request, columns["spans_column"])
    if reads_spans(request.chunks):
        check_spans_input(input_format_of(input_uri), request.spell("chunks", short=True))
    _check_column_names(request.caller, **columns)
    calibrated = request.precision in CALIBRATED_PRECISIONS
    in_order = _increasing_id() is not None  # else Ray's own writer, which may put blocks out of order
    output_uri = _refuse_existing(output_uri)  # (Ray's writer too would add its files beside others)
    beside = calibration_uri_for(output_uri)
    given_beside = calibrated and "://" not in beside and is_given_file(request.calibration, Path(beside))
    if calibrated and not given_beside:
        _refuse_foreign_sidecar(output_uri)
    if "://" not in input_uri and not os.path.exists(input_uri):
        raise FileNotFoundError(f"{shown_name(input_uri)}: no such file or folder")
    if "://" not in input_uri:
        check_readable(input_uri, folders=True)
    _refuse_unread_files(input_uri)
    return output_uri, in_order, given_beside


def _refuse_unread_files(input_uri: str) -> None:
    """`CorpusError` for a parquet input (`input_format_of`) that `_read` would not read whole: a file, or a
    file of a folder (but names starting with "_" or ".", which parquet readers skip), whose name has no parquet
    suffix, since Ray's reader leaves such files out without a word."""
    import pyarrow.fs

    if input_format_of(input_uri) != "parquet":
        return
    fs, root = _filesystem(input_uri)
    info = fs.get_file_info(root)
    folder = info.type == pyarrow.fs.FileType.Directory
    for entry in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True)) if folder else [info]:
        inner = entry.path[len(root) :].strip("/").split("/") if folder else []
        if entry.type != pyarrow.fs.FileType.File or any(part.startswith(("_", ".")) for part in inner):
            continue
        if format_for_suffix(entry.base_name, READERS) != "parquet":
            suffixes = READERS["parquet"].suffixes  # (.parquet, .pq)
            why = (f"holds {shown_name('/'.join(inner))}, which is not read: a folder is read as its "
                   f"{' and '.join(suffixes)} files" if folder
                   else "cannot tell the input format from its name")  # fmt: skip
            raise CorpusError(f"{shown_name(input_uri)}: {why}; name a {' or '.join(suffixes)} file, a folder of "
                              "them, or a .jsonl, .json, .csv, .tsv or .txt file (compressed or not)")  # fmt: skip


def _refuse_null_texts(input_uri: str, column: str) -> None:
    """`CorpusError` naming the file and row of the first null text of a parquet input, as `tokenpool embed`
    does, once the job found one (`tokenpool.io.readers.first_null_row`: from the row groups' statistics where
    they tell). Nothing for another input, or one that pyarrow cannot list or read here."""
    if input_format_of(input_uri) != "parquet":
        return
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    fs, root = _filesystem(input_uri)
    scheme = input_uri.split("://")[0] + "://" if "://" in input_uri else ""
    try:
        for fragment in pads.dataset(root, format="parquet", filesystem=fs).get_fragments():
            with fs.open_input_file(fragment.path) as fh:
                pfile = pq.ParquetFile(fh)
                row = readers.first_null_row(pfile, column) if column in pfile.schema_arrow.names else None
            if row is not None:
                raise null_text(input_uri if fragment.path == root else scheme + fragment.path, row, column)
    except (OSError, pa.ArrowException):
        return


def _filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path in it) of a local path or any URI pyarrow understands (s3://, gs://, ...)."""
    import pyarrow.fs

    if "://" in uri:
        return pyarrow.fs.FileSystem.from_uri(uri)
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(uri)


def _refuse_existing(output_uri: str) -> str:
    """``output_uri`` (a local path made absolute, for the workers) after checking that it names nothing or an
    empty folder: the job never writes among, or over, other files."""
    import pyarrow.fs

    fs, root = _filesystem(output_uri)
    info, said = fs.get_file_info(root), shown_name(output_uri)
    if info.type == pyarrow.fs.FileType.File:
        raise FileExistsError(f"{said} is a file; the Ray job writes a folder of parquet files there")
    if info.type == pyarrow.fs.FileType.NotFound and "://" not in output_uri and os.path.islink(root):
        raise FileExistsError(f"{said} is a dangling symlink; the Ray job writes a folder of parquet files "
                              "there (remove the link, or name another output)")  # fmt: skip
    if info.type == pyarrow.fs.FileType.Directory and fs.get_file_info(pyarrow.fs.FileSelector(root)):
        raise FileExistsError(f"{said} already holds files; give the Ray job a new or empty folder (a job "
                              f"that stopped before the end left its folder without {COMPLETE_MARKER})")  # fmt: skip
    return output_uri if "://" in output_uri else root


def write_in_order(block: pa.Table, output_uri: str, chunked: bool = False) -> pa.Table:
    """Write one block of `embed_dataset(order_column=ORDER_KEY)` rows under ``output_uri`` (a Ray map task), in
    files named by their first row's place in the input (listed by name, they give the input's order); returns
    the files written and their rows. The sorted rows are cut wherever a row is not provably the next in the
    input (the next chunk of its document, or the first of the next after ``ORDER_KEY_last``)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    keys = [(ORDER_KEY, "ascending")] + ([("chunk", "ascending")] if chunked else [])
    block = block.take(pc.sort_indices(block, keys))
    docs = block.column(ORDER_KEY).to_numpy()
    chunks = block.column("chunk").to_numpy().astype(np.int64) if chunked else np.zeros(len(docs), np.int64)
    last = np.ones(len(docs), bool)
    if chunked:
        last = block.column(last_column(ORDER_KEY)).to_numpy(zero_copy_only=False)
    follows = ((docs[1:] == docs[:-1]) & (chunks[1:] == chunks[:-1] + 1)) | (
        (docs[1:] == docs[:-1] + 1) & (chunks[1:] == 0) & last[:-1]
    )
    cuts = [0, *(np.flatnonzero(~follows) + 1).tolist(), len(docs)]
    runs = [(start, stop) for start, stop in zip(cuts[:-1], cuts[1:], strict=True) if stop > start]
    fs, root = _filesystem(output_uri)
    rows = block.drop_columns([ORDER_KEY, *([last_column(ORDER_KEY)] if chunked else [])])
    names = [PART_NAME.format(docs[start], chunks[start]) for start, _ in runs]
    for name, (start, stop) in zip(names, runs, strict=True):
        pq.write_table(rows.slice(start, stop - start), f"{root}/{name}", filesystem=fs)
    return pa.table({"file": names, "rows": [stop - start for start, stop in runs]})


@contextmanager
def _ray_session(address: str | None) -> Iterator[None]:
    """A Ray to work in: the running one, else one started here (at ``address``) and shut down after; Ray Data
    set to preserve order. Ray Data's report of a failed job (with Ray's own traceback) is kept off the console
    meanwhile, in Ray Data's log file only: the job raises that error itself (`_user_error`)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False if address is None else None)
    reports = logging.getLogger("ray.data.exceptions")  # (Ray Data's console handler drops records marked hide)
    hide = partial(_hide, threading.get_ident())  # this job's only: another thread's Ray Data job keeps its report
    reports.addFilter(hide)
    try:
        # rows are numbered (`DOC_SOURCE`) as they reach the actors, which is the input's order only under
        # preserve_order; the writer then restores that order whatever order the actors' blocks come back in
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        yield
    finally:
        reports.removeFilter(hide)
        if started:
            ray.shutdown()


def _hide(thread: int, record: logging.LogRecord) -> bool:
    """Mark a log record of ``thread`` (the job's) for Ray Data's log file only (Ray Data's ``hide``)."""
    if record.thread == thread:
        record.hide = True
    return True


def _calibrate_task(texts: list[str], options: EncoderOptions, request: EncodeRequest, input_uri: str) -> dict:
    """The calibration of ``texts`` as `tokenpool embed` makes it (`tokenpool.jobs.pooled.calibrate`)."""
    from tokenpool.model.encoder import Encoder

    encoder = Encoder.from_options(options, caller=request.caller)
    request = request.check_encoder(encoder)  # (a sparse model: refused, as the actors refuse it)
    return calibrate(encoder, request, texts, input_uri).to_dict()


def _calibration(
    ds: ray.data.Dataset, request: EncodeRequest, column: str, options: EncoderOptions, num_gpus: float,
    num_cpus: float | None, input_uri: str,
) -> Any:  # fmt: skip
    """The request's calibration (loaded on the driver), else one computed from its first ``calibration_size``
    rows in a Ray task with the actors' resources."""
    import ray

    if request.calibration is not None:
        return _loaded(request.calibration)
    with _users_errors(input_uri, column):  # (reading the sample, too, may fail on a bad line)
        rows = ds.limit(request.calibration_size).take_all()
        if rows and column not in rows[0]:  # (embed_dataset's own check comes after the calibration)
            raise _no_column(request, "column", column, list(rows[0]))
        texts = [row[column] for row in rows]
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            if texts[bad] is None:
                _refuse_null_texts(input_uri, column)
            raise TypeError(f"column {column!r} must hold strings; row {bad} holds {texts[bad]!r:.40}")
        task = _task(_calibrate_task, num_gpus, num_cpus)
        return Calibration.from_dict(ray.get(task.remote(texts, options, request, input_uri)))


def _refuse_foreign_sidecar(output_uri: str) -> None:
    """The calibration file the job will write is absent or a tokenpool calibration (an earlier run's, which is
    replaced); anything else (a symlink too, as `tokenpool embed` has it) is the user's and is refused before the
    job starts, untouched."""
    import pyarrow.fs

    target = calibration_uri_for(output_uri)
    fs, path = _filesystem(target)
    info = fs.get_file_info(path)  # (through a symlink: a local one, even dangling, is the user's, never replaced)
    linked = "://" not in target and os.path.islink(path)
    if info.type == pyarrow.fs.FileType.NotFound and not linked:
        return
    head = b""
    if info.type == pyarrow.fs.FileType.File and not linked:
        with fs.open_input_stream(path) as fh:
            head = fh.read(HEAD_BYTES)
    if not is_calibration_head(head):
        raise FileExistsError(
            f"{shown_name(target)} exists and is not a tokenpool calibration file; refusing to replace it "
            "(move it away, or name another output)"
        )


def _write_beside(output_uri: str, calibration: Any, given_beside: bool = False) -> None:
    """``<output_uri>.calibration.json``, through pyarrow's filesystems (local, s3://, gs://, ...). A local one
    that holds ``calibration`` already (in any layout: `tokenpool.jobs.pooled.holds`) is kept as it is; one that
    was the calibration file given (``given_beside``) is only read: changed since, it is refused, untouched.
    A file of the user's put there while the job ran is refused as at the start (`_refuse_foreign_sidecar`)."""
    target = calibration_uri_for(output_uri)
    if "://" not in target:
        if holds(Path(target), calibration):
            return
        if given_beside:
            raise CorpusError(
                f"{shown_name(target)}: changed while the job ran; it held the calibration the rows in "
                f"{shown_name(output_uri)} are quantized with (also in their parquet metadata) and is left as "
                "it is"
            )
        _refuse_foreign_sidecar(output_uri)
        calibration.save(Path(target))  # (synced: the rename survives a power cut)
        return
    _refuse_foreign_sidecar(output_uri)
    fs, path = _filesystem(target)
    with fs.open_output_stream(path) as fh:
        fh.write(calibration.to_json().encode())


# a traceback's last line: an exception named *Error / *Exception, or any of tokenpool's (CalibrationMismatch)
_ERROR_LINE = re.compile(r"^(tokenpool\.[\w.]+|[A-Za-z_][\w.]*(?:Error|Exception)): (.+)$", re.MULTILINE)


def _user_error(err: Exception) -> Exception:
    """The first exception raised inside a Ray worker, rebuilt as its own type when `tokenpool.errors.classify`
    calls it bad input (a builtin such as ValueError, TypeError, OSError, or a tokenpool error), else a
    RuntimeError: Ray hands back only a wrapper holding the worker's traceback as text."""
    for name, message in _ERROR_LINE.findall(str(err)):
        if name.startswith("ray."):
            continue
        kind = _exception_type(name)
        if kind is not None and classify(kind) == BAD_INPUT:
            try:
                return kind(f"the Ray job failed: {message}")
            except TypeError:  # an exception class whose constructor wants other arguments
                pass
        return RuntimeError(f"the Ray job failed: {name}: {message}")
    return RuntimeError(f"the Ray job failed: {str(err).strip().splitlines()[-1]}")


def _exception_type(name: str) -> type[BaseException] | None:
    """The exception class a traceback line names: a builtin (``ValueError``) or one of tokenpool's
    (``tokenpool.errors.CorpusError``); None for anything else (no other module is imported)."""
    module, _, attr = name.rpartition(".")
    if module and not name.startswith("tokenpool."):
        return None
    try:
        kind = getattr(importlib.import_module(module or "builtins"), attr, None)
    except ImportError:
        return None
    return kind if isinstance(kind, type) and issubclass(kind, BaseException) else None
