"""``tokenpool export-onnx``: export a model folder once for the onnx runtime (needs torch + transformers), and
make optimised / int8 variants of an export (needs onnx + onnxruntime only), with their quality measured."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import CorpusError, OptionError, option_value, parse_number, refuse_empty_model
from ..io.formats import check_text_options, input_format
from ..io.readers import STDIN, iter_records, where
from ..model.folders import check_files, resolve_model_path, transformer_dir
from .common import add_text_options, positive_int


def add_parser(commands: Any) -> None:
    export = commands.add_parser(
        "export-onnx",
        help="export a model folder to ONNX for --runtime onnx (optionally optimised / int8)",
        description="Export the transformers model of a folder to ONNX (eager attention, dynamic batch and "
        "length), once. By default the file goes to the cache where --runtime onnx looks for it "
        "($TOKENPOOL_CACHE, default ~/.cache/tokenpool); --into-folder writes the Transformer module's onnx/ "
        "(FOLDER/onnx/, or FOLDER/0_Transformer/onnx/ where modules.json keeps it there) instead. --optimize and "
        "--quantize int8 make a variant of the export "
        "(model_opt.onnx, model_qint8.onnx, ...; run it with --runtime onnx --onnx-file NAME), score it against "
        "the fp32 file and write how it was made and its quality beside it (FILE.json). Prints the path written. "
        "Never replaces a file.",
    )
    export.add_argument("model", nargs="?", metavar="FOLDER", help="model folder (default: the bundled model)")
    where = export.add_mutually_exclusive_group()
    where.add_argument(
        "--into-folder", action="store_true",
        help="write into the Transformer module's onnx/, FOLDER/onnx/ as a rule (never replaces an existing file)",
    )
    where.add_argument("--output", metavar="FILE", help="write the ONNX file here (must not exist)")
    export.add_argument(
        "--trust-remote-code", action="store_true",
        help="let transformers run the Python code a folder's auto_map names, to export it (refused otherwise)",
    )  # fmt: skip
    export.set_defaults(func=run_export, variant_only=_add_variant_options(export))


def _add_variant_options(export: argparse.ArgumentParser) -> tuple[tuple[str, Any], ...]:
    """The variant options' group; returns (dest, default) of those that apply to a variant only (any value but
    their default is refused without --optimize / --quantize)."""
    variant = export.add_argument_group("optimised and int8 variants (onnx + onnxruntime, no torch needed)")
    only: list[argparse.Action] = []  # the flags that apply to a variant only (any value but their default)

    def variant_only(*flags: str, **options: Any) -> None:
        only.append(variant.add_argument(*flags, **options))

    variant_only(
        "--onnx-file", metavar="FILE",
        help="start from this fp32 ONNX file (a path or a name in FOLDER/onnx/ or the cache) instead of the "
        "folder's onnx/model.onnx or cached export (exported now when there is none: needs torch)",
    )  # fmt: skip
    variant.add_argument(
        "--optimize", action="store_true", help="fuse the graph with onnxruntime's transformer optimiser (fp32)"
    )
    variant.add_argument("--quantize", choices=["int8"], help="int8 weights, one scale per output channel")
    variant_only(
        "--activations", choices=["dynamic", "static"], default="dynamic",
        help="int8 activations: quantised per batch at run time (dynamic, default) or with ranges calibrated "
        "on --calibration-texts (static, QDQ)",
    )  # fmt: skip
    variant_only(
        "--calibration-texts", metavar="FILE",
        help="texts (.txt one per line, .jsonl, .csv, .tsv, .parquet; - for stdin) the int8 model is scored on against "
        "fp32 (and calibrated on, for static activations); required with --quantize",
    )  # fmt: skip
    add_text_options(variant_only, "format of --calibration-texts (default: from its suffix)")
    variant_only(
        "--keep-fp32", action="append", default=[], metavar="SPEC",
        help="keep these nodes in fp32 (repeatable): embeddings, softmax (the attention probabilities' path), "
        "last:N / first:N (layers), op:TYPE, or a node name glob",
    )  # fmt: skip
    variant_only(
        "--min-cosine", type=min_cosine, metavar="X",
        help="refuse an int8 model whose 1st-percentile cosine against fp32 on the calibration texts is below X "
        "(default: 0.95)",
    )  # fmt: skip
    variant_only("--force", action="store_true", help="write the variant even when it fails a check")
    variant_only("--stsb", metavar="FILE", help="also score both models on these STS pairs (Spearman)")
    variant_only("--beir", metavar="FOLDER", help="also score both models on this BEIR folder (nDCG@10)")
    variant_only(
        "--batch-size", type=positive_int, metavar="N", help="texts per pass when scoring variants (default: 32)"
    )
    return tuple((action.dest, action.default) for action in only)


def min_cosine(text: str) -> float:
    """--min-cosine's value: a number within [0, 1] (argparse type: refused before any export runs)."""
    value = parse_number(text, special=True)  # (not "٠.٩" or "0_9"; NaN fails the range)
    return option_value(value if value is not None and 0 <= value <= 1 else None, "a number within [0, 1]", text)


