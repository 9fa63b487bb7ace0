"""``tokenpool embed``: embed every record of a corpus into .npy/.parquet/.jsonl/.npz (streaming, resumable)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from typing import Any

from ..core.strategies import is_auto, parse_strategies
from ..errors import CorpusError, refuse_empty_model, shown_name
from ..io.formats import check_text_options, format_for_suffix, input_help, output_help
from ..io.readers import READERS, STDIN, check_readable
from ..model.options import EncoderOptions
from . import common
from .common import (
    LONG_DOCUMENT_OPTIONS,
    POOLING_OPTIONS,
    add_encoder_options,
    add_model_group,
    add_text_options,
    log,
    non_negative_number,
    positive_int,
)


def add_parser(commands: Any) -> None:
    embed = commands.add_parser(
        "embed",
        help=f"embed a corpus into {output_help()} (streaming, resumable)",
        description="Embed every record of INPUT; row i of OUT is record i, except with --skip-empty (only the "
        "kept records; their line numbers in OUT.lines.txt), --chunks (one row per chunk) and --token-vectors (one "
        "row of token vectors per record; .npy: every token vector, indexed by OUT.tokens.jsonl). Streams in "
        "chunks to a work folder beside OUT, so --resume can continue a killed run; OUT appears only when complete.",
    )
    embed.add_argument("input", metavar="INPUT", help=f"{input_help()}, or - for stdin")
    embed.add_argument("-o", "--output", required=True, metavar="OUT", help=f"output file: {output_help()}")
    src = embed.add_argument_group("input")
    add_text_options(src.add_argument, "input format (default: from INPUT's suffix; txt for stdin)")
    src.add_argument("--skip-empty", action="store_true", help="drop empty/blank texts; kept line numbers go to "
                     "OUT.lines.txt (chunk and token rows: none, their doc column numbers the records)")
    add_encoder_options(embed.add_argument_group("pooling"), POOLING_OPTIONS)
    _add_row_options(embed)
    add_model_group(embed, batch_size=32)
    add_storage_options(embed)
    _add_run_options(embed)
    embed.set_defaults(func=run_embed)


def _add_row_options(parser: argparse.ArgumentParser) -> None:
    """Long documents, --chunks (one row per chunk) and --token-vectors (one row of token vectors per record)."""
    long = parser.add_argument_group("long documents and chunks")
    add_encoder_options(long, LONG_DOCUMENT_OPTIONS)
    long.add_argument(
        "--chunks", metavar="SPEC",
        help="one row per chunk instead of per record: tokens:SIZE[:OVERLAP] (e.g. tokens:128:16), "
        "boundaries:MAX[:OVERLAP] (whole paragraphs/sentences of at most MAX tokens, e.g. boundaries:128; needs "
        "tokenpool[chunking]) or spans (character spans [[start, end], ...] per record, from --spans-field in "
        ".jsonl / a list column in .parquet)",
    )  # fmt: skip
    long.add_argument(
        "--chunking", choices=("late", "naive"),
        help="late: pool each chunk from the whole document's windows (context seen; default); naive: encode "
        "each chunk's text alone",
    )  # fmt: skip
    long.add_argument("--spans-field", metavar="NAME", help="field/column of the spans (default: spans)")
    long.add_argument(
        "--id-field", metavar="NAME",
        help="field/column copied to each chunk row (--chunks) or token row (--token-vectors) when the input has "
        "it (default: id; another name that is missing or null in every record of a file is refused)",
    )  # fmt: skip
    tokens = parser.add_argument_group("token vectors (docs/long-documents.md)")
    tokens.add_argument(
        "--token-vectors", action="store_true",
        help="one row per record holding every token's vector (no pooling, no padding), its token ids and "
        "character spans; .npy: all token vectors with a sidecar index OUT.tokens.jsonl",
    )  # fmt: skip
    tokens.add_argument(
        "--special-tokens", action=argparse.BooleanOptionalAction, default=None,
        help="--token-vectors: keep the tokenizer's added special tokens such as [CLS] and [SEP] (default: keep)",
    )  # fmt: skip


class _RayAddress(argparse.Action):
    """``--ray [ADDRESS]``: a value that names a corpus (an existing path or a corpus suffix) given before INPUT is
    refused saying so, not with argparse's "the following arguments are required: INPUT"."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
        corpus = values not in ("", "auto", "local") and (os.path.exists(values) or format_for_suffix(values, READERS))
        if corpus and namespace.input is None:
            parser.error(f"--ray took {values!r} as its ADDRESS; put INPUT before --ray or write --ray=ADDRESS")
        setattr(namespace, self.dest, values)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Chunks of work, checkpoints, --resume, progress, --ray, -q."""
    run = parser.add_argument_group("run")
    # --chunk-size and --checkpoint-seconds default to None so that --ray can tell them given; EmbedJob's defaults
    run.add_argument("--chunk-size", type=positive_int, metavar="N",
                     help="records per resumable chunk (default: 2048)")  # fmt: skip
    run.add_argument(
        "--checkpoint-seconds", type=non_negative_number, metavar="S",
        help="close a chunk at the first end of a block (256 records) after S seconds of work, so a kill loses at "
             "most S seconds plus one block's work (default: 30)",
    )  # fmt: skip
    run.add_argument("--resume", action="store_true", help="continue a killed run from its last complete chunk")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bar on stderr (default: only when stderr is a terminal)")  # fmt: skip
    run.add_argument(
        "--ray", nargs="?", const="", default=None, metavar="ADDRESS", action=_RayAddress,
        help="run on Ray (OUT becomes a folder of parquet files); ADDRESS such as auto or ray://host:10001, "
        "none for a local Ray; write --ray=ADDRESS or put --ray after INPUT",
    )  # fmt: skip
    run.add_argument("-q", "--quiet", action="store_true", help="no summary line on stderr")


# the names of tokenpool.core.quantize.PRECISIONS (not imported here: --help loads no numpy)
PRECISION_CHOICES = ("float32", "float16", "int8", "uint8", "binary", "ubinary")


def add_storage_options(parser: argparse.ArgumentParser) -> None:
    """--precision/--calibration/--calibration-size (dense models), --top-k/--threshold/--tokens/--dense (SPLADE)."""
    group = parser.add_argument_group("precision and sparse rows (docs/precision.md)")
    group.add_argument(
        "--precision", choices=PRECISION_CHOICES, default="float32",
        help="dense models: float32 (default), float16, int8/uint8 (per-dimension ranges from a calibration), "
        "binary/ubinary (sign bits, 8 per byte)",
    )  # fmt: skip
    group.add_argument(
        "--calibration", metavar="FILE",
        help="int8/uint8: reuse this calibration JSON (e.g. OUT.calibration.json of an earlier run)",
    )  # fmt: skip
    group.add_argument(
        "--calibration-size", type=positive_int, metavar="N",
        help="int8/uint8 without --calibration: calibrate on the first N records (default: 1000)",
    )  # fmt: skip
    group.add_argument(
        "--top-k", type=positive_int, metavar="K", help="sparse models: keep the K largest values per row"
    )
    group.add_argument(
        "--threshold", type=non_negative_number, default=0.0, metavar="X",
        help="sparse models: keep values above X (default: 0, every non-zero)",
    )  # fmt: skip
    group.add_argument(
        "--tokens", action="store_true", help="sparse models: add the decoded tokens (.parquet/.jsonl)"
    )
    group.add_argument(
        "--dense", action="store_true", help="sparse models: write N × V float32 rows instead of sparse rows"
    )


def run_embed(args: argparse.Namespace) -> int:
    from ..jobs import EmbedJob, check_job, embed_corpus
    from ..model.request import EncodeRequest

    refuse_empty_model(args.model)
    if not is_auto(args.pooling):
        parse_strategies(args.pooling)  # a bad name fails before anything is read or loaded
    _refuse_unread_options(args)
    request = EncodeRequest(
        output="tokens" if args.token_vectors else "vectors", precision=args.precision, calibration=args.calibration,
        calibration_size=args.calibration_size, chunks=args.chunks, chunking=args.chunking,
        batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens, special_tokens=args.special_tokens,
        prompt=args.prompt, prompt_name=args.prompt_name, top_k=args.top_k, threshold=args.threshold,
        decoded_tokens=args.tokens, dense=args.dense, caller="cli",
    )  # fmt: skip
    options = EncoderOptions.from_mapping(args)
    if args.ray is not None:
        return _embed_ray(args, request.check(options), options)
    given = {name: getattr(args, name) for name in ("chunk_size", "checkpoint_seconds") if getattr(args, name) is not None}
    job = EmbedJob(
        args.input, args.output, request, input_format=args.format, field=args.field, column=args.column,
        skip_empty=args.skip_empty, resume=args.resume,
        progress=args.progress if args.progress is not None else sys.stderr.isatty(),
        spans_field=args.spans_field, id_field=args.id_field, **given,
    )  # fmt: skip
    formats = check_job(job, options)  # request, input, output (every record, for --chunks)
    result = embed_corpus(common.build_encoder(options), job, log=log, formats=formats)
    if not args.quiet:
        log(_summary(job, result))
    return 0


def _unread_defaults() -> dict[str, Any]:
    """The defaults of the options `_refuse_unread_options` must see as given or not (argparse's default is None
    for them), read from their owners: the request's chunking, the job's fields, the job's calibration sample."""
    from ..jobs import DEFAULT_CALIBRATION_SIZE, EmbedJob
    from ..model.request import EncodeRequest

    job = {f.name: f.default for f in fields(EmbedJob)}
    return {"chunking": EncodeRequest.default("chunking"), "spans_field": job["spans_field"],
            "id_field": job["id_field"], "calibration_size": DEFAULT_CALIBRATION_SIZE}  # fmt: skip


