"""Ray Data integration on a real local Ray: vectors equal Encoder's, every row exactly once, columns kept."""

from __future__ import annotations

import json

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("transformers")

from tokenpool import Encoder  # noqa: E402
from tokenpool.integrations.ray import EmbedBatch, _read, embed_dataset, embed_parquet  # noqa: E402
from tokenpool.model.options import EncoderOptions  # noqa: E402
from tokenpool.model.request import EncodeRequest  # noqa: E402

# Ray's own DataContext warns about its deprecated settings; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

WORDS = [
    "pooling",
    "masks",
    "padding",
    "tokens",
    "vectors",
    "cluster",
    "actors",
    "batches",
    "parquet",
    "columns",
    "models",
]


def make_texts(count: int) -> list[str]:
    """Distinct texts of very different lengths (so batches hold real padding)."""
    rng = np.random.default_rng(7)
    return [f"row {i}: " + " ".join(rng.choice(WORDS, size=1 + (i * 7) % 40)) for i in range(count)]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


def _quiet_ray_data() -> None:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    if hasattr(context, "print_on_execution_start"):  # newer Ray only
        context.print_on_execution_start = False


@pytest.fixture(scope="module")
def local_ray(ray_session):
    """The session's local Ray (conftest.ray_session), quiet."""
    _quiet_ray_data()
    yield


@pytest.mark.usefixtures("local_ray")
def test_embed_dataset_on_two_actors_keeps_rows_and_columns(encoder: Encoder):
    texts = make_texts(57)  # not a multiple of the batch size
    items = [
        {"id": i, "text": t, "meta": {"n": i % 3}, "score": None if i % 5 else 0.5}
        for i, t in enumerate(texts)
    ]
    ds = ray.data.from_items(items, override_num_blocks=4)

    out = embed_dataset(ds, batch_size=8, encode_batch_size=4, concurrency=2, num_cpus=0.5)
    table = pa.concat_tables(ray.get(out.to_arrow_refs()))

    ids = table.column("id").to_pylist()
    assert sorted(ids) == list(range(57))  # every row exactly once
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), encoder.dimension)
    rows = table.to_pylist()
    for row in rows:  # other columns pass through, nulls included
        original = items[row["id"]]
        assert (row["text"], row["meta"], row["score"]) == (
            original["text"],
            original["meta"],
            original["score"],
        )
    vectors = np.asarray([row["embedding"] for row in sorted(rows, key=lambda r: r["id"])], dtype=np.float32)
    np.testing.assert_allclose(vectors, encoder.encode(texts), rtol=0, atol=1e-5)


@pytest.mark.usefixtures("local_ray")
def test_embed_parquet_writes_vectors_every_row_once(tmp_path):
    """Also `encode_batch_size` (merged from test_integration_options.test_embed_parquet_takes_encode_batch_size):
    docs/integrations.md calls ``embed_parquet(..., encode_batch_size=256)``, but it was no parameter: it fell
    into the Encoder options and failed with "EncoderOptions got an unexpected keyword argument"; checked before
    Ray reads anything."""
    texts = make_texts(30)
    source = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"doc_id": [f"d{i}" for i in range(30)], "body": texts}), source)

    options = {"pooling": "cls", "normalize": False, "truncate_dim": 32}
    with pytest.raises(ValueError, match="encode_batch_size"):
        embed_parquet(str(source), str(tmp_path / "bad"), column="body", encode_batch_size=0, **options)
    assert not (tmp_path / "bad").exists()
    embed_parquet(
        str(source), str(tmp_path / "out"), column="body", output_column="vec", batch_size=8, encode_batch_size=2,
        **options,
    )  # fmt: skip

    assert ray.is_initialized()  # a Ray it did not start is left running
    table = pq.read_table(tmp_path / "out")  # plain pyarrow: the output needs no Ray to read
    assert table.column_names == ["doc_id", "body", "vec"]
    assert table.schema.field("vec").type == pa.list_(pa.float32(), 32)
    doc_ids = table.column("doc_id").to_pylist()
    assert sorted(doc_ids) == sorted(f"d{i}" for i in range(30))  # every row exactly once
    vectors = np.stack(table.column("vec").to_numpy(zero_copy_only=False))[
        np.argsort([int(d[1:]) for d in doc_ids])
    ]
    np.testing.assert_allclose(vectors, Encoder(**options).encode(texts), rtol=0, atol=1e-5)


