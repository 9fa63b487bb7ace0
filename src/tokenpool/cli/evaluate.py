"""``tokenpool evaluate``: Spearman ×100 of every pooling strategy on scored sentence pairs, one forward pass."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from types import SimpleNamespace
from typing import Any

from ..errors import CorpusError, OptionError, option_number, parse_int, refuse_empty_model
from ..io.readers import STDIN, check_readable, where
from ..model.folders import display_name
from ..model.options import EncoderOptions
from . import common
from .common import LONG_DOCUMENT_OPTIONS, add_encoder_options, add_model_group, positive_int

BATCH_SIZE = 64  # evaluate's --batch-size default (a flag the model alone reads: refused when no model runs)
DEFAULTS = {"pooling": "all", "modes": "truncate"}  # what --pooling and --modes read when not given


def add_parser(commands: Any) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        conflict_handler="resolve",  # --onnx-file is repeatable here (runtimes side by side)
        help="Spearman x100 of each pooling strategy on scored sentence pairs, or retrieval scores on a BEIR folder",
        description="Run the model once over the pairs' sentences, pool its token outputs every way, and "
        "print Spearman x100 between cosine similarity and the gold score. PAIRS: the STS-B layout "
        "(tab-separated, no header: genre, file, year, id, score, s1, s2) or 3 columns with a header "
        "(score,s1,s2 or s1,s2,score). FOLDER: a BEIR folder; documents are title + ' ' + text, queries "
        "use the model's query prompt (--prompt/--prompt-name override it), and the table gives nDCG@10, "
        "recall@100 and MRR@10 x100 per strategy.",
    )
    evaluate.add_argument(
        "pairs", metavar="PAIRS|FOLDER",
        help="STS-style .tsv/.csv file ('-': stdin), or a BEIR folder (corpus.jsonl, queries.jsonl, qrels.tsv) to report "
        "nDCG@10, recall@100 and MRR@10 of exact cosine search instead",
    )  # fmt: skip
    evaluate.add_argument("--split", metavar="NAME", help="BEIR folder: use qrels/NAME.tsv instead of qrels.tsv")
    evaluate.add_argument(
        "--pooling", default=DEFAULTS["pooling"],
        help="'all' or comma-separated strategies; a+b concatenates (default: all)",
    )  # fmt: skip
    evaluate.add_argument(
        "--modes", default=DEFAULTS["modes"],
        help="BEIR folder: comma-separated document modes, one table row each: truncate, windows, late-128, "
        "late-256, naive-128, naive-256, late-boundaries-128, late-boundaries-256, naive-boundaries-128, "
        "naive-boundaries-256; bm25 (lexical, no model); hybrid:MODE (BM25 fused with MODE, two rows per "
        "pooling; runs MODE and bm25 too) (default: truncate; --window-stride sets the windows' stride)",
    )  # fmt: skip
    add_encoder_options(evaluate.add_argument_group("long documents"), LONG_DOCUMENT_OPTIONS[1:])
    _add_lexical_options(evaluate.add_argument_group("BM25 and hybrid search (docs/evaluation.md)"))
    evaluate.add_argument("--plot", metavar="FILE.png", help="also draw a bar chart (needs matplotlib)")
    evaluate.add_argument("--json", action="store_true", help="print the scores as JSON")
    _add_precision_options(evaluate.add_argument_group("precisions (docs/precision.md)"))
    add_model_group(evaluate, batch_size=BATCH_SIZE)
    evaluate.add_argument(
        "--onnx-file", action="append", metavar="FILE",
        help="ONNX file for --runtime onnx (a name in the folder's onnx/ or a path). Repeat it, or give it with "
        "--runtime torch, to print one row per runtime side by side (torch first unless --runtime onnx): the "
        "scores of the model's own pooling and the cosine of each text's vectors against the first runtime's "
        "(min / median / 1st percentile)",
    )  # fmt: skip
    evaluate.set_defaults(func=run_evaluate)


def _add_lexical_options(lexical: Any) -> None:
    lexical.add_argument(
        "--bm25", metavar="SETTINGS",
        help="BM25 parameters as name=value pairs: k1 (1.5), b (0.75), method (lucene, robertson, atire), "
        "stopwords (en, none), stemmer (none, english, ...), e.g. k1=1.2,stemmer=english",
    )  # fmt: skip
    lexical.add_argument(
        "--rrf-k", type=option_number, metavar="K", help="reciprocal-rank fusion constant of hybrid: modes (default: 60)"
    )
    lexical.add_argument(
        "--hybrid-weight", type=option_number, metavar="W",
        help="BM25's weight in the score interpolation of hybrid: modes, the dense mode's is 1 - W (default: 0.5)",
    )  # fmt: skip


def _add_precision_options(compact: Any) -> None:
    compact.add_argument(
        "--precision", metavar="LIST",
        help="also score compact codes: comma-separated float16,int8,uint8,binary,ubinary or all; prints the "
        "Spearman each keeps against float32 and its bytes per vector",
    )  # fmt: skip
    compact.add_argument(
        "--calibration", metavar="FILE",
        help="int8/uint8 ranges from this file (scores the model's own pooling only); default: the first "
        "--calibration-size sentences",
    )  # fmt: skip
    compact.add_argument(
        "--calibration-size", type=positive_int, metavar="N",
        help="int8/uint8 without --calibration: ranges of the first N distinct sentences, or of the first N "
        "documents of a BEIR folder (default: 1000)",
    )  # fmt: skip
    compact.add_argument(
        "--rescore", metavar="LIST",
        help="BEIR folder: also rank the top N candidates of int8/ubinary search again with the float32 query "
        "(comma-separated N; default: 40,100)",
    )  # fmt: skip


def run_evaluate(args: argparse.Namespace) -> int:
    """Score sentence pairs, or a BEIR folder; with --precision compact codes, with several runtimes each one."""
    refuse_empty_model(args.model)
    check_readable(args.pairs, folders=True)  # (a mistyped FOLDER was "--modes is not supported with a pairs file")
    if args.split is not None and not _is_folder(args):
        raise CorpusError("--split applies to a BEIR folder, not to a pairs file")
    _refuse_unread_precision_options(args)
    files = args.onnx_file or []
    if len(files) > 1 or (files and args.runtime == "torch"):
        return _evaluate_runtimes(args, files)
    args.onnx_file = files[0] if files else None
    compact = args.precision is not None or args.calibration is not None
    if _is_folder(args):
        return _evaluate_retrieval_precisions(args) if compact else _evaluate_folder(args)
    from ..evaluation.sts import check_scorable, evaluate_pairs, read_pairs

    _refuse_unused_options(args, None)
    pairs = read_pairs(args.pairs)
    check_scorable(pairs, where(args.pairs))
    _check_pooling(args)
    if args.plot is not None:
        from ..evaluation.common import pyplot

        pyplot(args.plot)  # refused now, not after the model ran
    if compact:
        return _evaluate_precisions(args, pairs)
    encoder = _encoder(args)  # (evaluate_pairs reads --pooling: "all" is what fits the model)
    options = {"prompt": args.prompt, "prompt_name": args.prompt_name, **_runs(args)}
    _print_scores(args, encoder, pairs, evaluate_pairs(encoder, pairs, args.pooling, **options))
    return 0


def _evaluate_folder(args: argparse.Namespace) -> int:
    """``evaluate FOLDER``: read and check the folder and options (before the model loads; no model when only
    ``bm25`` runs), evaluate, print the table or JSON, draw the plot."""
    from ..evaluation.beir import read_beir
    from ..evaluation.common import pyplot
    from ..evaluation.fusion import DEFAULT_RRF_K, DEFAULT_WEIGHT
    from ..evaluation.modes import BM25_MODE, plan_modes
    from ..evaluation.retrieval import check_lexical_options, evaluate_retrieval, plot_retrieval

    data = read_beir(args.pairs, args.split)
    _check_pooling(args)
    plan = plan_modes(args.modes)
    _refuse_unused_options(args, plan)
    fusion = {"rrf_k": DEFAULT_RRF_K if args.rrf_k is None else args.rrf_k,
              "hybrid_weight": DEFAULT_WEIGHT if args.hybrid_weight is None else args.hybrid_weight}  # fmt: skip
    settings, _ = check_lexical_options(plan, args.bm25, *fusion.values())
    if args.plot is not None:
        pyplot(args.plot)
    encoder = _encoder(args) if plan.dense else None
    query_prompt = args.prompt if encoder is None else common.prompt_text(args, encoder)
    result = evaluate_retrieval(
        data, encoder, pooling=args.pooling if plan.dense else None, modes=plan.order, query_prompt=query_prompt,
        bm25=settings if plan.lexical else None,
        **fusion, **_runs(args),
    )  # fmt: skip
    name = BM25_MODE if encoder is None else display_name(encoder)
    report = {**result.to_dict(), "model": result.model or BM25_MODE, "folder": str(args.pairs)}
    _show(args, report, f"{name}: {_counts(data)} from {args.pairs} (scores x100)", result.table())
    if args.plot is not None:
        plot_retrieval(result, args.plot, title=f"{name} on {data.name}")
    return 0


def _evaluate_precisions(args: argparse.Namespace, pairs: Any) -> int:
    """``--precision``: the float32 table, then per pooling what each precision keeps (and its bytes)."""
    from ..evaluation.precision import evaluate_precisions, format_precision_table
    from ..evaluation.sts import label_list

    precisions, calibration = _precision_options(args)
    encoder = _dense_encoder(args, precisions)
    own = "+".join(encoder.strategies)
    if calibration is not None and _given(args, "pooling") and label_list(args.pooling, encoder) != [own]:
        raise OptionError(f"--pooling {args.pooling} cannot be used with --calibration: a calibration fits the "
                          f"model's own pooling ({own}), the only one it scores")
    scores, table, calibrations = evaluate_precisions(
        encoder, pairs, args.pooling, precisions, calibration=calibration, prompt=args.prompt,
        prompt_name=args.prompt_name, calibration_size=args.calibration_size, **_runs(args),
    )  # fmt: skip
    _print_scores(
        args, encoder, pairs, scores,
        precision={label: {row.precision: row.as_dict() for row in rows} for label, rows in table.items()},
        calibration={label: cal.to_dict() for label, cal in calibrations.items()},
    )  # fmt: skip
    if args.json:
        return 0
    source = _ranges_source(args, next(iter(calibrations.values()), None), "sentences")
    for label, rows in table.items():
        print(f"\n{format_precision_table(label, rows, source)}")
    return 0


def _evaluate_retrieval_precisions(args: argparse.Namespace) -> int:
    """``evaluate FOLDER --precision``: exact search with each precision's codes (and rescoring), one table."""
    from ..evaluation.beir import read_beir
    from ..evaluation.modes import plan_modes
    from ..evaluation.precision import evaluate_retrieval_precisions, format_retrieval_precision_table

    precisions, calibration = _precision_options(args)
    parts = [n.strip() for n in args.rescore.split(",")]
    rescore = [parse_int(n) for n in parts] if any(parts) else []  # ("40,,100" dropped the empty one unread)
    if None in rescore:
        raise OptionError(f"--rescore takes comma-separated positive integers, got {args.rescore!r}")
    if not rescore or any(n < 1 for n in rescore):  # ('' asked for rescoring and got none, without a word)
        raise OptionError(f"--rescore takes positive integers, got {args.rescore!r}")
    common.refuse_flags(
        "with --precision (the model's own pooling, truncated documents)",
        ("--pooling", _given(args, "pooling")), ("--modes", _given(args, "modes")),
    )  # fmt: skip
    common.refuse_flags("with --precision on a BEIR folder (it draws no chart)", ("--plot", args.plot is not None))
    _refuse_unused_options(args, plan_modes("truncate"))
    data = read_beir(args.pairs, args.split)
    encoder = _dense_encoder(args, precisions)  # a sparse model: float32 only (dot product of its rows)
    rows, used = evaluate_retrieval_precisions(
        data, encoder, precisions, calibration=calibration, calibration_size=args.calibration_size,
        rescore=rescore, query_prompt=common.prompt_text(args, encoder), **_runs(args),
    )  # fmt: skip
    report = {"model": str(encoder.model_path), "folder": str(args.pairs), "documents": len(data.doc_ids),
              "queries": len(data.query_ids), "precision": {row.name: row.as_dict() for row in rows},
              "calibration": None if used is None else used.to_dict()}  # fmt: skip
    table = format_retrieval_precision_table(rows, _ranges_source(args, used, "documents"))
    _show(args, report, f"{display_name(encoder)}: {_counts(data)} from {args.pairs}", table)
    return 0


