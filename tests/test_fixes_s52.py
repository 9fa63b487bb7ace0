"""Stop 52, defects left by earlier bug hunts: a sparse Encoder's truncate_dim, CSV files with old-Mac line
endings, Ray's text field beside a struct, ``--id-field`` with and without Ray, the sparse helper's batch_size,
``unpack``'s pad value, LlamaIndex's batch of one str, and the warm-blocks bench test. Each test failed before its
fix."""

from __future__ import annotations

import re

import pytest

# ------------------------------------------------------------------ 1. truncate_dim on a sparse (SPLADE) Encoder


@pytest.fixture(scope="module")
def splade_folder(tmp_path_factory):
    from tinymodels import bert_folder

    return bert_folder(tmp_path_factory.mktemp("splade"), mlm=True)


@pytest.fixture(scope="module")
def bare_mlm_folder(tmp_path_factory):
    """A bare BertForMaskedLM (no sentence-transformers files): SPLADE only with ``pooling="splade"``."""
    from tinymodels import bert_weights

    return bert_weights(tmp_path_factory.mktemp("mlm"), mlm=True)


def test_a_sparse_encoder_with_truncate_dim_is_refused_at_construction(splade_folder, bare_mlm_folder):
    """``Encoder(splade, truncate_dim=8)`` was built and said ``dimension == 8``, though every encode refused the
    cut (rows of a sparse model are vocabulary-wide). The construction now refuses, with the encode's message."""
    from tokenpool import Encoder
    from tokenpool.errors import OptionError

    for folder, pooling in ((splade_folder, "auto"), (bare_mlm_folder, "splade")):
        with pytest.raises(OptionError, match=r"^truncate_dim=8 does not apply to a sparse \(SPLADE\) model \(.*"
                                              r"\): its rows are vocabulary-wide$"):  # fmt: skip
            Encoder(folder, pooling=pooling, truncate_dim=8, device="cpu")
        encoder = Encoder(folder, pooling=pooling, device="cpu")  # without it: built, vocabulary-wide rows
        assert encoder.dimension == encoder.vocab_size == 30522
        assert encoder.encode(["cats purr"]).shape == (1, 30522)


def test_a_dense_encoder_keeps_its_truncate_dim(bare_mlm_folder):
    """The refusal is for sparse rows only: the same MLM folder pooled densely (mean over hidden states) still
    takes a Matryoshka cut."""
    from tokenpool import Encoder

    encoder = Encoder(bare_mlm_folder, pooling="mean", truncate_dim=8, device="cpu")
    assert encoder.dimension == 8 and encoder.encode(["cats purr"]).shape == (1, 8)


# ------------------------------------------------------------------ 2. .csv files with old-Mac (\r) line endings


def test_a_csv_with_cr_line_endings_is_read_as_the_csv_module_reads_it(tmp_path):
    """A .csv saved with old-Mac ``\\r`` line endings was refused with Python's hint "do you need to open the file
    in universal-newline mode?". It is now read as the csv module reads a file opened with ``newline=""`` (its
    documented way): records end at ``\\r``, ``\\n`` or ``\\r\\n``, and quoted fields keep every line break."""
    import csv

    from tokenpool.io.readers import count_records, iter_records

    path = tmp_path / "mac.csv"
    path.write_bytes(b'text,id\r"a\rb",1\r"c\r\nd\ne",2\rplain,3\r\r')
    with open(path, newline="", encoding="utf-8") as fh:
        expected = [row for row in csv.reader(fh)][1:]
    expected = [row for row in expected if row]
    assert expected == [["a\rb", "1"], ["c\r\nd\ne", "2"], ["plain", "3"]]
    records = list(iter_records(str(path), "csv", extras=("id",)))
    assert [[text, *extras] for _, text, extras in records] == expected
    assert [line for line, _, _ in records] == [2, 4, 7]  # where each row starts; \r, \n and \r\n end a line
    assert count_records(str(path), "csv") == 3


