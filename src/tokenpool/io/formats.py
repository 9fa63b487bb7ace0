"""Which reader or writer a path gets (by ``--format`` or by suffix), and the CLI texts, all derived from
`READERS` and `WRITERS`; importing it loads neither numpy nor pyarrow (``--help`` stays fast).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import CorpusError, shown_name
from .readers import COMPRESSION_SUFFIXES, READERS, STDIN, STDIN_FORMAT, TEXT_KEY, Reader, where
from .writers import WRITERS, Writer

__all__ = ["READERS", "WRITERS", "Reader", "Writer", "format_for_suffix", "input_format", "output_format",
           "input_choices", "input_help", "output_help", "text_option_help", "check_text_options"]  # fmt: skip


def format_for_suffix(path: str, registry: Mapping[str, Any]) -> str | None:
    """The name of the entry of ``registry`` (`READERS` or `WRITERS`) whose suffixes hold ``path``'s, else None.
    The suffix is what follows the name's last dot, also in a name starting with one (``.npy``, which
    `os.path.splitext` reads as a hidden file without a suffix)."""
    name = os.path.basename(str(path))
    suffix = "." + name.rpartition(".")[2].lower() if "." in name else ""
    return next((name for name, entry in registry.items() if suffix in entry.suffixes), None)


def input_format(path: str, override: str | None = None) -> str:
    """The reader for ``path``: ``override`` if given, else its suffix (stdin defaults to txt)."""
    if override is not None:
        if override not in READERS:
            raise CorpusError(f"unknown input format {override!r}; choose one of {', '.join(READERS)}")
        return override
    if path == STDIN:
        return STDIN_FORMAT
    fmt = format_for_suffix(path, READERS)
    packed = next((suffix for suffix in COMPRESSION_SUFFIXES if str(path).lower().endswith(suffix)), None)
    if packed is not None:
        raise CorpusError(f"{where(path)}: cannot tell the input format of a compressed ({packed}) file; decompress "
                          f"it first (only `tokenpool embed --ray` reads compressed input)")  # fmt: skip
    if fmt is None:
        raise CorpusError(
            f"{where(path)}: cannot tell the input format from its name; use a {_or(_main_suffixes(READERS))} file, "
            f"or pass --format"
        )
    return fmt


def output_format(path: str) -> str:
    """The writer for ``path``, from its suffix."""
    fmt = format_for_suffix(path, WRITERS)
    if fmt is None:
        raise CorpusError(f"{shown_name(str(path))}: unsupported output type; name the output {_or(_main_suffixes(WRITERS))}")
    return fmt


def input_choices() -> tuple[str, ...]:
    """The ``--format`` choices: every reader's name."""
    return tuple(READERS)


def input_help() -> str:
    """``a .txt (one text per line), .jsonl, .csv, .tsv or .parquet file`` (the INPUT argument's help)."""
    shown = [
        f"{reader.suffixes[0]} ({reader.description})" if reader.description else reader.suffixes[0]
        for reader in READERS.values()
    ]
    return f"a {_or(shown)} file"


def output_help() -> str:
    """``.npy, .parquet, .jsonl or .npz`` (the OUT option's help)."""
    return _or(_main_suffixes(WRITERS))


def text_option_help(option: str) -> str:
    """The suffixes whose text ``option`` (``field`` or ``column``) picks, e.g. ``.csv/.tsv/.parquet``."""
    return "/".join(reader.suffixes[0] for reader in READERS.values() if reader.text_option == option)


def check_text_options(path: str, fmt: str, *, field: str = TEXT_KEY, column: str = TEXT_KEY) -> None:
    """`CorpusError` naming the option when ``field`` or ``column`` is given (other than the default ``text``) for
    input of format ``fmt`` whose text that option does not pick (`Reader.text_option`): it would be ignored."""
    reader = READERS[fmt]
    # how the format's records give their text: ", whose text --column picks" or " (one text per line)"
    how = f", whose text --{reader.text_option} picks" if reader.text_option else f" ({reader.description})"
    for option, value in (("field", field), ("column", column)):
        if value != TEXT_KEY and reader.text_option != option:
            raise CorpusError(
                f"--{option} {value} picks the text of {text_option_help(option)} input; {where(path)} is read as "
                f"{fmt}{how}"
            )


def _main_suffixes(registry: Mapping[str, Reader] | Mapping[str, Writer]) -> list[str]:
    return [entry.suffixes[0] for entry in registry.values()]


def _or(items: Iterable[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"
