"""Stop 47, the Encoder facade and its Ray integration: bugs found by hunting, one test each."""

from __future__ import annotations

import pytest

pa = pytest.importorskip("pyarrow")
pytest.importorskip("transformers")

from tokenpool.integrations.ray import EmbedBatch  # noqa: E402
from tokenpool.model.options import EncoderOptions  # noqa: E402
from tokenpool.model.request import EncodeRequest  # noqa: E402


@pytest.mark.parametrize(
    ("request_fields", "output_column", "order_column", "clash"),
    [
        ({}, "embedding", "embedding", "embedding"),  # the vectors were replaced by the row positions
        ({"chunks": "tokens:4"}, "doc", None, "doc"),  # the chunk rows' doc numbers were replaced by the vectors
        ({"chunks": "tokens:4"}, "chunk", "pos", "chunk"),
        ({"chunks": "tokens:4"}, "pos_last", "pos", "pos_last"),
        ({"output": "tokens"}, "n_tokens", None, "n_tokens"),
        ({"output": "tokens"}, "embedding", "token_ids", "token_ids"),  # the token ids were replaced
    ],
)
def test_ray_refuses_an_output_or_order_column_named_as_another_column_it_writes(
    tiny_bert_folder, request_fields, output_column, order_column, clash
):
    embed = EmbedBatch("text", output_column, EncoderOptions(model=str(tiny_bert_folder)),
                       EncodeRequest(**request_fields), order_column=order_column)  # fmt: skip
    with pytest.raises(ValueError, match=f"order_column '{clash}' names a column the job already writes"):
        embed(pa.table({"text": ["a b c", "d"]}))


def test_ray_keeps_an_order_column_named_id_on_pooled_rows(tiny_bert_folder):
    """The pooled rows' own ``id`` (dropped: the input's columns say which row) took the order column with it."""
    embed = EmbedBatch("text", "embedding", EncoderOptions(model=str(tiny_bert_folder)), EncodeRequest(),
                       order_column="id")  # fmt: skip
    table = embed(pa.table({"text": ["a b c", "d"]}))
    assert table.column_names == ["text", "id", "embedding"]
    assert table.column("id").to_pylist() == [0, 1]
