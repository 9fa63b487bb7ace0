"""Stop 47, the Encoder facade and its Ray integration: bugs found by hunting, one test each."""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pytest.importorskip("transformers")

from tinymodels import bert_folder  # noqa: E402

from tokenpool import Encoder  # noqa: E402
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


def test_ray_sparse_rows_read_every_window_as_the_command_line_does(tmp_path):
    """SPLADE rows in windows mode were refused by Ray ("their rows would be truncated"), though
    `encode_sparse_rows` reads every window of an encoder in that mode, as `tokenpool embed` does."""
    splade = str(bert_folder(tmp_path / "splade", mlm=True))
    texts = [" ".join(f"word{i} tree{i % 7}" for i in range(60)), "short"]
    embed = EmbedBatch("text", "embedding", EncoderOptions(model=splade, long_documents="windows"), EncodeRequest())
    table = embed(pa.table({"text": texts}))
    whole = Encoder(splade, long_documents="windows").encode(texts)
    rows = np.zeros_like(whole)
    columns = (table.column("indices").to_pylist(), table.column("values").to_pylist())
    for i, (indices, values) in enumerate(zip(*columns, strict=True)):
        rows[i, indices] = values
    np.testing.assert_array_equal(rows, whole)
    assert np.abs(whole - Encoder(splade).encode(texts)).max() > 0.01  # the first text spans several windows


@pytest.mark.parametrize(("name", "value"), [("cache_dir", 5), ("cache_dir", b"/tmp"), ("revision", 5)])
def test_hub_options_of_another_type_are_refused_naming_them(name, value):
    """``cache_dir=5`` was taken silently with a local folder, and with a Hub id failed in pathlib ("expected str,
    bytes or os.PathLike object, not int"); ``revision=5`` was called inapplicable to a local folder."""
    with pytest.raises(TypeError, match=f"{name} must be a .* or None, got {type(value).__name__}"):
        EncoderOptions(**{name: value}).check()
    with pytest.raises(TypeError, match=f"{name} must be"):
        Encoder(**{name: value})


@pytest.mark.parametrize(
    ("texts", "options", "error"),
    [(None, {}, TypeError), (["a"], {"batch_size": 0}, ValueError), (["a"], {"prompt_name": "nope"}, ValueError)],
)
def test_iter_vector_batches_checks_its_arguments_when_called(tiny_bert_folder, texts, options, error):
    """Bad texts or options came back as a generator that raised only at its first batch, away from the call
    (iter_token_batches raised at once)."""
    encoder = Encoder(tiny_bert_folder)
    with pytest.raises(error):
        encoder.iter_vector_batches(texts, **options)


@pytest.mark.parametrize("output, long_documents", [("tokens", "truncate"), ("tokens", "windows"),
                                                    ("vectors", "windows")])  # fmt: skip
def test_the_progress_bar_moves_one_document_at_a_time(tiny_bert_folder, monkeypatch, output, long_documents):
    """show_progress_bar had no effect with output="tokens", and a windows-mode bar jumped from 0 to N at the end;
    the bar now moves as each document's windows are done, to N."""
    import contextlib

    import tokenpool.model.encoder as encoder_module

    steps: list[int] = []

    @contextlib.contextmanager
    def recording(total, show, batch_size, desc="Encoding"):
        assert show is True and total == 5
        yield steps.append

    monkeypatch.setattr(encoder_module, "progress", recording)
    encoder = Encoder(tiny_bert_folder, device="cpu", long_documents=long_documents)
    texts = ["a short one", "two words " * 40, "three", "four " * 90, "five"]
    result = encoder.encode(texts, output=output, batch_size=2, show_progress_bar=True)
    assert len(result) == 5 and steps == [1] * 5
