"""Corpus readers and output writers under their former names (kept so that existing imports keep working);
they live in `tokenpool.io.readers`, `.writers` and `.formats`, `CorpusError` in `tokenpool.errors`.
"""

from __future__ import annotations

from ..errors import CorpusError
from .formats import input_format, output_format
from .readers import READERS, STDIN, check_readable, count_records, decoded_lines, iter_records, open_readable
from .writers import WRITERS, write_npy

INPUT_FORMATS = tuple(READERS)
OUTPUT_FORMATS = tuple(WRITERS)

__all__ = ["INPUT_FORMATS", "OUTPUT_FORMATS", "STDIN", "CorpusError", "check_readable", "count_records",
           "decoded_lines", "input_format", "iter_records", "open_readable", "output_format",
           "write_npy"]  # fmt: skip
