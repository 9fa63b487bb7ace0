"""What every command shares: the one-line-error parser, option groups derived from `EncoderOptions`, the
Encoder builder and the one place that maps an exception to an exit status. Only argparse (and the light
`tokenpool.errors` and `tokenpool.model.options`) is imported here: ``tokenpool --help`` answers fast."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ..errors import (
    LINE_ENDS,
    OptionError,
    classify,
    env_flag,
    install_hint,
    one_line,
    option_value,
    parse_int,
    parse_number,
)
from ..model.options import EncoderOptions, spelled_as

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def usage_error(prog: str, message: str) -> NoReturn:
    """End with the one-line usage error ``PROG: error: MESSAGE (see PROG --help)``, exit status 2."""
    sys.stderr.write(f"{prog}: error: {message.translate(LINE_ENDS)} (see {prog} --help)\n")
    sys.exit(EXIT_USAGE)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``tokenpool embed: error: ...``) instead of usage + error, and full option
    names only: a prefix (``--norm``) would change its meaning, without a word, once another option shares it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str) -> NoReturn:
        usage_error(self.prog, message)

    def _print_message(self, message: str, file: Any = None) -> None:
        """--help / --version as argparse prints them, but a failed write (a full disk) is the command's one error
        line, exit 2, as for its output (`flush_stdout`): argparse ignored it (exit 0, or 120 at exit)."""
        try:
            (file or sys.stderr).write(message)
            flush_stdout()
        except BrokenPipeError:  # a reader gone (``| head -1``): no error
            to_null(sys.stdout)
        except OSError as exc:
            sys.stderr.write(f"{self.prog}: error: {exc}\n")
            sys.exit(EXIT_USAGE)

    def flags(self) -> dict[str, str]:
        """Each option's parameter (its dest) → its long flag: how the command's messages name a parameter
        (`tokenpool.model.options.spelled_as`)."""
        return {action.dest: next(f for f in action.option_strings if f.startswith("--"))
                for action in self._actions if any(f.startswith("--") for f in action.option_strings)}  # fmt: skip


def int_in(kind: str, minimum: int, maximum: float = float("inf")) -> Callable[[str], int]:
    """An argparse type: an integer (ASCII digits, optional sign: `parse_int`) in [minimum, maximum], else the
    error "expected KIND, got 'TEXT'"."""

    def parse(text: str) -> int:
        value = parse_int(text)
        in_range = value is not None and minimum <= value <= maximum
        return option_value(value if in_range else None, kind, text)

    return parse


positive_int = int_in("a positive integer", 1)


def non_negative_number(text: str) -> float:
    """A finite number >= 0, e.g. seconds or milliseconds (argparse type)."""
    value = parse_number(text, special=True)
    if value is not None and not 0 <= value < float("inf"):  # (-1, inf, nan)
        return option_value(None, "a finite number >= 0", text)
    return option_value(value, "a number >= 0", text)


def utf8_text(text: str) -> str:
    """Text refused when it holds bytes that are not UTF-8 (lone surrogates), naming the first one, instead of
    failing inside the tokenizer after the model loaded (argparse type)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate U+{code:04X}"
        raise argparse.ArgumentTypeError(f"expected UTF-8 text, got {what} at character {exc.start + 1}") from None
    return text


def add_encoder_options(group: Any, names: Sequence[str]) -> None:
    """Add the command-line flags of these `EncoderOptions` fields to ``group`` (help text from the options)."""
    kind = {"bool": {"action": argparse.BooleanOptionalAction}, "positive_int": {"type": positive_int}}
    for name in names:
        info = EncoderOptions.info(name)
        given = {"metavar": info.metavar, "choices": info.choices}
        group.add_argument(info.flag, dest=name, help=info.help, default=EncoderOptions.default(name),
                           **kind.get(info.kind, {}), **{k: v for k, v in given.items() if v is not None})


