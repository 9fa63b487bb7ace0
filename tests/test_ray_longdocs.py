"""Ray Data with the long-document options, on a real local Ray: windows-mean vectors equal
`Encoder.encode(long_documents="windows")`, chunk rows (one per chunk, flat-map) equal `Encoder.encode_chunks`,
token lists equal ``encode(output="tokens")``; bad options fail on the driver with a message naming them."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("transformers")


from tokenpool import Encoder  # noqa: E402
from tokenpool.errors import OptionError  # noqa: E402
from tokenpool.integrations.ray import PART_NAME, EmbedBatch, embed_dataset, embed_parquet  # noqa: E402
from tokenpool.model.options import EncoderOptions  # noqa: E402
from tokenpool.model.request import EncodeRequest  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta:UserWarning"),
]

WORDS = ["pooling", "windows", "tokens", "chunks", "late", "naive", "documents", "spans", "stride", "budget"]
# max_length 16 (14 text tokens a window), stride 5: the longer texts are many windows
OPTIONS = {"pooling": "mean", "normalize": False, "max_length": 16, "window_stride": 5, "device": "cpu"}


def make_texts(count: int) -> list[str]:
    rng = np.random.default_rng(5)
    return [f"doc {i}: " + " ".join(rng.choice(WORDS, size=1 + (i * 11) % 45)) for i in range(count)]


TEXTS = make_texts(13)


@pytest.fixture(scope="module")
def windows(tiny) -> Encoder:
    return Encoder(tiny, long_documents="windows", **OPTIONS)


def _dataset(texts, **columns):
    items = [{"id": i, "text": t, **{k: v[i] for k, v in columns.items()}} for i, t in enumerate(texts)]
    return ray.data.from_items(items, override_num_blocks=3)


def _table(ds) -> pa.Table:
    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


def _vectors(table: pa.Table, column: str = "embedding") -> np.ndarray:
    return np.stack(table.column(column).to_numpy(zero_copy_only=False)).astype(np.float32)


@pytest.mark.usefixtures("ray_session")
def test_windows_mean_vectors_equal_the_encoders(tiny, windows):
    out = embed_dataset(
        _dataset(TEXTS), model=str(tiny), long_documents="windows", batch_size=4, max_batch_tokens=40, **OPTIONS
    )
    table = _table(out).sort_by("id")
    assert table.column("id").to_pylist() == list(range(len(TEXTS)))
    assert table.column("text").to_pylist() == TEXTS
    want = windows.encode(TEXTS)
    np.testing.assert_allclose(_vectors(table), want, rtol=0, atol=1e-6)
    truncated = Encoder(tiny, **OPTIONS).encode(TEXTS)
    assert not np.allclose(truncated[-1], want[-1], atol=1e-4)  # the option reached the actors


@pytest.mark.usefixtures("ray_session")
def test_chunk_rows_equal_encode_chunks(tiny, windows):
    out = embed_dataset(
        _dataset(TEXTS, lang=["en"] * len(TEXTS)),
        model=str(tiny),
        chunks="tokens:6:2",
        batch_size=4,
        max_batch_tokens=48,
        **OPTIONS,
    )
    table = _table(out).sort_by([("id", "ascending"), ("chunk", "ascending")])
    assert table.column_names == ["id", "lang", "doc", "chunk", "start", "end", "embedding"]  # text left out
    want = windows.encode_chunks(TEXTS, chunks="tokens:6:2")
    assert len(want) > 2 * len(TEXTS)  # documents of several chunks: rows were multiplied
    np.testing.assert_array_equal(table.column("id").to_numpy(), want.doc)
    ids = table.column("id").to_numpy()  # doc: one number per document, the same for all of its chunks
    assert all(len(set(table.column("doc").to_numpy()[ids == i])) == 1 for i in range(len(TEXTS)))
    assert len(set(table.column("doc").to_pylist())) == len(TEXTS)
    np.testing.assert_array_equal(table.column("chunk").to_numpy(), want.chunk)
    np.testing.assert_array_equal(table.column("start").to_numpy(), want.start)
    np.testing.assert_array_equal(table.column("end").to_numpy(), want.end)
    np.testing.assert_allclose(_vectors(table), want.vectors, rtol=0, atol=1e-6)


@pytest.mark.usefixtures("ray_session")
def test_naive_span_chunks_from_a_parquet_spans_column(tmp_path, tiny, windows):
    """Chunk rows from a spans column, in the input's order. The input's one block goes to the actor as two
    batches (``batch_size=4``, 6 documents) and comes back as one block, whose rows all follow each other: one
    part file, as docs/integrations.md says the job cuts a block (was, when the actors wrote their own rows: one
    part file per batch, 17 files where 1 was written for 270 rows at batch_size=16, ~15,600 per million rows at
    the default 64)."""
    texts = TEXTS[:6]
    spans = [[[0, 5], [4, len(t)]] if len(t) > 8 else [[0, len(t)]] for t in texts]
    source = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"doc_id": [f"d{i}" for i in range(6)], "body": texts, "marks": spans}), source)
    embed_parquet(
        str(source), str(tmp_path / "out"), column="body", model=str(tiny), chunks="spans", spans_column="marks",
        chunking="naive", batch_size=4, **{k: v for k, v in OPTIONS.items() if k != "window_stride"},
    )  # naive chunks read no windows: a window_stride would be refused
    parts = sorted(path.name for path in (tmp_path / "out").glob("*.parquet"))
    assert parts == [PART_NAME.format(0, 0)], parts
    table = pq.read_table(tmp_path / "out")
    assert table.column_names == ["doc_id", "doc", "chunk", "start", "end", "embedding"]
    want = windows.encode_chunks(texts, chunks="spans", spans=spans, chunking="naive")
    assert table.column("doc_id").to_pylist() == [f"d{i}" for i in want.doc]  # order kept (see test_ray_order.py)
    np.testing.assert_array_equal(table.column("start").to_numpy(), want.start)
    np.testing.assert_array_equal(table.column("end").to_numpy(), want.end)
    np.testing.assert_allclose(_vectors(table), want.vectors, rtol=0, atol=1e-6)


@pytest.mark.usefixtures("ray_session")
def test_token_lists_equal_the_encoders(tiny, windows):
    options = {k: v for k, v in OPTIONS.items() if k != "normalize"}  # token vectors are never normalised
    out = embed_dataset(
        _dataset(TEXTS), model=str(tiny), long_documents="windows", output="tokens", special_tokens=False,
        batch_size=5, **options,
    )
    table = _table(out).sort_by("id")
    assert table.schema.field("embedding").type == pa.list_(pa.list_(pa.float32(), 32))
    want = windows.encode(TEXTS, output="tokens", special_tokens=False)
    for got, expected in zip(table.column("embedding").to_pylist(), want, strict=True):
        got = np.asarray(got, dtype=np.float32)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_the_batch_callable_makes_chunk_rows_in_process(tiny, windows):
    """The per-actor class called directly: empty batches keep the schema; a bad row names its text."""
    options = EncoderOptions(model=str(tiny), long_documents="windows", **OPTIONS)
    embed = EmbedBatch("text", "vec", options, EncodeRequest(chunks="tokens:6", batch_size=4, max_batch_tokens=32))
    out = embed(pa.table({"text": TEXTS[:3], "n": [1, 2, 3]}))
    want = windows.encode_chunks(TEXTS[:3], chunks="tokens:6")
    assert out.column("n").to_pylist() == [int(d) + 1 for d in want.doc]
    np.testing.assert_allclose(_vectors(out, "vec"), want.vectors, rtol=0, atol=1e-6)
    empty = embed(pa.table({"text": pa.array([], pa.string()), "n": pa.array([], pa.int64())}))
    assert empty.num_rows == 0 and empty.schema == out.schema
    alone = embed(pa.table({"text": TEXTS[:3]}))  # only the text column: rows are the chunk columns alone
    assert alone.column_names == ["doc", "chunk", "start", "end", "vec"] and alone.num_rows == len(want.doc)
    assert alone.column("doc").to_pylist() == want.doc.tolist()  # one batch: the records' own numbers
    np.testing.assert_allclose(_vectors(alone, "vec"), want.vectors, rtol=0, atol=1e-6)
    with pytest.raises(OptionError, match=r"document text='   ': only whitespace"):
        embed(pa.table({"text": ["fine words", "   "]}))
    with pytest.raises(ValueError, match="output column 'start' already exists"):
        embed(pa.table({"text": ["a b"], "start": [1]}))
    spans = EmbedBatch("text", "vec", options, EncodeRequest(chunks="spans"), spans_column="marks")
    with pytest.raises(ValueError, match=r"needs a spans column 'marks'; columns: \['text'\]"):
        spans(pa.table({"text": ["a b"]}))


@pytest.mark.usefixtures("ray_session")
def test_bad_options_fail_on_the_driver_naming_them(tmp_path, tiny):
    ds = _dataset(["a b", "c d"])
    cases = [
        ({"long_documents": "pages"}, "long_documents must be one of"),
        ({"window_stride": 0}, "window_stride must be a positive int, got 0"),
        ({"window_stride": 8}, "window_stride=8 would be ignored: windows are read only with long_documents="),
        ({"max_batch_tokens": 0}, "max_batch_tokens must be a positive int or None, got 0"),
        ({"output": "matrix"}, "output must be one of"),
        ({"chunks": "tokens:x"}, "chunks must be 'tokens:SIZE"),
        ({"chunks": "tokens:8", "chunking": "early"}, "chunking must be one of"),
        ({"chunks": "tokens:8", "output": "tokens"}, "cannot be combined with output='tokens'"),
        ({"chunks": "tokens:8", "precision": "float16"}, "precision='float16' is not supported with chunks"),
        ({"output": "tokens", "truncate_dim": 8}, "truncate_dim=8"),
        ({"chunks": "spans"}, "needs a spans column 'spans'"),
        ({"order_column": ""}, "order_column must be a column name, got ''"),
        ({"order_column": 3}, "order_column must be a column name, got 3"),
        ({"order_column": "id"}, "output column 'id' already exists"),
        ({"spans_column": None}, "spans_column must be a column name, got None"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            embed_dataset(ds, model=str(tiny), **options)
    with pytest.raises(ValueError, match="output column 'chunk' already exists"):
        embed_dataset(_dataset(["a"], chunk=[0]), model=str(tiny), chunks="tokens:8")
    with pytest.raises(OptionError, match="chunks must be"):  # before Ray reads anything
        embed_parquet(str(tmp_path / "never-read.parquet"), str(tmp_path / "out"), chunks="sentences:3")


def test_an_option_only_the_model_can_check_fails_in_the_actors_constructor(tiny):
    """A stride is checked against the window only once the tokenizer is loaded: in each actor's constructor,
    whose error `embed_parquet` re-raises as its own type (`_user_error`, tested in test_integration_ray)."""
    options = EncoderOptions(model=str(tiny), long_documents="windows", **{**OPTIONS, "window_stride": 14})
    with pytest.raises(OptionError, match="window_stride 14 must be smaller than the window"):
        EmbedBatch("text", "embedding", options, EncodeRequest())
