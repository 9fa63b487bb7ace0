"""Stop 51 (lead): the digit rule of `errors.parse_int` where text is still read as a count (chunk specs, ONNX
keep-fp32 specs, `tokenpool bench`'s options), and `--dtype float64`, which the Encoder takes but the command line
did not offer."""

from __future__ import annotations

import numpy as np
import pytest
from clitools import assert_one_error_line

OTHER_DIGITS = ["\u0661\u0662\u0668", "\uff11\uff12\uff18", "1_28", "\u00b2"]  # Arabic-Indic, full-width, _, ²


@pytest.mark.parametrize("digits", OTHER_DIGITS)
def test_chunk_specs_take_ascii_digits_only(digits):
    """``--chunks tokens:١٢٨`` was read as tokens:128 (the spec's regex used \\d, which matches other scripts)."""
    from tokenpool.core.chunking import parse_chunks

    for spec in (f"tokens:{digits}", f"boundaries:{digits}", f"tokens:128:{digits}"):
        with pytest.raises(ValueError, match="chunks"):
            parse_chunks(spec)
    assert parse_chunks("tokens:128:16").size == 128


@pytest.mark.parametrize("digits", OTHER_DIGITS)
def test_keep_fp32_layer_counts_take_ascii_digits_only(digits):
    """``keep_fp32=["last:١"]`` passed the spec check (str.isdigit takes other scripts' digits and ²)."""
    pytest.importorskip("onnx")
    from tokenpool.errors import OptionError
    from tokenpool.model.onnx_export import Recipe

    for head in ("last", "first"):
        with pytest.raises(OptionError, match="positive layer count"):
            Recipe(quantize="int8", keep_fp32=(f"{head}:{digits}",))
    assert Recipe(quantize="int8", keep_fp32=("last:2",)).keep_fp32 == ("last:2",)


@pytest.mark.parametrize("value", ["1_0", "\u0661\u0660", " 10", "1e1"])
@pytest.mark.parametrize("flag", ["--batch", "--length", "--dim", "--repeats", "--seed", "--threads"])
def test_bench_integer_options_take_ascii_digits_only(flag, value):
    """``tokenpool bench --batch 1_0`` benchmarked 10 rows: its options used argparse's ``type=int``."""
    from tokenpool.bench.pooling import BenchError, parse_args

    with pytest.raises(BenchError, match=f"argument {flag}: expected an integer, got {value!r}"):
        parse_args([flag, value])
    assert getattr(parse_args([flag, "+8"]), flag[2:]) == 8


def test_embed_dtype_float64_is_the_encoders_float64(run, tmp_path, tiny_bert_folder):
    """``embed --dtype float64`` was refused as an invalid choice while ``Encoder(dtype="float64")`` works; its
    vectors are the float64 Encoder's (float32 output), which differ from the float32 run's."""
    from tokenpool import Encoder

    corpus = tmp_path / "in.txt"
    corpus.write_text("a cat sleeps on the mat\ndogs bark at night\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    code, _, err = run("embed", corpus, "-o", out, "--model", tiny_bert_folder, "--dtype", "float64",
                       "--device", "cpu")  # fmt: skip
    assert code == 0, err
    written = np.load(out)
    wide = Encoder(tiny_bert_folder, dtype="float64", device="cpu").encode(corpus.read_text().splitlines())
    narrow = Encoder(tiny_bert_folder, dtype="float32", device="cpu").encode(corpus.read_text().splitlines())
    assert written.dtype == np.float32
    np.testing.assert_array_equal(written, wide)
    assert not np.array_equal(written, narrow)  # (the option is not ignored)
    assert str(Encoder(tiny_bert_folder, dtype="float64", device="cpu").dtype) == "torch.float64"


def test_an_unknown_dtype_is_still_refused(run, tmp_path):
    code, _, err = run("embed", tmp_path / "in.txt", "-o", tmp_path / "o.npy", "--dtype", "float128")
    assert_one_error_line(code, err, "--dtype", "float128")