def _evaluate_runtimes(args: argparse.Namespace, files: list[str]) -> int:
    """``--onnx-file A --onnx-file B``: the same table per runtime, with each one's cosines to the first."""
    from ..evaluation.modes import plan_modes
    from ..evaluation.runtimes import compare_pairs, compare_retrieval, format_runtime_table

    common.refuse_flags(
        "when comparing runtimes (the model's own pooling, truncated documents; --prompt TEXT sets the query "
        "prompt)",
        ("--pooling", _given(args, "pooling")), ("--modes", _given(args, "modes")),
        ("--precision", args.precision is not None), ("--calibration", args.calibration is not None),
        ("--plot", args.plot is not None), ("--prompt-name", args.prompt_name is not None),
    )  # fmt: skip
    _refuse_unused_options(args, plan_modes("truncate") if _is_folder(args) else None)
    variants = ([("torch", None)] if args.runtime == "torch" else []) + [(f"onnx:{f}", f) for f in files]
    loaders = [
        (name, functools.partial(_encoder, args, runtime="torch" if file is None else "onnx", onnx_file=file))
        for name, file in variants
    ]
    if _is_folder(args):
        from ..evaluation.beir import read_beir

        data = read_beir(args.pairs, args.split)
        rows = compare_retrieval(loaders, data, query_prompt=args.prompt, **_runs(args))
        what, count = "document", _counts(data)
    else:
        from ..evaluation.sts import check_scorable, read_pairs

        pairs = read_pairs(args.pairs)
        check_scorable(pairs, where(args.pairs))
        rows = compare_pairs(loaders, pairs, prompt=args.prompt, **_runs(args))
        what, count = "sentence", f"{len(pairs)} pairs"
    from ..model.folders import bundled_model_path  # (looked up at call time: tests stand a folder in for it)

    # named as the other reports name it (the folder), not null without --model
    model = str(bundled_model_path()) if args.model is None else args.model
    report = {"model": model, "data": str(args.pairs), "runtimes": [row.as_dict() for row in rows]}
    name = display_name(SimpleNamespace(model_path=model))  # (the heading named no model: the other tables do)
    heading = f"{name}: {count} from {where(args.pairs)} (scores x100; the model's own pooling)"
    _show(args, report, heading, format_runtime_table(rows, what))
    return 0


