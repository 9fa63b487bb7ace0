"""Review of stop 57's Ray and long-document fixes: inputs next to the ones they targeted (s57 rev3)."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.errors import OptionError

pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_naive_token_chunks_whole_row_of_a_long_whitespace_text(eos_decoder):
    """e992cd1 gives a whitespace-only text with byte-level BPE tokens one row of its whole text under
    ``empty_documents="whole"``; with naive ``tokens:SIZE`` chunks a long one (41 tokens, max_length 16) was
    then refused as a chunk "over max_length ... use a smaller chunk size" (no chunk size helps), where naive
    boundary chunks give it its row. Now that row is ``encode(text)``, as for every other whole-text row."""
    text = " " * 40
    rows = eos_decoder.encode_chunks([text, "hi there"], chunks="tokens:4", chunking="naive",
                                     empty_documents="whole")  # fmt: skip
    assert rows.doc.tolist().count(0) == 1 and (rows.start[0], rows.end[0]) == (0, len(text))
    np.testing.assert_allclose(rows.vectors[0], eos_decoder.encode(text), rtol=1e-6, atol=1e-6)
    with pytest.raises(OptionError, match="^document 0: only whitespace"):  # the default mode: still an error naming it
        eos_decoder.encode_chunks([text], chunks="tokens:4", chunking="naive")


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--field", ""], "--field / --column"), (["--chunks", "spans", "--spans-field", ""], "--spans-field")],
)
def test_ray_column_refusals_name_the_flags(run, tiny_bert_folder, tmp_path, flags, named):
    """ffe5e8e refuses an empty ``column`` on the driver, naming the Python parameter; under `tokenpool embed
    --ray` (whose refusals name flags since ea43483) ``--field ''`` said "column must be a column name" (before
    ffe5e8e the reader said "no field ''; choose one with --field"), ``--spans-field ''`` "spans_column ...".
    Now the flags; nothing is written and Ray is not started."""
    pytest.importorskip("ray")
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a"}\n', encoding="utf-8")
    code, _, err = run("embed", source, "-o", tmp_path / "out", "--model", tiny_bert_folder, *flags, "--ray")
    assert code == 2 and err.strip().endswith(f"error: {named} must be a column name, got ''"), err
    assert not (tmp_path / "out").exists()