def test_embed_reads_a_csv_with_cr_line_endings(run, tmp_path):
    import numpy as np

    mac, unix = tmp_path / "mac.csv", tmp_path / "unix.csv"
    mac.write_bytes(b"text\rcats purr\rdogs bark\r")
    unix.write_bytes(b"text\ncats purr\ndogs bark\n")
    for corpus in (mac, unix):
        code, _, err = run("embed", corpus, "-o", corpus.with_suffix(".npy"), "--device", "cpu")
        assert code == 0, err
    assert np.load(mac.with_suffix(".npy")).shape == (2, 384)
    np.testing.assert_array_equal(np.load(mac.with_suffix(".npy")), np.load(unix.with_suffix(".npy")))


def test_a_csv_broken_after_cr_line_endings_names_the_line(tmp_path):
    """Errors still name the file and the line (counted as the records are: at \\r too)."""
    from tokenpool.errors import CorpusError
    from tokenpool.io.readers import iter_records

    path = tmp_path / "mac.csv"
    path.write_bytes(b'text\rfine\r"open quote\rx"y\r')
    with pytest.raises(CorpusError, match=r"mac\.csv, line 3: malformed CSV"):
        list(iter_records(str(path), "csv"))


# ------------------------------------------------------------------ 3. --ray: a column "a.b" beside a struct "a"


def _first_null_by_reading(path: str, column: str) -> int | None:
    """The row `tokenpool embed` refuses as a null text (its reader: the top-level column named ``column``)."""
    from tokenpool.errors import CorpusError
    from tokenpool.io.readers import iter_records

    try:
        list(iter_records(path, "parquet", column=column))
    except CorpusError as err:
        assert f"column {column!r} is null" in str(err)
        return int(str(err).split(", row ")[1].split(":")[0])
    return None