def add_text_options(add: Callable[..., Any], format_help: str) -> None:
    """--format, --field and --column: how a file of texts is read (``add`` adds one argument, e.g. a group's
    ``add_argument``); every command that reads texts with `tokenpool.io.readers.iter_records` offers them."""
    from ..io.formats import input_choices, text_option_help
    from ..io.readers import TEXT_KEY

    add("--format", choices=input_choices(), help=format_help)
    add("--field", default=TEXT_KEY, help=f"JSON field holding the text in {text_option_help('field')} (default: text)")
    add("--column", default=TEXT_KEY, help=f"column holding the text in {text_option_help('column')} (default: text)")


# The model group every model-running command has; "pooling" flags are per command.
MODEL_OPTIONS = (
    "model", "max_length", "device", "dtype", "runtime", "onnx_file", "revision", "cache_dir",
    "trust_remote_code",
)  # fmt: skip
POOLING_OPTIONS = ("pooling", "normalize", "truncate_dim")
LONG_DOCUMENT_OPTIONS = ("long_documents", "window_stride")


def add_model_group(
    parser: argparse.ArgumentParser, *, batch_size: int, max_batch_tokens: bool = True, models_help: str | None = None
) -> None:
    """The model group: --model (repeatable with ``models_help``), --batch-size, --max-batch-tokens (unless
    the command has its own), the model options, --prompt / --prompt-name."""
    group = parser.add_argument_group("model")
    if models_help is None:
        add_encoder_options(group, MODEL_OPTIONS[:1])
    else:
        group.add_argument("--model", action="append", metavar="MODEL", help=models_help)
    group.add_argument("--batch-size", type=positive_int, default=batch_size, metavar="N",
                       help=f"texts per forward pass, at most (default: {batch_size})")  # fmt: skip
    if max_batch_tokens:
        group.add_argument("--max-batch-tokens", type=positive_int, metavar="TOKENS", help="padded tokens "
                           "per forward pass (rows x longest row; default: no limit, --batch-size rules)")
    add_encoder_options(group, MODEL_OPTIONS[1:])
    prompts = group.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", type=utf8_text, metavar="TEXT",
                         help="text prepended to every input, e.g. 'query: '")
    prompts.add_argument("--prompt-name", metavar="NAME",
                         help="a prompt from the model's config_sentence_transformers.json, e.g. query")


def refuse_flags(where: str, *flags: tuple[str, Any], error: type[Exception] | None = None) -> None:
    """Refuse the first given (flag, given) pair: "FLAG is not supported WHERE" (``error`` or OptionError)."""
    for flag, given in flags:
        if given:
            raise (error or OptionError)(f"{flag} is not supported {where}")


# `tokenpool.model.request.unread_options`' findings as flags, and what each one lacks as the refusal says it
UNREAD_FLAGS = {"chunking": "--chunking", "spans": "--spans-field", "calibration_size": "--calibration-size",
                "special_tokens": "--special-tokens"}  # fmt: skip
UNREAD_WHY = {
    "chunks": "without --chunks", "spans chunks": "without --chunks spans",
    "calibrated precision": "without --precision int8 or uint8",
    "no calibration": "with --calibration (the file fixes the ranges)", "token vectors": "without --token-vectors",
}  # fmt: skip


def refuse_unread(args: argparse.Namespace, unread: list[tuple[str, str]]) -> None:
    """The first of `unread_options`' findings as a one-line refusal (a --x/--no-x switch as given)."""
    for name, lacks in unread:
        switch = "--no-" if getattr(args, name, None) is False else "--"
        flag = switch + UNREAD_FLAGS[name].removeprefix("--")
        refuse_flags(UNREAD_WHY[lacks], (flag, True))


def build_encoder(options: EncoderOptions) -> Any:
    """The Encoder for ``options``, with transformers' own progress bars off (commands draw their own)."""
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    from ..model.encoder import Encoder

    return Encoder.from_options(options, caller="cli")


