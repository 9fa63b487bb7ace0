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


def test_sentence_transformers_max_seq_length_assignment_is_refused_naming_max_length(tiny_bert_folder) -> None:
    """``model.max_seq_length = 8`` is how sentence-transformers users shorten the cut; on an Encoder it set an
    attribute nothing reads, and long texts kept being cut at the built limit. It is refused, naming the option
    that does it (``max_length``), and the vectors stay those of the built limit."""
    import numpy as np
    import pytest

    from tokenpool import Encoder

    encoder = Encoder(tiny_bert_folder, pooling="mean", device="cpu")
    texts = ["a man plays the guitar " * 20, "short"]
    before = encoder.encode(texts)
    with pytest.raises(AttributeError, match=r"Encoder\.max_seq_length is fixed .* Encoder\(\.\.\., max_length=8\)"):
        encoder.max_seq_length = 8
    np.testing.assert_array_equal(encoder.encode(texts), before)
    assert not np.allclose(Encoder(tiny_bert_folder, pooling="mean", device="cpu", max_length=8).encode(texts)[0],
                           before[0])