@pytest.mark.parametrize("struct_first", [True, False])
def test_first_null_row_finds_the_column_not_a_struct_field_of_the_same_path(tmp_path, struct_first):
    """The Ray job's null check took the statistics of the first leaf whose path was "a.b": with a struct "a"
    (field "b", no nulls) before a column named "a.b" it skipped every row group and missed the null text that
    `tokenpool embed` refuses. Both now find the same row, of the top-level column "a.b"."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from tokenpool.io.readers import first_null_row

    texts = ["p", "q", "r", "s", None, "u"]
    struct = [{"b": None}, {"b": "y"}, {"b": "y"}, {"b": "y"}, {"b": "y"}, {"b": "y"}]
    for name, column, fields in (
        ("null-text.parquet", texts, [{"b": "x"}] * 6),  # the struct has no null; the column has one, row 5
        ("null-field.parquet", ["t"] * 6, struct),  # the struct's field has a null; the column none
    ):
        pairs = [("a", pa.array(fields)), ("a.b", pa.array(column))]
        table = pa.table(dict(pairs if struct_first else pairs[::-1]))
        path = str(tmp_path / name)
        pq.write_table(table, path, row_group_size=2)
        expected = _first_null_by_reading(path, "a.b")
        assert expected == (5 if name == "null-text.parquet" else None)
        assert first_null_row(pq.ParquetFile(path), "a.b") == expected, name


# ------------------------------------------------------------------ 4. --id-field with and without --ray


@pytest.mark.parametrize("rows", [[], ["--chunks", "tokens:8"], ["--token-vectors"]])
def test_embed_ray_refuses_id_field_whatever_its_value(run, monkeypatch, tmp_path, rows):
    """docs/cli.md: ``--id-field`` is not available with ``--ray`` (chunk rows keep every input column). It was
    refused only when its value differed from the default: ``--ray --id-field id`` ran. Given is given, on both
    paths: one check of whether the flag was given, as without ``--ray``."""
    from clitools import assert_one_error_line

    import tokenpool.integrations.ray as ray_integration

    calls = []
    monkeypatch.setattr(ray_integration, "embed_parquet", lambda *a, **k: calls.append((a, k)))
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a first text", "id": "a"}\n', encoding="utf-8")
    for value in ("id", "doc_id"):
        code, _, err = run("embed", source, "-o", tmp_path / "out", "--ray", *rows, "--id-field", value)
        assert_one_error_line(code, err, "--id-field is not supported with --ray")
    assert not calls
    code, _, err = run("embed", source, "-o", tmp_path / "out", "--ray", *rows)
    assert code == 0 and len(calls) == 1, err
    if not rows:  # without --ray: refused whatever its value, without the rows that read it
        for value in ("id", "doc_id"):
            code, _, err = run("embed", source, "-o", tmp_path / "out.npy", "--id-field", value)
            assert_one_error_line(code, err, "--id-field is not supported without --chunks or --token-vectors")


# ------------------------------------------------------------------ 5. sparse_functions(batch_size=...)


@pytest.fixture(scope="module")
def splade_encoder(bare_mlm_folder):
    from tokenpool import Encoder

    return Encoder(bare_mlm_folder, pooling="splade", device="cpu")


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "3"])
def test_sparse_functions_refuse_a_bad_batch_size_when_made(splade_encoder, batch_size):
    """``sparse_functions(encoder, batch_size=0)`` returned two functions that each refused at their first call
    (inside a vector store's ingestion). Refused when made now, with the message an encode gives."""
    pytest.importorskip("llama_index.core")
    from tokenpool.integrations.llama_index import sparse_functions

    with pytest.raises((ValueError, TypeError)) as at_encode:
        splade_encoder.encode_sparse(["cats purr"], batch_size=batch_size)
    with pytest.raises(type(at_encode.value), match=f"^{re.escape(str(at_encode.value))}$"):
        sparse_functions(splade_encoder, batch_size=batch_size)


def test_sparse_functions_still_encode_with_their_options(splade_encoder):
    pytest.importorskip("llama_index.core")
    from tokenpool.integrations.llama_index import sparse_functions

    document, query = sparse_functions(splade_encoder, top_k=5, batch_size=1)
    indices, values = document(["cats purr", "dogs bark"])
    # (batch_size=1 as the functions were given it: a batch of two pads "cats purr", which can move last bits)
    matrix = splade_encoder.encode_sparse(["cats purr", "dogs bark"], top_k=5, batch_size=1)
    assert [len(row) for row in indices] == [5, 5]
    assert indices == [matrix[k].indices.tolist() for k in range(2)]
    assert values == [matrix[k].data.tolist() for k in range(2)]


# ------------------------------------------------------------------ 6. unpack(pad_value=<an int past float64>)


def _as_float64(value: int) -> float | None:
    """Python's own (correctly rounded) int → float conversion: None where it overflows."""
    try:
        return float(value)
    except OverflowError:
        return None


@pytest.mark.parametrize("value", [10**400, -(10**400), 2**1024 - 2**970, 2**1024 - 2**970 - 1, -(2**1024 - 2**970 - 1)])
def test_unpack_refuses_an_int_pad_value_float64_cannot_hold(value):
    """``unpack(<float64 tokens>, cu, pad_value=10**400)`` raised Python's OverflowError (from numpy's fill): the
    check that refuses a pad value a dtype cannot hold computed float64's limit in floats, which rounded to inf.
    2**1024 - 2**970 is half a spacing past float64's largest value: it rounds to inf, one less rounds to it."""
    import numpy as np

    import tokenpool

    tokens, cu = np.arange(6, dtype=np.float64).reshape(3, 2), np.array([0, 1, 3])
    expected = _as_float64(value)
    if expected is None:
        with pytest.raises(ValueError, match=rf"^pad_value {value} is not a value of the tokens' dtype float64$"):
            tokenpool.unpack(tokens, cu, pad_value=value)
    else:
        padded, mask = tokenpool.unpack(tokens, cu, pad_value=value)
        assert padded.dtype == np.float64 and padded[0, 1].tolist() == [expected, expected]
        np.testing.assert_array_equal(padded[mask], tokens)


@pytest.mark.parametrize("dtype", ["int8", "int64", "uint64", "float16", "float32"])
def test_unpack_refuses_a_huge_int_pad_value_for_other_dtypes(dtype):
    import numpy as np

    import tokenpool

    tokens = np.zeros((3, 2), dtype=dtype)
    with pytest.raises(ValueError, match=rf"^pad_value {10**400} is not a value of the tokens' dtype {dtype}$"):
        tokenpool.unpack(tokens, np.array([0, 1, 3]), pad_value=10**400)
    largest = int(np.iinfo(dtype).max) if dtype[0] in "iu" else int(np.finfo(dtype).max)
    padded, _ = tokenpool.unpack(tokens, np.array([0, 1, 3]), pad_value=largest)  # (the largest still is one)
    assert int(padded[0, 1, 0]) == largest


def test_unpack_pads_with_an_int_as_the_fill_converts_it():
    """An int pad value goes into a float dtype as a double (numpy's fill converts it so): 2**128 - 2**103 - 1
    rounds to the double 2**128 - 2**103, half a float32 spacing past float32's largest value, so numpy's fill
    made it inf, silently (the check compared the int itself); it is refused now. Torch refused any int past
    int64 with an OverflowError ("int too big to convert"); it pads with the double now."""
    import numpy as np

    import tokenpool

    cu = np.array([0, 1, 3])
    with np.errstate(over="ignore"):
        assert np.isinf(np.float32(float(2**128 - 2**103 - 1)))  # the reference: the double, cast to float32
    with pytest.raises(ValueError, match=r"is not a value of the tokens' dtype float32$"):
        tokenpool.unpack(np.zeros((3, 2), np.float32), cu, pad_value=2**128 - 2**103 - 1)
    torch = pytest.importorskip("torch")
    padded, mask = tokenpool.unpack(torch.ones(3, 2), cu, pad_value=2**100)
    assert padded[0, 1].tolist() == [float(2**100)] * 2 and padded[mask].tolist() == [[1.0, 1.0]] * 3


# ------------------------------------------------------------------ 7. LlamaIndex: a batch that is one str


@pytest.fixture(scope="module")
def embedding(tiny_bert_folder):
    pytest.importorskip("llama_index.core")
    from tokenpool import Encoder
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    return TokenPoolEmbedding(encoder=Encoder(tiny_bert_folder, pooling="mean", max_length=32, device="cpu"))


def test_llama_index_batches_refuse_a_single_str(embedding):
    """``get_text_embedding_batch("hello")`` embedded each character (LlamaIndex's loop iterates the str): 5
    vectors for one text, without a word. A str is now a TypeError naming it, sync and async, and in the
    aggregated query embedding that iterates its queries the same way."""
    import asyncio

    calls = {
        "get_text_embedding_batch": lambda text: embedding.get_text_embedding_batch(text),
        "aget_text_embedding_batch": lambda text: asyncio.run(embedding.aget_text_embedding_batch(text)),
        "get_agg_embedding_from_queries": lambda text: embedding.get_agg_embedding_from_queries(text),
        "aget_agg_embedding_from_queries": lambda text: asyncio.run(embedding.aget_agg_embedding_from_queries(text)),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=rf"^{name} takes a list of texts .*got the str 'hello'$"):
            call("hello")


def test_llama_index_batches_still_embed_each_text(embedding):
    import asyncio

    import numpy as np

    texts = ["hello", "cats purr"]
    want = embedding.encoder.encode_documents(texts)
    np.testing.assert_allclose(embedding.get_text_embedding_batch(texts), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(asyncio.run(embedding.aget_text_embedding_batch(texts)), want, rtol=1e-5, atol=1e-6)
    queries = embedding.encoder.encode_queries(texts)
    np.testing.assert_allclose(embedding.get_agg_embedding_from_queries(texts), queries.mean(axis=0), rtol=1e-5,
                               atol=1e-6)  # fmt: skip