@pytest.mark.usefixtures("local_ray")
def test_input_format_follows_the_extension(tmp_path):
    texts = ["first, with a comma", "second"]
    (tmp_path / "a.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts))
    )
    (tmp_path / "a.csv").write_text("id,text\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(texts)))
    (tmp_path / "a.txt").write_text("\n".join(texts) + "\n")
    pq.write_table(pa.table({"id": [0, 1], "text": texts}), tmp_path / "a.parquet")
    for name in ("a.jsonl", "a.csv", "a.parquet"):
        rows = sorted(_read(str(tmp_path / name), "text").take_all(), key=lambda r: r["id"])
        assert [(r["id"], r["text"]) for r in rows] == [(0, texts[0]), (1, texts[1])], name
    assert sorted(r["text"] for r in _read(str(tmp_path / "a.txt"), "text").take_all()) == sorted(texts)
    with pytest.raises(ValueError, match="column='body'"):
        _read(str(tmp_path / "a.txt"), "body")


@pytest.mark.usefixtures("local_ray")
def test_bad_input_raises_named_errors(tmp_path):
    ds = ray.data.from_items([{"id": 1, "text": "a"}, {"id": 2, "text": None}])
    with pytest.raises(ValueError, match="'body' not in the dataset"):
        embed_dataset(ds, column="body")
    with pytest.raises(ValueError, match="'id' already exists"):
        embed_dataset(ds, output_column="id")
    with pytest.raises(ValueError, match="'nope'"):
        embed_dataset(ds, pooling="nope")
    with pytest.raises(ValueError, match="concurrency"):
        embed_dataset(ds, concurrency=0)
    with pytest.raises(ValueError, match="batch_size"):
        embed_dataset(ds, batch_size=0)
    with pytest.raises(ValueError, match="device='cuda' needs num_gpus"):
        embed_dataset(ds, device="cuda")
    with pytest.raises(FileNotFoundError, match="no-such-input"):
        embed_parquet(str(tmp_path / "no-such-input.parquet"), str(tmp_path / "out"))

    source = tmp_path / "texts.parquet"
    pq.write_table(pa.table({"text": ["fine", "also fine"]}), source)
    # Failures inside workers come back as Ray wrappers; embed_parquet re-raises the worker's error type (a null
    # text met by an actor: test_ci67.test_a_failed_job_ends_its_actors_before_it_raises).
    with pytest.raises(FileNotFoundError, match="no-such-model"):  # raised in the actor's constructor
        embed_parquet(str(source), str(tmp_path / "out"), model=str(tmp_path / "no-such-model"))


def test_batch_callable_checks_each_batch(encoder: Encoder):
    """The per-actor class, called in-process: these checks guard datasets whose schema is unknown upfront."""
    embed = EmbedBatch("text", "embedding", EncoderOptions(), EncodeRequest(batch_size=4))
    out = embed(pa.table({"text": ["a b", "c"], "n": [1, 2]}))
    assert out.column_names == ["text", "n", "embedding"]
    np.testing.assert_allclose(
        np.stack(out.column("embedding").to_numpy(zero_copy_only=False)),
        encoder.encode(["a b", "c"]),
        rtol=0,
        atol=1e-6,
    )
    empty = embed(pa.table({"text": pa.array([], pa.string())}))  # Ray can hand an actor an empty batch
    assert empty.num_rows == 0 and empty.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    with pytest.raises(TypeError, match="'text' must hold strings, got int64"):
        embed(pa.table({"text": [1, 2]}))
    with pytest.raises(ValueError, match=r"'text' not in the dataset; columns: \['body'\]"):
        embed(pa.table({"body": ["x"]}))
    with pytest.raises(ValueError, match="'embedding' already exists"):
        embed(pa.table({"text": ["x"], "embedding": [0.0]}))


@pytest.mark.usefixtures("local_ray")
def test_text_input_keeps_blank_lines_and_line_order(tmp_path, encoder: Encoder):
    """A .txt input has no id column: its rows (blank lines included) must come out aligned with its lines."""
    lines = ["alpha", "", "beta", "", "gamma", *make_texts(20)]
    source = tmp_path / "lines.txt"
    source.write_text("\n".join(lines) + "\n")
    embed_parquet(str(source), str(tmp_path / "out"), batch_size=4)
    table = pq.read_table(tmp_path / "out")
    assert table.column("text").to_pylist() == lines
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(vectors, encoder.encode(lines), rtol=0, atol=1e-5)