def test_sparsify_never_stores_an_explicit_zero():
    """float64 values that float32 stores as 0 (|v| <= 2^-150) were kept (above the threshold in float64) and
    stored as explicit zeros; they are no entry, while the smallest value float32 holds stays one."""
    from tokenpool.core.sparse import sparsify

    tiny = np.nextafter(2.0**-150, 1.0)  # rounds up to float32's smallest subnormal
    dense = np.array([[1e-50, 0.0, 0.5, 2.0**-150, -tiny, np.nan], [1e-60, 0.0, 0.0, 0.0, 0.0, 0.0]])
    for options in ({}, {"threshold": 1e-55}, {"top_k": 4}):
        rows = sparsify(dense, **options)
        assert not np.any(rows.values == 0), (options, rows.values)
        assert rows.indptr[2] == rows.indptr[1]  # the second row is empty
    rows = sparsify(dense)
    assert rows.indices.tolist() == [2, 4, 5]
    assert rows.values[1] == -np.float32(1.4e-45)


@pytest.mark.parametrize("value", ["1_0", "\u0661\u0660", " 10", "0x10"])
@pytest.mark.parametrize("flag", ["--padding-fraction", "--settle-ms"])
def test_bench_number_options_take_plain_decimals_only(flag, value):
    """``tokenpool bench --settle-ms ١٠`` waited 10 ms: its number options used argparse's ``type=float``."""
    from tokenpool.bench.pooling import BenchError, parse_args

    with pytest.raises(BenchError, match=f"argument {flag}: expected a number, got {value!r}"):
        parse_args([flag, value])
    assert getattr(parse_args([flag, ".5"]), flag[2:].replace("-", "_")) == 0.5


def test_an_export_record_beside_the_graph_is_not_external_weights(tmp_path):
    """``onnx_data_files`` took every file named after the graph, ``model.onnx.json`` (tokenpool export-onnx's
    record) too: the same graph with and without its record got two model ids."""
    from tokenpool.model.onnx import onnx_data_files
    from tokenpool.model.outputs import model_fingerprint

    onnx = tmp_path / "onnx"
    onnx.mkdir()
    graph = onnx / "model.onnx"
    graph.write_bytes(b"graph" * 20_000)
    alone = model_fingerprint(tmp_path)
    (onnx / "model.onnx.json").write_text("{}")
    (onnx / "model.onnx.bak").write_bytes(b"x")
    assert model_fingerprint(tmp_path) == alone
    assert onnx_data_files(graph) == []
    for name in ("model.onnx_data", "model.onnx.data"):
        (onnx / name).write_bytes(b"w" * 10)
    assert [p.name for p in onnx_data_files(graph)] == ["model.onnx_data", "model.onnx.data"]
    assert model_fingerprint(tmp_path) != alone


def test_uint64_offsets_past_int64_are_named_as_given():
    """uint64 ``cu_seqlens`` were cast to int64 before the checks: 2**64 - 1 was reported as "0 is followed by
    -1", an offset the caller never gave."""
    from tokenpool import pool_packed

    tokens = np.ones((6, 2), np.float32)
    with pytest.raises(ValueError, match=f"cu_seqlens holds {2**64 - 1}, past the 6 tokens"):
        pool_packed(tokens, np.array([0, 2**64 - 1, 6], dtype=np.uint64), "mean")
    np.testing.assert_array_equal(pool_packed(tokens, np.array([0, 2, 6], dtype=np.uint64), "mean"), np.ones((2, 2)))


@pytest.mark.parametrize("hidden_dim", [-5, 0, 3.5, "8", None, True])
def test_pool_output_dim_refuses_a_width_that_is_not_a_positive_int(hidden_dim):
    """``Pool().output_dim(-5)`` returned -5 and ``output_dim(3.5)`` 3.5: a layer sized from it failed later,
    far from the cause."""
    pytest.importorskip("torch")
    from tokenpool.torch import Pool

    with pytest.raises(ValueError, match="hidden_dim must be a positive int"):
        Pool("mean").output_dim(hidden_dim)
    assert Pool(["mean", "max"]).output_dim(8) == 16 and Pool("mean").output_dim(np.int64(4)) == 4


def test_a_llama_index_embedding_refuses_a_window_stride_it_never_reads():
    """``TokenPoolEmbedding(window_stride=10)`` (long_documents 'truncate') was accepted though no call of the
    embedding reads windows; the corpus job and Ray refuse that combination, and now so does the embedding."""
    pytest.importorskip("llama_index.core")
    from tokenpool.errors import OptionError
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    with pytest.raises(OptionError, match="window_stride=10 would be ignored"):
        TokenPoolEmbedding(window_stride=10)
    assert TokenPoolEmbedding(window_stride=10, long_documents="windows").window_stride == 10