def _refuse_unread_options(args: argparse.Namespace) -> None:
    """Options given where nothing reads them are refused (one line, exit 2), then the defaults are filled in."""
    from ..model.request import unread_options

    rows = args.chunks is not None or args.token_vectors
    given = {name for name, flag in (("chunking", args.chunking), ("spans", args.spans_field),
                                     ("calibration_size", args.calibration_size),
                                     ("special_tokens", args.special_tokens)) if flag is not None}  # fmt: skip
    unread = unread_options(given, chunks=args.chunks, precision=args.precision, calibration=args.calibration,
                            output="tokens" if args.token_vectors else "vectors")  # fmt: skip
    common.refuse_unread(args, [(name, lacks) for name, lacks in unread if name != "calibration_size"])
    if args.id_field is not None:  # given (whatever its value): read by chunk and token rows, never with --ray
        ray = args.ray is not None  # (Ray's rows keep every input column)
        common.refuse_flags("with --ray" if ray else "without --chunks or --token-vectors", ("--id-field", ray or not rows))
    common.refuse_unread(args, [(name, lacks) for name, lacks in unread if name == "calibration_size"])
    for name, default in _unread_defaults().items():
        if getattr(args, name) is None:
            setattr(args, name, default)


def _summary(job: Any, result: Any) -> str:
    """The line that says what a job wrote."""
    output, index_file, lines_file, calibration_file = (
        shown_name(str(path)) if path else None
        for path in (result.output, result.index_file, result.lines_file, result.calibration_file)
    )  # (named as the errors name them: quoted where a name holds a backslash or a character that does not print)
    computed = f"chunks computed {result.chunks - result.reused_chunks}, reused {result.reused_chunks}"
    index = f" (row index in {index_file})" if index_file else ""
    took = f"from {result.records} records in {result.seconds:.1f} s"
    if job.kind == "tokens":
        what = f"{result.rows} rows holding {result.items} token vectors x {result.dimension} float32"
        return f"wrote {output}: {what} {took}; {computed}{index}"
    if job.kind == "chunks":
        what = f"{result.rows} chunk rows x {result.dimension} float32"
        return f"wrote {output}: {what} {took}; work {computed}{index}"
    kept = f" (kept line numbers in {lines_file})" if lines_file else ""
    if calibration_file:
        kept += f"; calibration in {calibration_file}"
    return f"wrote {output}: {_what(result)} {took}; {computed}{kept}"


