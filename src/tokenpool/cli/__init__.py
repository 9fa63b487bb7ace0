"""The ``tokenpool`` command: one module per command (``embed``, ``evaluate``, ``inspect``, ``bench``,
``export-onnx``, ``serve``); `common` holds the shared option groups and maps exceptions to exit statuses.
Only argparse is imported up front, so ``tokenpool --help`` answers fast; bad input ends a command with one
``tokenpool <command>: error: ...`` line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
from collections.abc import Sequence

from .._version import __version__
from ..errors import shown_name
from . import bench, embed, evaluate, export_onnx, inspect, serve
from .common import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    KeptStderr,
    Parser,
    flush_stdout,
    run_command,
    usage_error,
)

COMMANDS = (embed, evaluate, inspect, bench, export_onnx, serve)


def build_parser() -> argparse.ArgumentParser:
    """The full command-line parser (used by `main` and by the docs)."""
    parser = Parser(prog="tokenpool", description="Pool transformer token outputs into sentence embeddings.")
    parser.add_argument("--version", action="version", version=f"tokenpool {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    for subparser in commands.choices.values():
        subparser.set_defaults(flags=subparser.flags())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tokenpool`` command (the console script calls it through `tokenpool.__main__.main`); returns the
    exit status."""
    if sys.stderr is None:  # started with stderr closed (2>&-): descriptor 2 becomes the null device, so that
        null = os.open(os.devnull, os.O_WRONLY)  # no file opened later takes it, and messages go nowhere
        if null != 2:
            os.dup2(null, 2)
            os.close(null)
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - lives as long as the command
    # stdout shows what its encoding cannot hold as stderr does (caf\udce9.tsv: a file name not in UTF-8):
    # printing a report that names such a file failed after the work under a strict stream
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    with contextlib.redirect_stderr(KeptStderr(sys.stderr)):  # a reader gone from stdout or stderr: no error
        try:
            return _run(list(sys.argv[1:] if argv is None else argv))
        except KeyboardInterrupt:  # before a command ran (building the parser, parsing): a command's own Ctrl-C is
            print("tokenpool: interrupted", file=sys.stderr)  # `run_command`'s, one at import `tokenpool.__main__`'s
            return EXIT_INTERRUPTED
        finally:
            flush_stdout(strict=False)


def _run(args_list: list[str]) -> int:
    if args_list and args_list[0] == "bench":  # bench parses its own arguments
        return run_command("bench", lambda: bench.run_bench(args_list[1:]))
    parser = build_parser()
    before = list(itertools.takewhile(lambda arg: arg.startswith("-") and arg != "-", args_list))
    if before and not {"-h", "--help", "--version"} & set(before):  # a command's options before it: named, not
        usage_error(parser.prog, f"unrecognized arguments: {' '.join(map(shown_name, before))}")  # their value as a command
    args, extra = parser.parse_known_args(args_list)
    if extra:  # named after the command they were given to, as its own errors are
        usage_error(f"tokenpool {args.command}", f"unrecognized arguments: {' '.join(map(shown_name, extra))}")
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    resumable = hasattr(args, "resume") and getattr(args, "ray", None) is None  # (--ray refuses --resume)
    return run_command(args.command, lambda: args.func(args), args.flags, resumable)