# the variant options an optimised fp32 graph refuses as well (Recipe, variant_min_cosine)
INT8_ONLY = ("min_cosine", "activations", "keep_fp32")


def run_export(args: argparse.Namespace) -> int:
    from ..model.configs import read_pooling_config
    from ..model.onnx_export import export_fp32, record_path

    refuse_empty_model(args.model)
    variant = {"runtime": "onnx", "onnx_file": args.onnx_file}  # (a Hub repo: its ONNX file, not its torch weights)
    root = resolve_model_path(args.model, **(variant if args.optimize or args.quantize else {}))
    folder = root / transformer_dir(root)
    if read_pooling_config(root, log_fallback=False).is_sparse:  # (the onnx runtime refuses them: no MLM logits)
        raise OptionError(f"{root} is a SPLADE folder, which runs on the torch runtime only: nothing to export")
    if args.optimize or args.quantize:
        return _run_variant(args, root, folder)
    if extra := [name for name, default in args.variant_only if getattr(args, name) != default]:
        int8 = [name for name in extra if name in INT8_ONLY]  # (what --optimize alone would refuse too)
        needs = "an int8 variant (--quantize int8)" if int8 else "a variant (--optimize or --quantize int8)"
        _refuse(int8 or extra, needs)
    check_files(folder, "nothing to export: embed with it ('tokenpool embed --runtime onnx --onnx-file {file}') "
                "or make a variant of it ('tokenpool export-onnx --onnx-file {file} --optimize')")
    target = _target(args, folder, "model.onnx")
    export_fp32(folder, target, trust_remote_code=args.trust_remote_code)
    print(target)
    print(f"  record: {record_path(target)}")
    return 0


def _refuse(names: list[str], needs: str) -> None:
    """An `OptionError` when ``names`` (argparse dests given a value) is not empty: they apply to ``needs`` only."""
    if names:
        flags = ", ".join("--" + name.replace("_", "-") for name in names)
        raise OptionError(f"{flags} {'applies' if len(names) == 1 else 'apply'} to {needs} only")


def _target(args: argparse.Namespace, folder: Any, name: str) -> Any:
    """Where the file ``name`` goes: FOLDER/onnx/, --output, or the export cache (beside its export)."""
    from ..model.onnx import cached_export_path

    if args.into_folder:
        return folder / "onnx" / name
    if args.output is not None:  # ("": refused below, not the cache)
        target = Path(args.output).expanduser()
        if target.suffix != ".onnx":
            raise OptionError(f"--output must name a .onnx file, got {args.output!r}")
        return target
    return cached_export_path(folder, writing=True).with_name(name)


