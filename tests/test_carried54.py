"""Stop 54 (carried defects, integrations): Dask arrays with an empty chunk (as filtering makes them) pool,
normalise, pack-pool and finish to numpy's rows (max, splade and every normalised result failed to compute:
Dask's max over an empty block, dask/dask#10327)."""

from __future__ import annotations

import numpy as np
import pytest

import tokenpool
from tokenpool import Pooling, pool, pool_packed
from tokenpool.core.pooling import finish_vectors

da = pytest.importorskip("dask.array")

STRATEGIES = [member.value for member in Pooling]
B, L, D = 5, 6, 4
# (rows, tokens, dims) chunks of the hidden states; the mask takes the first two
CHUNKINGS = [
    ((2, 0, 3), (L,), (D,)),  # an empty middle chunk of rows: what filtering a batch leaves
    ((0, 5), (L,), (D,)),
    ((2, 3, 0), (L,), (D,)),
    ((1, 0, 0, 4), (3, 0, 3), (D,)),  # an empty chunk of tokens too
    ((5,), (L,), (1, 0, 3)),  # and of dimensions
]


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((B, L, D))
    mask = rng.integers(0, 2, (B, L))
    mask[:, 0] = 1
    mask[3] = 0  # a row with no real token
    return hidden, mask


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=str)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("normalize", [False, True])
def test_dask_empty_chunks_pool_like_numpy(strategy, chunks, normalize):
    hidden, mask = _data()
    lazy = pool(da.from_array(hidden, chunks=chunks), da.from_array(mask, chunks=chunks[:2]), strategy,
                normalize=normalize)  # fmt: skip
    expected = pool(hidden, mask, strategy, normalize=normalize)
    np.testing.assert_allclose(lazy.compute(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunks", CHUNKINGS[:4], ids=str)
@pytest.mark.parametrize("strategy", ["max", "splade", "weightedmean"])
def test_dask_empty_chunks_mask_only(strategy, chunks):
    """Hidden states in one chunk, the mask with the empty chunks (Dask aligns the two on the mask's)."""
    hidden, mask = _data(1)
    lazy = pool(da.from_array(hidden), da.from_array(mask, chunks=chunks[:2]), strategy)
    np.testing.assert_allclose(lazy.compute(), pool(hidden, mask, strategy), rtol=1e-12)


@pytest.mark.parametrize("strategy", ["max", "splade", "mean"])
def test_dask_empty_chunks_pool_packed(strategy):
    hidden, mask = _data(2)
    tokens, offsets = tokenpool.pack(hidden, mask)
    chunks = ((3, 0, tokens.shape[0] - 3), (D,))
    lazy = pool_packed(da.from_array(tokens, chunks=chunks), offsets, strategy, normalize=True)
    np.testing.assert_allclose(lazy.compute(), pool_packed(tokens, offsets, strategy, normalize=True), rtol=1e-12)


def test_dask_empty_chunks_finish_vectors():
    vectors = np.random.default_rng(3).standard_normal((B, D))
    lazy = finish_vectors(da.from_array(vectors, chunks=((2, 0, 3), (D,))), normalize=True, truncate_dim=3)
    np.testing.assert_allclose(lazy.compute(), finish_vectors(vectors, normalize=True, truncate_dim=3), rtol=1e-12)


def test_read_model_config_builds_the_transformers_config_once(tmp_path, monkeypatch):
    """A config.json saving neither a width nor vocab_size: transformers' defaults, from one config built."""
    transformers = pytest.importorskip("transformers")
    from tokenpool.model.onnx import read_model_config

    (tmp_path / "config.json").write_text('{"model_type": "bert", "num_hidden_layers": 1}', encoding="utf-8")
    built = []
    original = transformers.AutoConfig.for_model

    def counted(*args, **kwargs):
        built.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "for_model", counted)
    config = read_model_config(tmp_path)
    defaults = transformers.BertConfig()
    assert (config.hidden_size, config.vocab_size) == (defaults.hidden_size, defaults.vocab_size)
    assert len(built) == 1


@pytest.mark.parametrize("concurrency", [(1.5, 2), (1, 2.5), (True, 2), (1, np.float64(3.0)), ("1", "2")], ids=repr)
def test_ray_concurrency_range_of_non_integers_is_refused_before_ray_starts(tmp_path, monkeypatch, concurrency):
    """A (min, max) actor range takes positive ints, as a single ``concurrency`` does (2.0 is refused): (1.5, 2)
    was accepted and failed inside Ray when the dataset ran ("'float' object cannot be interpreted as an
    integer"), ("1", "2") with a bare TypeError about '<='."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from tokenpool.integrations.ray import embed_parquet

    def started(*args, **kwargs):
        raise AssertionError("Ray was started before the options were checked")

    monkeypatch.setattr(ray, "init", started)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)

    source = tmp_path / "in.txt"
    source.write_text("a\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"concurrency must be a positive int or \(min, max\)") as caught:
        embed_parquet(str(source), str(tmp_path / "out"), concurrency=concurrency)
    assert repr(concurrency) in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_ray_concurrency_range_of_numpy_ints_is_taken():
    pytest.importorskip("ray.data")
    from tokenpool.integrations.ray import _actor_pool

    strategy = _actor_pool((np.int64(1), np.int64(3)))
    assert (strategy.min_size, strategy.max_size) == (1, 3)
    assert type(strategy.min_size) is int and type(strategy.max_size) is int