def prompt_text(args: argparse.Namespace, encoder: Any) -> str | None:
    """The prompt text of ``--prompt``, or of the model's prompt named by ``--prompt-name`` (None: neither)."""
    if args.prompt_name is None:
        return args.prompt
    from ..model.texts import resolve_prompt

    return resolve_prompt(encoder.config, None, args.prompt_name)


def log(message: str) -> None:
    """A note on stderr, one line as an error is (a line end in a name, ``-o $'x\\ny.npy'``, as Python escapes it)."""
    print(f"tokenpool: {message.translate(LINE_ENDS)}", file=sys.stderr)


def to_null(stream: Any) -> Any:
    """After a write that cannot succeed (a reader gone, a full disk): ``stream``'s descriptor goes to the null
    device, so that what it still buffers and writes later go somewhere; returns the stream to write to."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # a stream without a descriptor: its writes are dropped
        return open(os.devnull, "w")  # noqa: SIM115 - lives as long as the command
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)
    return stream


def flush_stdout(strict: bool = True) -> None:
    """Write out what stdout holds: a reader that went away (``| head -1``) is no error, the rest goes to the null
    device (`to_null`); another failure (a full disk) is raised (``strict``), else left to Python's exit."""
    try:
        if sys.stdout is not None:  # (None: started with stdout closed)
            sys.stdout.flush()
    except BrokenPipeError:
        to_null(sys.stdout)
    except OSError:
        if strict:
            to_null(sys.stdout)  # (said once, by the command's one failure line)
            raise


class KeptStderr:
    """``sys.stderr`` while a command runs: a reader that goes away (``2>&1 | head``), a full disk or a terminal gone
    (EIO) must neither end a job nor change the exit status; what is left to write goes to `to_null`. A descriptor
    left non-blocking by whoever started us (a full pipe: BlockingIOError) is waited for, not dropped."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        try:  # non-blocking: written as bytes, each write waiting for room
            self._waits = not os.get_blocking(stream.fileno()) and hasattr(stream, "buffer")
        except (AttributeError, OSError, ValueError):
            self._waits = False

    def write(self, text: str) -> int:
        try:
            if not self._waits:
                return self._stream.write(text)
            self._waiting(self._stream.flush)  # (what the stream holds comes first; it keeps it while it blocks)
            data = text.encode(self._stream.encoding, self._stream.errors or "strict")
            while data:
                data = data[self._waiting(os.write, self._stream.fileno(), data) :]
        except OSError:
            self._stream, self._waits = to_null(self._stream), False
        return len(text)

    def _waiting(self, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)``, retried until the descriptor takes it; unless we wait, its BlockingIOError is raised."""
        import select

        while True:
            try:
                return call(*args)
            except BlockingIOError:
                if not self._waits:
                    raise
                select.select([], [self._stream.fileno()], [])

    def flush(self) -> None:
        try:
            self._waiting(self._stream.flush)
        except OSError:
            self._stream, self._waits = to_null(self._stream), False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def run_command(
    command: str, call: Callable[[], Any], flags: dict[str, str] | None = None, resumable: bool = False
) -> int:
    """Run a command: bad input → one stderr line, exit 2; a failure while running → one line, exit 1.
    ``flags`` (`Parser.flags`): how its messages name the parameters the options set; ``resumable``: whether an
    interrupted run can be continued with --resume (said when it is interrupted)."""
    try:
        with spelled_as(flags or {}):
            status = int(call() or 0)
        flush_stdout()  # (what it printed: a full disk is its failure)
        return status
    except KeyboardInterrupt:
        hint = " (rerun with --resume to continue)" if resumable else ""
        print(f"tokenpool {command}: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        if env_flag("TOKENPOOL_DEBUG"):
            raise
        if classify(exc) == "bad_input":
            hint, message = install_hint(exc), one_line(exc)
            needs = f"; this command needs: {hint}" if hint and hint not in message else ""
            print(f"tokenpool {command}: error: {message}{needs}", file=sys.stderr)
            return EXIT_USAGE
        print(f"tokenpool {command}: failed: {one_line(exc)} (TOKENPOOL_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return EXIT_FAILED
