"""``tokenpool embed``: embed every record of a corpus into .npy/.parquet/.jsonl (streaming, resumable)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..io.formats import input_choices, input_help, output_help, text_option_help
from . import common
from .common import (
    LONG_DOCUMENT_OPTIONS,
    POOLING_OPTIONS,
    add_encoder_options,
    add_model_group,
    encoder_options,
    log,
    non_negative_number,
    positive_int,
)


def add_parser(commands: Any) -> None:
    embed = commands.add_parser(
        "embed",
        help="embed a corpus into .npy/.parquet/.jsonl (streaming, resumable)",
        description="Embed every record of INPUT; row i of OUT is record i. Streams in "
        "chunks to a work folder beside OUT, so --resume can continue a "
        "killed run; OUT appears only when complete.",
    )
    embed.add_argument(
        "input",
        metavar="INPUT",
        help=f"{input_help()}, or - for stdin",
    )
    embed.add_argument(
        "-o", "--output", required=True, metavar="OUT", help=f"output file: {output_help()}"
    )
    src = embed.add_argument_group("input")
    src.add_argument(
        "--format",
        choices=input_choices(),
        help="input format (default: from INPUT's suffix; txt for stdin)",
    )
    src.add_argument(
        "--field", default="text", help=f"JSON field holding the text in {text_option_help('field')} (default: text)"
    )
    src.add_argument(
        "--column",
        default="text",
        help=f"column holding the text in {text_option_help('column')} (default: text)",
    )
    src.add_argument(
        "--skip-empty",
        action="store_true",
        help="drop empty/blank texts; kept line numbers go to OUT.lines.txt",
    )
    add_encoder_options(embed.add_argument_group("pooling"), POOLING_OPTIONS)
    long = embed.add_argument_group("long documents and chunks")
    add_encoder_options(long, LONG_DOCUMENT_OPTIONS)
    long.add_argument(
        "--chunks",
        metavar="SPEC",
        help="one row per chunk instead of per record: tokens:SIZE[:OVERLAP] (e.g. tokens:256:32) or spans "
        "(character spans [[start, end], ...] per record, from --spans-field in .jsonl / a list column in .parquet)",
    )
    long.add_argument(
        "--chunking",
        choices=("late", "naive"),
        default="late",
        help="late: pool each chunk from the whole document's windows (context seen; default); naive: encode "
        "each chunk's text alone",
    )
    long.add_argument("--spans-field", default="spans", metavar="NAME", help="field/column of the spans (default: spans)")
    long.add_argument(
        "--id-field",
        default="id",
        metavar="NAME",
        help="field/column copied to each chunk row when the input has it (default: id)",
    )
    add_model_group(embed, batch_size=32)
    run = embed.add_argument_group("run")
    run.add_argument(
        "--chunk-size",
        type=positive_int,
        default=2048,
        metavar="N",
        help="records per resumable chunk (default: 2048)",
    )
    run.add_argument(
        "--checkpoint-seconds",
        type=non_negative_number,
        default=30.0,
        metavar="S",
        help="close a chunk after at most S seconds of work, so a kill loses at most that much (default: 30)",
    )
    run.add_argument(
        "--resume", action="store_true", help="continue a killed run from its last complete chunk"
    )
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: only when stderr is a terminal)",
    )
    run.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray (OUT becomes a folder of parquet files); ADDRESS such as auto or ray://host:10001, "
        "none for a local Ray; write --ray=ADDRESS or put --ray after INPUT",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no summary line on stderr")
    embed.set_defaults(func=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    from ..core.strategies import is_auto, parse_strategies
    from ..io.embedjob import EmbedJob, check_job, embed_corpus

    if not is_auto(args.pooling):
        parse_strategies(args.pooling)  # a bad name fails before anything is read or loaded
    if args.ray is not None:
        return _embed_ray(args)
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    if args.chunks is not None:
        return _embed_chunks(args)
    job = EmbedJob(
        input=args.input,
        output=args.output,
        input_format=args.format,
        field=args.field,
        column=args.column,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
        chunk_size=args.chunk_size,
        prompt=args.prompt,
        prompt_name=args.prompt_name,
        skip_empty=args.skip_empty,
        resume=args.resume,
        progress=progress,
        checkpoint_seconds=args.checkpoint_seconds,
    )
    formats = check_job(job)  # input and output checked once, before the model loads
    encoder = common.build_encoder(encoder_options(args))
    result = embed_corpus(encoder, job, log=log, formats=formats)
    if not args.quiet:
        computed = result.chunks - result.reused_chunks
        kept = f" (kept line numbers in {result.lines_file})" if result.lines_file else ""
        log(
            f"wrote {result.output}: {result.rows} x {result.dimension} float32 from {result.records} records in "
            f"{result.seconds:.1f} s; chunks computed {computed}, reused {result.reused_chunks}{kept}"
        )
    return 0


def _embed_chunks(args: argparse.Namespace) -> int:
    """``--chunks``: one output row per chunk (`tokenpool.io.chunkjob`)."""
    from ..io.chunkjob import ChunkJob, check_chunk_job, embed_chunks_corpus, index_file_for

    job = ChunkJob(
        input=args.input,
        output=args.output,
        input_format=args.format,
        field=args.field,
        column=args.column,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        prompt=args.prompt,
        prompt_name=args.prompt_name,
        skip_empty=args.skip_empty,
        resume=args.resume,
        chunks=args.chunks,
        chunking=args.chunking,
        spans_field=args.spans_field,
        id_field=args.id_field,
    )
    formats = check_chunk_job(job)  # every record checked before the model loads
    encoder = common.build_encoder(encoder_options(args))
    result = embed_chunks_corpus(encoder, job, log=log, formats=formats)
    if not args.quiet:
        index = f" (row index in {index_file_for(result.output)})" if formats.output == "npy" else ""
        log(
            f"wrote {result.output}: {result.rows} chunk rows x {result.dimension} float32 from {result.records} "
            f"records in {result.seconds:.1f} s; work chunks computed {result.chunks - result.reused_chunks}, "
            f"reused {result.reused_chunks}{index}"
        )
    return 0


def _embed_ray(args: argparse.Namespace) -> int:
    """Hand the job to `tokenpool.integrations.ray.embed_parquet` (OUT is a folder of parquet files)."""
    from ..errors import CorpusError

    for flag, used in (
        ("--resume", args.resume),
        ("--skip-empty", args.skip_empty),
        ("--prompt", args.prompt),
        ("--prompt-name", args.prompt_name),
        ("--format", args.format),
        ("--chunks", args.chunks),
        ("--max-batch-tokens", args.max_batch_tokens),
    ):
        if used:
            raise CorpusError(f"{flag} is not supported with --ray")
    from ..integrations.ray import embed_parquet, input_format_of
    from ..io.readers import READERS

    text_option = READERS[input_format_of(args.input)].text_option
    options = encoder_options(args)
    call: dict[str, Any] = {
        "column": args.field if text_option == "field" else args.column,
        "model": options.model,
        "pooling": options.pooling,
        "batch_size": args.batch_size,
        **{name: value for name, value in options.given().items() if name not in ("model", "pooling")},
    }
    if options.device is not None and options.device.startswith("cuda"):
        call["num_gpus"] = 1
    embed_parquet(args.input, args.output, address=args.ray or None, **call)
    if not args.quiet:
        log(f"wrote {args.output} (a folder of parquet files) with Ray")
    return 0