DEFAULT_RESCORE = "40,100"


def _refuse_unread_precision_options(args: argparse.Namespace) -> None:
    """``--rescore`` (a BEIR folder, int8/ubinary in --precision) and ``--calibration-size`` (int8/uint8, no
    --calibration) refused (one line, exit 2) where nothing reads them; then their defaults filled in."""
    from ..core.quantize import CALIBRATED_PRECISIONS, DEFAULT_CALIBRATION_SIZE
    from ..evaluation.precision import RESCORED_PRECISIONS, check_calibration_size, parse_precisions
    from ..model.request import unread_options

    if args.rescore is not None:
        common.refuse_flags("with a pairs file (it applies to a BEIR folder)", ("--rescore", not _is_folder(args)))
        common.refuse_flags("without --precision (it ranks int8/ubinary candidates again)", ("--rescore", args.precision is None))
    precisions = parse_precisions(args.precision) if args.precision is not None else []
    if args.rescore is not None:  # (binary, uint8, float16 rows are never rescored: it was ignored without a word)
        rescored = any(p in RESCORED_PRECISIONS for p in precisions)
        common.refuse_flags("without int8 or ubinary in --precision (it ranks their candidates again)",
                            ("--rescore", not rescored))  # fmt: skip
    calibrated = next((p for p in precisions if p in CALIBRATED_PRECISIONS), None)
    given = {"calibration_size"} if args.calibration_size is not None else set()
    common.refuse_unread(args, unread_options(given, chunks=None, precision=calibrated, calibration=args.calibration))
    if given:  # at least 2 texts, as embed checks it; no upper bound: no job records it
        check_calibration_size(args.calibration_size, precisions, args.calibration, caller="cli")
    args.rescore = DEFAULT_RESCORE if args.rescore is None else args.rescore
    args.calibration_size = DEFAULT_CALIBRATION_SIZE if args.calibration_size is None else args.calibration_size


