"""Embed a Ray Dataset (or parquet/JSON/text files) with `tokenpool.Encoder`, one model per Ray actor.

Needs the ``ray`` extra: ``pip install "tokenpool[encode,ray]"``. ``tokenpool embed --ray`` calls `embed_parquet`.
"""

from __future__ import annotations

import builtins
import importlib
import posixpath
import re
from typing import TYPE_CHECKING, Any

from tokenpool.core.strategies import is_auto, parse_strategies
from tokenpool.model.options import EncoderOptions

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

__all__ = ["embed_dataset", "embed_parquet", "EmbedBatch"]


class EmbedBatch:
    """Ray Data callable class: loads the Encoder once per actor, then adds a vector column to each batch.

    Batches are ``pyarrow.Table``s, so every other column passes through untouched; the vectors are a
    ``fixed_size_list<float32>[D]`` column (readable by any parquet/arrow tool without Ray).
    """

    def __init__(self, column: str, output_column: str, options: EncoderOptions, encode_batch_size: int) -> None:
        self.column = column
        self.output_column = output_column
        self.encode_batch_size = encode_batch_size
        self.encoder = options.build()
        self._string_types = _string_type_checks()

    def __call__(self, batch: pa.Table) -> pa.Table:
        import numpy as np
        import pyarrow as pa

        if self.column not in batch.column_names:
            raise ValueError(f"column {self.column!r} not in the dataset; columns: {batch.column_names}")
        if self.output_column in batch.column_names:
            raise ValueError(f"output column {self.output_column!r} already exists in the dataset")
        texts = batch.column(self.column)
        if texts.null_count:
            raise ValueError(f"column {self.column!r} has {texts.null_count} null value(s) in a batch")
        if not any(check(texts.type) for check in self._string_types):
            raise TypeError(f"column {self.column!r} must hold strings, got {texts.type}")
        vectors = self.encoder.encode(texts.to_pylist(), batch_size=self.encode_batch_size)
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
        column = pa.FixedSizeListArray.from_arrays(flat, self.encoder.dimension)
        return batch.append_column(self.output_column, column)


def _string_type_checks() -> tuple[Any, ...]:
    import pyarrow as pa

    names = ("is_string", "is_large_string", "is_string_view")  # string_view: pyarrow >= 16
    return tuple(getattr(pa.types, name) for name in names if hasattr(pa.types, name))


def _check_schema(ds: ray.data.Dataset, column: str, output_column: str) -> None:
    # Only when the schema is known without running the pipeline; otherwise EmbedBatch checks each batch.
    schema = ds.schema(fetch_if_missing=False)
    if schema is None:
        return
    names = list(schema.names)
    if column not in names:
        raise ValueError(f"column {column!r} not in the dataset; columns: {names}")
    if output_column in names:
        raise ValueError(f"output column {output_column!r} already exists in the dataset; columns: {names}")