def _run_variant(args: argparse.Namespace, root: Any, folder: Any) -> int:
    from ..model import onnx_export as variants
    from ..model.onnx import export_to_cache, find_onnx_file, read_model_config

    recipe = variants.Recipe(
        optimize=args.optimize, quantize=args.quantize, activations=args.activations,
        keep_fp32=tuple(args.keep_fp32),
    )  # fmt: skip
    if recipe.quantize and args.calibration_texts is None:  # refused now, not after an export of minutes
        raise OptionError("--quantize int8: quantizing needs calibration texts; pass --calibration-texts FILE")
    if args.calibration_texts is None:  # (how the calibration texts are read: nothing else reads them)
        defaults = dict(args.variant_only)
        _refuse([name for name in ("format", "field", "column") if getattr(args, name) != defaults[name]],
                "--calibration-texts")  # fmt: skip
    min_cosine = variants.variant_min_cosine(recipe, args.min_cosine)  # (None without --quantize)
    batch_size = variants.DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size
    target = _target(args, folder, recipe.file_name())
    variants.check_free(target)  # (what else make_variant refuses, refused before the export too)
    if recipe.optimize:
        variants.check_optimizable(read_model_config(folder))
    texts = [] if args.calibration_texts is None else _calibration_texts(args)
    scorers, sources = _scorers(args, batch_size)
    found = find_onnx_file(folder, args.onnx_file)
    source = found or export_to_cache(folder, trust_remote_code=args.trust_remote_code)
    step = None if found else variants.export_step(source)
    try:
        record = variants.make_variant(
            root, source, target, recipe, texts=texts, scorers=scorers,
            texts_name=_texts_name(args.calibration_texts, texts),
            sources=sources, min_cosine=min_cosine, force=args.force, batch_size=batch_size,
            source_step=step, trust_remote_code=args.trust_remote_code,
        )  # fmt: skip
    except variants.QualityRefused as refused:
        if quality := getattr(refused, "quality", None):
            print(variants.format_record({"quality": {"quantize": quality}}))
        raise
    print(target)
    print(variants.format_record(record))
    print(f"  record: {variants.record_path(target)}")
    return 0


def _calibration_texts(args: argparse.Namespace) -> list[str]:
    """--calibration-texts read as `embed` reads its input (--format, --field, --column)."""
    path = args.calibration_texts
    fmt = input_format(path, args.format)
    check_text_options(path, fmt, field=args.field, column=args.column)
    texts = [record[1] for record in iter_records(path, fmt, field=args.field, column=args.column)]
    if not texts:
        raise CorpusError(f"{where(path)}: no calibration texts")
    return texts


def _texts_name(path: str | None, texts: list[str]) -> str | None:
    """How the record names the calibration texts: their file's absolute path, or, read from stdin (``-``),
    their count and the SHA-256 of their JSON list (``json.dumps(texts)``), so that they can be recognised."""
    from ..model.onnx_export import recorded_path

    if path != STDIN:
        return None if path is None else recorded_path(path)
    return f"{where(path)}: {len(texts)} texts, sha256 {hashlib.sha256(json.dumps(texts).encode()).hexdigest()}"


def _scorers(args: argparse.Namespace, batch_size: int) -> tuple[dict[str, Any], dict[str, str]]:
    """--stsb / --beir as scorers of an encoder (their data read now, before any model work), and their names."""
    from ..evaluation.runtimes import beir_scorer, stsb_scorer
    from ..model.onnx_export import recorded_path

    kinds = {"stsb": ("stsb_spearman", stsb_scorer), "beir": ("ndcg@10", beir_scorer)}
    given = {flag: getattr(args, flag) for flag in kinds if getattr(args, flag) is not None}
    scorers = {kinds[flag][0]: kinds[flag][1](value, batch_size) for flag, value in given.items()}
    return scorers, {flag: recorded_path(value) for flag, value in given.items()}