def _is_folder(args: argparse.Namespace) -> bool:
    """Whether PAIRS|FOLDER names a BEIR folder: ``-`` is stdin, as for every command (a folder named ``-`` in
    the working directory was read instead of the pairs piped in)."""
    return args.pairs != STDIN and os.path.isdir(args.pairs)


def _given(args: argparse.Namespace, name: str) -> bool:
    """Whether --pooling / --modes asks for other than its default, read in any case as the library reads it
    ("--modes Truncate" with --precision was refused where "--modes truncate" ran)."""
    return getattr(args, name).strip().lower() != DEFAULTS[name]


def _refuse_unused_options(args: argparse.Namespace, plan: Any) -> None:
    """Retrieval options that would be ignored are refused (one line, exit 2): all of them with a pairs file
    (``plan`` None), the fusion ones without a hybrid: mode, --bm25 without BM25, --pooling when no model runs."""
    fusion = (("--rrf-k", args.rrf_k is not None), ("--hybrid-weight", args.hybrid_weight is not None))
    bm25 = ("--bm25", args.bm25 is not None)
    stride = ("--window-stride", args.window_stride is not None)
    if plan is None:
        common.refuse_flags("with a pairs file (it applies to a BEIR folder)",
                            ("--modes", _given(args, "modes")), bm25, *fusion, stride)  # fmt: skip
        return
    if not plan.hybrids:
        common.refuse_flags("without a hybrid:MODE in --modes", *fusion)
    if not plan.lexical:
        common.refuse_flags("without bm25 or a hybrid:MODE in --modes", bm25)
    if not plan.dense:
        common.refuse_flags("when only bm25 runs (no model pools anything)",
                            ("--pooling", _given(args, "pooling")))  # fmt: skip
        common.refuse_flags("when only bm25 runs (no model runs)", *_model_flags(args))
    if not any(name == "windows" or name.startswith("late-") for name in plan.dense):
        common.refuse_flags("without windows or a late-N mode in --modes (only they read windows)", stride)


