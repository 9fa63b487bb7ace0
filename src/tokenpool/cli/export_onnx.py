"""``tokenpool export-onnx``: export a model folder once for the onnx runtime (needs torch + transformers)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    export = commands.add_parser(
        "export-onnx",
        help="export a model folder to ONNX for --runtime onnx",
        description="Export the transformers model of a folder to ONNX (eager attention, dynamic batch and "
        "length), once. By default the file goes to the cache where --runtime onnx looks for it "
        "($TOKENPOOL_CACHE, default ~/.cache/tokenpool); --into-folder writes FOLDER/onnx/model.onnx "
        "(sentence-transformers' layout) instead. Prints the path written.",
    )
    export.add_argument(
        "model", nargs="?", metavar="FOLDER", help="model folder (default: the bundled model)"
    )
    where = export.add_mutually_exclusive_group()
    where.add_argument(
        "--into-folder",
        action="store_true",
        help="write FOLDER/onnx/model.onnx (never replaces an existing one)",
    )
    where.add_argument("--output", metavar="FILE", help="write the ONNX file here (must not exist)")
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import CorpusError, OptionError
    from ..model.folders import check_files, resolve_model_path, transformer_dir
    from ..model.onnx import cached_export_path, export_onnx

    root = resolve_model_path(args.model)
    folder = root / transformer_dir(root)
    check_files(folder)
    if args.into_folder:
        target = folder / "onnx" / "model.onnx"
    elif args.output:
        target = Path(args.output).expanduser()
        if target.suffix != ".onnx":
            raise OptionError(f"--output must name a .onnx file, got {args.output!r}")
    else:
        target = cached_export_path(folder)
    if target.exists():
        raise CorpusError(
            f"{target} already exists; tokenpool never replaces it (delete it first to re-export)"
        )
    print(export_onnx(folder, target))
    return 0