def embed_dataset(
    ds: ray.data.Dataset,
    *,
    column: str = "text",
    output_column: str = "embedding",
    model: str | None = None,
    pooling: Any = "auto",
    batch_size: int = 64,
    concurrency: int | tuple[int, int] = 1,
    num_gpus: float = 0,
    num_cpus: float | None = None,
    encode_batch_size: int | None = None,
    **encoder_options: Any,
) -> ray.data.Dataset:
    """Lazily add ``output_column`` (float32 vectors of ``column``'s texts) to ``ds``; other columns pass through.

    ``concurrency`` actors (or a (min, max) autoscaling range) each load the model once and take ``num_gpus``
    GPUs and ``num_cpus`` CPUs; ``batch_size`` rows go to an actor at a time, ``encode_batch_size`` (default:
    ``batch_size``) per forward pass. ``encoder_options`` go to `tokenpool.Encoder` (device, dtype, ...).
    """
    from ray.data import ActorPoolStrategy

    for name, value in (("batch_size", batch_size), ("encode_batch_size", encode_batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if isinstance(concurrency, tuple):
        if len(concurrency) != 2 or not 1 <= concurrency[0] <= concurrency[1]:
            raise ValueError(
                f"concurrency must be a positive int or (min, max) with min <= max, got {concurrency!r}"
            )
        compute = ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    elif isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive int or (min, max), got {concurrency!r}")
    else:
        compute = ActorPoolStrategy(size=concurrency)
    if num_gpus < 0:
        raise ValueError(f"num_gpus must be >= 0, got {num_gpus!r}")
    if not is_auto(pooling):
        parse_strategies(pooling)  # a bad name fails here, not later inside every actor
    # an unknown option is a TypeError here, not later inside every actor
    options = EncoderOptions(model=None if model is None else str(model), pooling=pooling, **encoder_options)
    device = str(options.device or "")
    if device.startswith("cuda") and not num_gpus:
        raise ValueError(f"device={device!r} needs num_gpus > 0, so that Ray gives each actor a GPU")
    _check_schema(ds, column, output_column)
    remote_args: dict[str, Any] = {"num_gpus": num_gpus} if num_gpus else {}
    if num_cpus is not None:
        remote_args["num_cpus"] = num_cpus
    return ds.map_batches(
        EmbedBatch,
        fn_constructor_kwargs={
            "column": column,
            "output_column": output_column,
            "options": options,
            "encode_batch_size": encode_batch_size or batch_size,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=compute,
        **remote_args,
    )


_COMPRESSION_SUFFIXES = (".gz", ".zst", ".bz2")


def input_format_of(input_uri: str) -> str:
    """The `tokenpool.io.readers.READERS` name for ``input_uri``, from its suffix (a compression suffix such as
    ``.gz`` ignored; ``.json`` read as JSON Lines); a folder or an unknown suffix is read as parquet."""
    from tokenpool.io.formats import READERS, format_for_suffix

    name = posixpath.basename(input_uri.rstrip("/")).lower()
    for suffix in _COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    if name.endswith(".json"):
        return "jsonl"
    return format_for_suffix(name, READERS) or "parquet"


def _read(input_uri: str, column: str) -> ray.data.Dataset:
    """``input_uri`` as a Ray Dataset, read by Ray's own reader for its format (`input_format_of`)."""
    import ray.data

    fmt = input_format_of(input_uri)
    if fmt == "txt":
        if column != "text":
            raise ValueError(f"a text file gives a 'text' column, but column={column!r} was asked for")
        return ray.data.read_text(input_uri, drop_empty_lines=False)  # rows stay aligned with lines
    if fmt == "jsonl":
        return ray.data.read_json(input_uri)
    if fmt == "csv":
        return ray.data.read_csv(input_uri)
    if fmt == "tsv":  # as tokenpool reads .tsv: split on tabs, quotes are ordinary characters
        from pyarrow import csv as pa_csv

        return ray.data.read_csv(
            input_uri, parse_options=pa_csv.ParseOptions(delimiter="\t", quote_char=False)
        )
    if fmt == "parquet":
        return ray.data.read_parquet(input_uri)  # a .parquet file, or a folder of them
    raise ValueError(f"{input_uri}: {fmt} input is not supported with Ray")


def _default_concurrency(num_gpus: float) -> int:
    import ray

    if num_gpus > 0:
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus < num_gpus:
            raise RuntimeError(f"num_gpus={num_gpus} per actor, but the Ray cluster has {gpus:g} GPU(s)")
        return max(1, int(gpus // num_gpus))
    return max(1, sum(1 for node in ray.nodes() if node.get("Alive")))


def embed_parquet(
    input_uri: str,
    output_uri: str,
    *,
    address: str | None = None,
    column: str = "text",
    output_column: str = "embedding",
    model: str | None = None,
    pooling: Any = "auto",
    batch_size: int = 64,
    concurrency: int | tuple[int, int] | None = None,
    num_gpus: float = 0,
    num_cpus: float | None = None,
    **encoder_options: Any,
) -> None:
    """Read ``input_uri`` (parquet file/folder; .jsonl/.json/.csv/.txt by extension), embed, write parquet files.

    Runs on the Ray cluster at ``address`` ("auto", "ray://host:10001", ...) or a local Ray when None; any URI
    pyarrow understands works (local, s3://, gs://, ...). ``concurrency`` None = one actor per GPU (or per node).
    """
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False if address is None else None)
        started = True
    try:
        # written rows follow the input's order (a .txt input has no id column to match them by)
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        ds = _read(input_uri, column)
        if concurrency is None:
            concurrency = _default_concurrency(num_gpus)
        embedded = embed_dataset(
            ds,
            column=column,
            output_column=output_column,
            model=model,
            pooling=pooling,
            batch_size=batch_size,
            concurrency=concurrency,
            num_gpus=num_gpus,
            num_cpus=num_cpus,
            **encoder_options,
        )
        try:
            embedded.write_parquet(output_uri)
        except ray.exceptions.RayError as err:  # a task or an actor's constructor failed on a worker
            raise _user_error(err) from err
    finally:
        if started:
            ray.shutdown()


_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$", re.MULTILINE)


def _user_error(err: Exception) -> Exception:
    """The first exception raised inside a Ray worker, rebuilt as its own type when `tokenpool.errors.classify`
    calls it bad input (a builtin such as ValueError, TypeError, OSError, or a tokenpool error), else a
    RuntimeError: Ray hands back only a wrapper holding the worker's traceback as text."""
    from tokenpool.errors import BAD_INPUT, classify

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
    if "." not in name:
        kind = getattr(builtins, name, None)
    elif name.startswith("tokenpool."):
        module, _, attr = name.rpartition(".")
        try:
            kind = getattr(importlib.import_module(module), attr, None)
        except ImportError:
            return None
    else:
        return None
    return kind if isinstance(kind, type) and issubclass(kind, BaseException) else None