def _model_flags(args: argparse.Namespace) -> list[tuple[str, bool]]:
    """(flag, given) for every flag that only the model reads: the model options away from their defaults,
    the prompts and the batching."""
    options = [(EncoderOptions.info(name).flag, getattr(args, name) != EncoderOptions.default(name))
               for name in common.MODEL_OPTIONS]  # fmt: skip
    return [*options, ("--prompt", args.prompt is not None), ("--prompt-name", args.prompt_name is not None),
            ("--batch-size", args.batch_size != BATCH_SIZE), ("--max-batch-tokens", args.max_batch_tokens is not None)]


def _check_pooling(args: argparse.Namespace) -> None:
    """Unknown ``--pooling`` names, then labels that pool no model ("mean+splade"), refused before it loads."""
    from ..evaluation.sts import label_list

    if _given(args, "pooling"):
        label_list(args.pooling, None)


def _print_scores(args: argparse.Namespace, encoder: Any, pairs: Any, scores: dict, **extra: Any) -> None:
    """The Spearman table under a line naming the model and the pairs (--json: the report, with ``extra``,
    which ``--precision`` fills), then the ``--plot`` chart."""
    from ..evaluation.sts import configured_label, format_table, plot_scores

    report = {"model": str(encoder.model_path), "pairs": len(pairs), "spearman_x100": scores,
              "configured": configured_label(scores, encoder.strategies), **extra}  # fmt: skip
    heading = f"{display_name(encoder)}: {len(pairs)} pairs from {where(args.pairs)}"
    _show(args, report, heading, format_table(scores, encoder.strategies))
    if args.plot is not None:
        title = f"{display_name(encoder)} on {os.path.basename(where(args.pairs))}"
        plot_scores(scores, args.plot, title=title, configured=encoder.strategies)


