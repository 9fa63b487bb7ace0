"""Ray shards with int8 codes and sparse rows, on a real local Ray: every actor uses the one calibration, so
the codes equal local quantization of the same vectors (up to the float noise of other batch compositions)."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from tinymodels import bert_folder  # noqa: E402

from tokenpool import Encoder  # noqa: E402
from tokenpool.core.quantize import quantize  # noqa: E402
from tokenpool.integrations.ray import EmbedBatch, embed_dataset  # noqa: E402
from tokenpool.model.options import EncoderOptions  # noqa: E402
from tokenpool.model.request import EncodeRequest  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta:UserWarning"),
]
WORDS = ["pooling", "masks", "padding", "tokens", "vectors", "cluster", "actors", "batches", "parquet"]


def make_texts(count: int) -> list[str]:
    rng = np.random.default_rng(11)
    return [f"row {i}: " + " ".join(rng.choice(WORDS, size=1 + (i * 5) % 30)) for i in range(count)]


@pytest.fixture(scope="module")
def local_ray(ray_session):
    """The session's local Ray (conftest.ray_session)."""
    yield


@pytest.fixture(scope="module")
def encoder(tiny) -> Encoder:
    """conftest's `tiny` model (`tinymodels.bert_folder`), loaded once for the module's local references."""
    return Encoder(tiny)


def _assert_codes_match(codes, floats, calibration):
    """Identical codes except where a float sits within float noise (1e-6 of a step) of a rounding boundary."""
    expected = quantize(floats, "int8", calibration)
    differ = codes != expected
    position = (floats.astype(np.float64) - calibration.minimum) / calibration.step
    near = np.abs(position - np.floor(position) - 0.5) < 1e-3
    assert (differ <= near).all() and (np.abs(codes.astype(int) - expected)[differ] <= 1).all()
    assert differ.mean() < 1e-3


@pytest.mark.usefixtures("local_ray")
def test_int8_shards_on_two_actors_share_one_calibration(tiny, encoder):
    texts = make_texts(90)
    calibration = encoder.calibrate(texts[:40])
    ds = ray.data.from_items([{"doc": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=4)
    out = embed_dataset(ds, model=str(tiny), precision="int8", calibration=calibration, batch_size=8,
                        concurrency=2, num_cpus=0.5)  # fmt: skip
    table = pa.concat_tables(ray.get(out.to_arrow_refs()))
    assert table.schema.field("embedding").type == pa.list_(pa.int8(), 32)
    order = np.argsort(table.column("doc").to_numpy())
    codes = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))[order]
    _assert_codes_match(codes, encoder.encode(texts), calibration)


# embed_parquet's own int8 calibration (the first rows, the sidecar, the codes): test_ray_jobs's int8_ray_job tests


def test_embed_batch_codes_with_a_given_calibration(tmp_path, tiny, encoder):
    """The per-actor class in-process: a calibration dict or file gives the local codes; ubinary = packbits."""
    texts = make_texts(20)
    calibration = encoder.calibrate(texts[:10])
    floats = encoder.encode(texts, batch_size=4)
    for precision in ("int8", "ubinary"):
        request = EncodeRequest(precision=precision, calibration=calibration.to_dict(), batch_size=4)
        embed = EmbedBatch("text", "embedding", EncoderOptions(model=str(tiny)), request)
        out = embed(pa.table({"text": texts}))
        codes = np.stack(out.column("embedding").to_numpy(zero_copy_only=False))
        np.testing.assert_array_equal(codes, quantize(floats, precision, calibration))


@pytest.mark.usefixtures("local_ray")
def test_embed_dataset_sparse_rows(tmp_path):
    texts = make_texts(24)
    splade = bert_folder(tmp_path / "splade", mlm=True)
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=3)
    table = pa.concat_tables(
        ray.get(embed_dataset(ds, model=str(splade), top_k=12, batch_size=8).to_arrow_refs())
    )
    assert table.column_names == ["id", "text", "indices", "values"]
    expected = Encoder(splade).encode_sparse(texts, top_k=12)
    for row in table.to_pylist():
        reference = expected[row["id"]]
        assert row["indices"] == reference.indices.tolist()
        np.testing.assert_allclose(row["values"], reference.data, atol=1e-5)


def test_bad_options(tiny):
    ds = ray.data.from_items([{"text": "a"}])
    with pytest.raises(ValueError, match="'int8' needs a calibration"):
        embed_dataset(ds, precision="int8")
    with pytest.raises(ValueError, match="unknown precision 'int3'"):
        embed_dataset(ds, precision="int3")
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        embed_dataset(ds, top_k=0)
    with pytest.raises(ValueError, match="top_k=3 applies to sparse"):
        EmbedBatch("text", "embedding", EncoderOptions(model=str(tiny)), EncodeRequest(top_k=3))
