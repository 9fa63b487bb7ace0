"""Stop 65, ray: a spans spec as the other callers read it (case and padding), its value cut in refusals."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.data")

PADDED = " Spans" + " " * 5000  # `parse_chunks` reads it as "spans", as `Encoder.encode_chunks` and the CLI do


def test_a_padded_spans_spec_needs_its_spans_column_and_is_shown_cut(ray_session, tiny_bert_folder):
    """embed_dataset(chunks=" Spans   ...") on a dataset without the spans column: no driver check (the job
    failed later in every actor, "chunks='spans' needs one list of spans per text"); now refused up front as
    chunks="spans" is, the 5 kB spec cut in the message."""
    import pyarrow as pa
    import ray.data

    from tokenpool.integrations.ray import embed_dataset

    ds = ray.data.from_arrow(pa.table({"text": ["a b"]}))
    with pytest.raises(ValueError, match=r"needs a spans column 'marks'; columns: \['text'\]") as caught:
        embed_dataset(ds, model=tiny_bert_folder, chunks=PADDED, spans_column="marks", chunking="naive")
    assert len(str(caught.value)) < 300, len(str(caught.value))


def test_a_padded_spans_spec_checks_the_input_format_shown_cut(tmp_path):
    """embed_parquet(chunks=" Spans   ...") of a .csv: refused before Ray starts as chunks="spans" is (.jsonl or
    .parquet input only), the spec cut."""
    from tokenpool.errors import CorpusError
    from tokenpool.integrations.ray import embed_parquet

    source = tmp_path / "in.csv"
    source.write_text("text\na b\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"needs \.jsonl or \.parquet input") as caught:
        embed_parquet(str(source), str(tmp_path / "out"), chunks=PADDED, chunking="naive")
    assert len(str(caught.value)) < 300, len(str(caught.value))
    assert not (tmp_path / "out").exists()


def test_a_padded_spans_spec_takes_a_spans_column(ray_session, tiny_bert_folder):
    """spans_column given with chunks=" Spans   ...": read, not refused as "would be ignored without
    chunks='spans'" (the driver's check of the lazy dataset; no actor runs)."""
    import pyarrow as pa
    import ray.data

    from tokenpool.integrations.ray import embed_dataset

    ds = ray.data.from_arrow(pa.table({"text": ["a b"], "marks": [[[0, 1]]]}))
    embed_dataset(ds, model=tiny_bert_folder, chunks=PADDED, spans_column="marks", chunking="naive")


def test_an_actor_reads_the_spans_of_a_padded_spans_spec(tiny_bert_folder):
    """An `EmbedBatch` (called here, as an actor calls it) of chunks=" Spans   ..." read no spans column and
    failed "chunks='spans' needs one list of spans per text"; now the rows of chunks="spans"."""
    import numpy as np
    import pyarrow as pa

    from tokenpool.integrations.ray import EmbedBatch
    from tokenpool.model.options import EncoderOptions
    from tokenpool.model.request import EncodeRequest

    options = EncoderOptions(model=tiny_bert_folder, pooling="mean", device="cpu")
    batch = pa.table({"text": ["alpha beta gamma", "delta"], "marks": [[[0, 5], [6, 16]], [[0, 5]]]})
    rows = [EmbedBatch("text", "vec", options, EncodeRequest(chunks=spec, chunking="naive").check(options),
                       spans_column="marks")(batch) for spec in (PADDED, "spans")]  # fmt: skip
    assert rows[0].column("start").to_pylist() == rows[1].column("start").to_pylist() == [0, 6, 0]
    np.testing.assert_array_equal(np.stack(rows[0].column("vec").to_numpy(zero_copy_only=False)),
                                  np.stack(rows[1].column("vec").to_numpy(zero_copy_only=False)))  # fmt: skip