def _show(args: argparse.Namespace, report: dict[str, Any], *lines: str) -> None:
    """``report`` as JSON with --json, else the ``lines`` of text."""
    print(json.dumps(report, indent=2) if args.json else "\n".join(lines))


def _ranges_source(args: argparse.Namespace, ranges: Any, what: str) -> str:
    """Where the precision table's int8/uint8 ranges come from (``ranges``: the `Calibration` used, None when
    int8/uint8 were not scored), naming the texts they were taken from (a set smaller than --calibration-size
    was headed "the first 1000")."""
    if args.calibration is not None:
        return f"calibration {args.calibration}"
    if ranges is not None:
        return f"int8/uint8 ranges from the first {ranges.texts} {what}"
    return "no calibration needed"


def _runs(args: argparse.Namespace) -> dict[str, Any]:
    """How the model runs: texts and padded tokens per forward pass, a progress bar on a terminal."""
    progress = sys.stderr.isatty()
    return {"batch_size": args.batch_size, "max_batch_tokens": args.max_batch_tokens, "progress": progress}


def _counts(data: Any) -> str:
    return f"{len(data.doc_ids)} documents, {len(data.query_ids)} queries"


def _precision_options(args: argparse.Namespace) -> tuple[list[str], Any]:
    """(precisions, calibration or None) of ``--precision`` / ``--calibration``, checked before a model loads."""
    from ..core.quantize import CALIBRATED_PRECISIONS, Calibration
    from ..evaluation.precision import parse_precisions

    precisions = parse_precisions(args.precision or "float32")
    if args.calibration is None:
        return precisions, None
    if not any(p in CALIBRATED_PRECISIONS for p in precisions):
        raise OptionError("--calibration is for --precision int8 or uint8")
    return precisions, Calibration.load(args.calibration)


def _encoder(args: argparse.Namespace, **overrides: Any) -> Any:
    """The encoder of the command line, pooling as the model is configured (--pooling: what is scored)."""
    return common.build_encoder(EncoderOptions.from_mapping(args, pooling="auto", **overrides))


def _dense_encoder(args: argparse.Namespace, precisions: list[str]) -> Any:
    """The encoder, refused when it is sparse (SPLADE) and ``precisions`` go beyond float32."""
    encoder = _encoder(args)
    if encoder.is_sparse and precisions != ["float32"]:
        raise OptionError(f"--precision {args.precision} is for dense models; {display_name(encoder)} is a "
                          "sparse (SPLADE) model")
    return encoder

