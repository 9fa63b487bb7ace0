"""Lead's stop-61 checks: what `tokenpool bench --help` says of a default is what the parsed options hold."""

from __future__ import annotations

from tokenpool.bench.pooling import build_parser, parse_args


def test_bench_min_length_default_is_what_its_help_says() -> None:
    """--max-length 8 with --length 64: the shortest row defaults to min(16, --max-length) = 8 (not min(16, L) =
    16, which would be longer than the longest row), as the help now says."""
    help_text = " ".join(build_parser().format_help().split())
    assert "default min(16, --max-length)" in help_text
    args = parse_args(["--length", "64", "--max-length", "8"])
    assert args.min_length == min(16, args.max_length) == 8