def _what(result: Any) -> str:
    """``51 x 384 int8``, or for sparse rows their vocabulary and density."""
    from ..core.quantize import PACKED_PRECISIONS, bytes_per_vector

    if result.sparse:
        per_row = result.items / result.rows if result.rows else 0.0
        zeros = 100.0 * (1 - per_row / result.dimension)
        return (
            f"{result.rows} sparse rows over a {result.dimension}-token vocabulary, {per_row:.1f} non-zeros per "
            f"row ({zeros:.2f}% zeros)"
        )
    what = f"{result.rows} x {result.dimension} {result.precision}"
    if result.precision in PACKED_PRECISIONS:
        what += f" (packed: {bytes_per_vector(result.precision, result.dimension)} bytes per row)"
    return what


def _embed_ray(args: argparse.Namespace, request: Any, options: EncoderOptions) -> int:
    """Hand the job to `tokenpool.integrations.ray.embed_parquet` (OUT is a folder of parquet files)."""
    common.refuse_flags(
        "with --ray", ("--resume", args.resume), ("--skip-empty", args.skip_empty), ("--prompt", args.prompt),
        ("--prompt-name", args.prompt_name), ("--format", args.format), ("--tokens", args.tokens),
        ("--dense", args.dense), ("--chunk-size", args.chunk_size is not None),
        ("--checkpoint-seconds", args.checkpoint_seconds is not None), ("--progress", args.progress is True),
        error=CorpusError,
    )  # fmt: skip
    from ..integrations.ray import embed_parquet, input_format_of
    from ..io.storage import calibration_uri_for

    if args.input == STDIN:
        raise CorpusError("--ray reads files, not stdin; pass INPUT as a file or a folder of parquet files")
    if request.calibration is not None:
        check_readable(request.calibration)
    in_fmt = input_format_of(args.input)
    check_text_options(args.input, in_fmt, field=args.field, column=args.column)
    text_option = READERS[in_fmt].text_option
    call: dict[str, Any] = {
        "column": args.field if text_option == "field" else args.column, "model": options.model,
        "pooling": options.pooling, "batch_size": request.batch_size, "precision": request.precision,
        "calibration": request.calibration, "calibration_size": request.calibration_size, "top_k": request.top_k,
        "threshold": request.threshold, "max_batch_tokens": request.max_batch_tokens,
        "output": "tokens" if request.output == "tokens" else "vectors",
        "special_tokens": request.special_tokens is not False, "chunks": request.chunks,
        "chunking": request.chunking, "spans_column": args.spans_field, "caller": "cli",  # (chunk rows keep the
        # record's columns; refusals name flags)
        **{name: value for name, value in options.given().items() if name not in ("model", "pooling")},
    }  # fmt: skip
    if request.output == "tokens":  # the token vectors' column as `tokenpool embed` names it (Ray's default: embedding)
        from ..jobs.rows import token_rows

        call["output_column"] = token_rows(0).array
    if options.device is not None and options.device.startswith("cuda"):
        call["num_gpus"] = 1
    calibration = embed_parquet(args.input, args.output, address=args.ray or None, **call)
    if not args.quiet:
        where = f"; calibration in {shown_name(calibration_uri_for(args.output))}" if calibration is not None else ""
        log(f"wrote {shown_name(args.output)} (a folder of parquet files, {args.precision}) with Ray{where}")
    return 0
