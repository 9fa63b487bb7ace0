"""Ray jobs against their own documented contract: options refused on the driver, calibrations as the request
takes them (stop 57)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("transformers")

import pyarrow.parquet as pq  # noqa: E402

from tokenpool import Encoder  # noqa: E402
from tokenpool.core.quantize import quantize  # noqa: E402
from tokenpool.integrations.ray import embed_dataset, embed_parquet  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

TEXTS = ["cats purr", "dogs bark at night", "a longer sentence about pooling tokens", "x"]


@pytest.fixture(scope="module")
def dataset(ray_session):
    return ray_session.data.from_items([{"text": t} for t in TEXTS])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"output_column": 5}, "output_column must be a column name, got 5"),
        ({"output_column": ""}, "output_column must be a column name, got ''"),
        ({"column": 5}, "column must be a column name, got 5"),
    ],
)
def test_column_options_are_refused_on_the_driver(dataset, tiny_bert_folder, tmp_path, options, message):
    """``output_column=5`` ran until every actor's first batch failed deep inside pyarrow (a RayTaskError from
    the lazy dataset; from `embed_parquet` a TypeError 'expected bytes, int found'), and ``output_column=""``
    wrote a column without a name, where ``spans_column`` / ``order_column`` of the same values were refused
    when the job was built."""
    with pytest.raises(ValueError, match=f"^{message}$"):
        embed_dataset(dataset, model=str(tiny_bert_folder), **options)  # (lazy: nothing ran yet)
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=f"^{message}$"):  # before Ray runs anything (or calibrates)
        embed_parquet(str(source), str(tmp_path / "out"), model=str(tiny_bert_folder), precision="int8", **options)
    assert not (tmp_path / "out").exists()


def test_embed_parquet_takes_a_calibration_dict_as_the_request_does(dataset, tiny_bert_folder, tmp_path):
    """`EncodeRequest` (and `embed_dataset`'s actors) take a calibration as a `Calibration`, its dict or its
    file; `embed_parquet(precision="int8", calibration=<dict>)` failed with a bare TypeError ('expected str,
    bytes or os.PathLike object, not dict') naming no option. A bad dict is refused on the driver, not as an
    ActorDiedError from each actor."""
    encoder = Encoder(tiny_bert_folder, device="cpu")
    calibration = encoder.calibrate(TEXTS)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    out = tmp_path / "out"
    embed_parquet(str(source), str(out), model=str(tiny_bert_folder), precision="int8",
                  calibration=calibration.to_dict(), concurrency=1)  # fmt: skip
    codes = np.array(pq.read_table(out).column("embedding").to_pylist())
    np.testing.assert_array_equal(codes, quantize(encoder.encode(TEXTS), "int8", calibration))
    assert json.loads((tmp_path / "out.calibration.json").read_text()) == json.loads(calibration.to_json())
    with pytest.raises(ValueError, match="not a tokenpool calibration"):
        embed_dataset(dataset, model=str(tiny_bert_folder), precision="int8", calibration={"minimum": [0.0]})


def test_an_lz4_input_is_read_by_its_inner_format(ray_session, tiny_bert_folder, tmp_path):
    """Ray's readers decompress every suffix pyarrow's ``Codec.detect`` knows (.gz, .bz2, .zst, .lz4), but the
    format was named without .gz/.zst/.bz2 only: ``in.jsonl.lz4`` was read as parquet ('Parquet magic bytes not
    found'), where docs/cli.md says a compression suffix is ignored."""
    import pyarrow as pa

    source = tmp_path / "in.jsonl.lz4"
    with pa.CompressedOutputStream(str(source), "lz4") as fh:
        fh.write("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(TEXTS)).encode())
    embed_parquet(str(source), str(tmp_path / "out"), model=str(tiny_bert_folder), concurrency=1)
    table = pq.read_table(tmp_path / "out")
    assert table.column("n").to_pylist() == list(range(len(TEXTS)))
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(vectors, Encoder(tiny_bert_folder, device="cpu").encode(TEXTS), atol=1e-6)


@pytest.mark.parametrize("flags", [["--chunks", "tokens:3:1"], ["--token-vectors"]], ids=["chunks", "tokens"])
def test_a_sparse_models_chunk_and_token_rows_are_the_command_lines(run, tmp_path_factory, tmp_path, flags):
    """`tokenpool embed` writes a SPLADE model's chunk rows and token lists (float32, vocabulary-wide); Ray's
    actors refused both ("not supported for sparse (SPLADE) models with Ray"), where the issue asks Ray for the
    command line's columns and values."""
    import pyarrow as pa
    from tinymodels import bert_folder

    from tokenpool.integrations.ray import EmbedBatch
    from tokenpool.model.options import EncoderOptions
    from tokenpool.model.request import EncodeRequest

    splade = bert_folder(tmp_path_factory.mktemp("splade57"), mlm=True)
    source, out = tmp_path / "in.jsonl", tmp_path / "out.parquet"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    code, _, err = run("embed", source, "-o", out, "--model", splade, "-q", *flags)
    assert code == 0, err
    expected = pq.read_table(out)
    chunks = flags[0] == "--chunks"
    request = EncodeRequest(chunks=flags[1]) if chunks else EncodeRequest(output="tokens")
    array = "embedding" if chunks else "token_embeddings"
    got = EmbedBatch("text", array, EncoderOptions(model=str(splade)), request)(pa.table({"text": TEXTS}))
    for name in expected.column_names:
        assert got.schema.field(name).type == expected.schema.field(name).type, name
        if name == array:
            for mine, theirs in zip(got.column(name).to_pylist(), expected.column(name).to_pylist(), strict=True):
                np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), atol=1e-5)
        else:
            assert got.column(name).to_pylist() == expected.column(name).to_pylist(), name


def test_ray_refusals_that_need_the_model_name_the_flags_typed(run, ray_session, tiny_bert_folder, tmp_path):
    """`tokenpool embed --ray --dim N` above the model's width is refused in the actors, which named the Python
    parameter (``truncate_dim=…``): `embed_parquet` built its request as a Python caller's. The CLI now passes
    ``caller="cli"``, so the one error line names ``--dim`` as `tokenpool embed` without --ray does."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a"}\n', encoding="utf-8")
    width = Encoder(tiny_bert_folder, device="cpu").dimension
    flags = ["--model", tiny_bert_folder, "--dim", str(width + 8)]
    code, _, plain = run("embed", source, "-o", tmp_path / "plain.parquet", *flags)
    assert code == 2 and "--dim" in plain, plain
    said = plain.strip().split("error: ", 1)[1]  # "--dim must be an int in 1..W (...), got W+8"
    code, _, err = run("embed", source, "-o", tmp_path / "out", *flags, "--ray")
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert said in line and "truncate_dim" not in line, line
