"""Integration corners (Ray, LlamaIndex) found in the stop-33 hunt."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("transformers")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from tokenpool.integrations import ray as tp_ray  # noqa: E402


def _no_calibration(*args, **kwargs):
    raise AssertionError("a calibration was computed before the job's options were checked")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency must be a positive int"),
        ({"concurrency": (2, 1)}, "concurrency must be a positive int"),
        ({"num_gpus": -1}, "num_gpus must be >= 0"),
        ({"device": "cuda"}, "needs num_gpus > 0"),
    ],
)
def test_embed_parquet_refuses_actor_options_before_calibrating(
    tiny_bert_folder, tmp_path, monkeypatch, options, message
):
    """An int8 job's actor options (concurrency, num_gpus, a CUDA device without GPUs) are refused before Ray
    starts or a calibration is computed, as its other options are (was: only once the calibration was done — a
    CUDA device then failed inside the calibration task, not with the ValueError naming num_gpus)."""
    import ray

    monkeypatch.setattr(tp_ray, "_calibration", _no_calibration)
    if not ray.is_initialized():
        monkeypatch.setattr(ray, "init", lambda *a, **k: _no_calibration())
    pq.write_table(pa.table({"text": ["a b", "c d"]}), tmp_path / "in.parquet")
    with pytest.raises(ValueError, match=message):
        tp_ray.embed_parquet(
            str(tmp_path / "in.parquet"), str(tmp_path / "out"), model=str(tiny_bert_folder), pooling="mean",
            precision="int8", **options,
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_int8_job_names_a_missing_column(tiny_bert_folder, tmp_path, ray_session):
    """An int8 job whose text column is missing says so, as a float32 job does (was: KeyError 'text' from the
    calibration sample)."""
    pq.write_table(pa.table({"body": ["a b", "c d e"]}), tmp_path / "in.parquet")
    with pytest.raises(ValueError, match=r"column 'text' not in the dataset; columns: \['body'\]"):
        tp_ray.embed_parquet(
            str(tmp_path / "in.parquet"), str(tmp_path / "out"), model=str(tiny_bert_folder), pooling="mean",
            precision="int8", concurrency=1,
        )  # fmt: skip


def test_a_dictionary_encoded_text_column_is_embedded(tiny_bert_folder):
    """A parquet column of a pandas categorical reaches the actors dictionary-encoded: its values are embedded,
    as `tokenpool embed` reads them (was: TypeError "must hold strings, got dictionary<values=string, ...>")."""
    import numpy as np

    from tokenpool import Encoder
    from tokenpool.model.options import EncoderOptions
    from tokenpool.model.request import EncodeRequest

    texts = ["a b", "c d e", "a b"]
    options = EncoderOptions(model=str(tiny_bert_folder), pooling="mean", device="cpu")
    batch = pa.table({"id": [1, 2, 3], "text": pa.array(texts).dictionary_encode()})
    out = tp_ray.EmbedBatch("text", "embedding", options, EncodeRequest(batch_size=2))(batch)
    assert out.column("text").to_pylist() == texts and out.column("id").to_pylist() == [1, 2, 3]
    reference = Encoder.from_options(options).encode(texts)
    np.testing.assert_allclose(np.array(out.column("embedding").to_pylist()), reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_csv_texts_that_look_like_numbers_stay_texts(ray_session, tmp_path, suffix):
    """A .csv/.tsv text column is read as strings, as `tokenpool embed` reads it: "123", "4.5", "true" and an
    empty field are texts (was: pyarrow's inference made the column int64/double/bool or null, and every actor
    refused it: "must hold strings, got int64")."""
    from tokenpool.io.readers import READERS

    sep = "\t" if suffix == ".tsv" else ","
    for name, texts in (("numbers", ["123", "45"]), ("mixed", ["1.5", "true", ""]), ("empty", ["", ""])):
        path = tmp_path / f"{name}{suffix}"
        path.write_text(f"id{sep}text\n" + "".join(f"{i}{sep}{t}\n" for i, t in enumerate(texts)))
        rows = sorted(tp_ray._read(str(path), "text").take_all(), key=lambda row: row["id"])
        reference = [record[1] for record in READERS[suffix[1:]].read(str(path))]
        assert [row["text"] for row in rows] == reference == texts, name


def test_txt_rows_are_the_lines_tokenpool_embed_reads(ray_session, tmp_path):
    """A .txt input is split at "\\n" only, as `tokenpool embed` splits it, so row i stays line i+1 (was: Ray's
    read_text also split at form feeds, U+2028, U+0085 and a lone "\\r", and kept a byte-order mark)."""
    from tokenpool.io.readers import READERS

    lines = ["\ufeffpage one\x0cpage two", "a\u2028b\x85c", "", "lone\rreturn", "crlf", "last"]
    path = tmp_path / "in.txt"
    path.write_bytes("\n".join(lines[:4]).encode() + b"\n" + b"crlf\r\nlast")
    reference = [record[1] for record in READERS["txt"].read(str(path))]
    assert reference == [lines[0].removeprefix("\ufeff"), *lines[1:]]
    assert [row["text"] for row in tp_ray._read(str(path), "text").take_all()] == reference
    (tmp_path / "empty.txt").write_bytes(b"")
    assert tp_ray._read(str(tmp_path / "empty.txt"), "text").take_all() == []
