"""Whole-number options take Python and numpy integers alike and refuse bools and floats: the core, a job."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_job_resume_corners import _jsonl

from tokenpool import pool
from tokenpool.core import fast

INTEGER_TYPES = [int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]

NOT_WHOLE = [True, False, np.bool_(True), 2.0, np.float32(2.0), np.float64(3.0), "2", None]


@given(st.sampled_from(INTEGER_TYPES), st.integers(0, 100))
def test_whole_number_rule_accepts_numpy_integers(kind, value):
    """errors.is_int refused np.int64(3) while `pool`'s options accepted it (inline `numbers.Integral`
    checks): one rule now, a Python int or any numpy integer, checked against Python's own int()."""
    from tokenpool.errors import check_int, is_int

    given_value = kind(value)
    assert is_int(given_value)
    assert check_int(given_value, "n", minimum=0) == int(str(value)) and type(check_int(given_value, "n", minimum=0)) is int
    if value >= 1:
        fast.set_num_threads(given_value)
        try:
            assert fast.get_num_threads() == value and type(fast.get_num_threads()) is int
        finally:
            fast.set_num_threads(None)
    else:
        with pytest.raises(ValueError, match=re.escape(f"threads must be a positive int or None, got {given_value!r}")):
            fast.set_num_threads(given_value)


@pytest.mark.parametrize("value", NOT_WHOLE, ids=repr)
def test_whole_number_rule_refuses_bools_and_floats(value):
    """A bool (Python's or numpy's) and a float, even an integral one, are no count: every whole-number check
    refuses them, naming the value."""
    from tokenpool.core.chunking import TokenChunks
    from tokenpool.core.pooling import check_truncate_dim
    from tokenpool.core.sparse import check_sparse_options
    from tokenpool.core.streaming import RunningPool
    from tokenpool.errors import OptionError, check_int, is_int

    assert not is_int(value)
    shown = re.escape(repr(value))
    with pytest.raises(ValueError, match=f"n must be a positive int, got {shown}"):
        check_int(value, "n")
    if value is None:
        return
    with pytest.raises(ValueError, match=f"threads must be a positive int or None, got {shown}"):
        fast.set_num_threads(value)
    with pytest.raises(TypeError, match=f"truncate_dim must be an int, got {shown}"):
        check_truncate_dim(value)
    with pytest.raises(ValueError, match=f"top_k must be a positive int .* got {shown}"):
        check_sparse_options(value, 0.0)
    with pytest.raises(ValueError, match=f"units must be an int >= 0, got {shown}"):
        RunningPool("mean", value, 2)
    with pytest.raises(ValueError, match=f"position must be an int >= 0, got {shown}"):
        RunningPool("mean", 1, 2).add(0, np.zeros((1, 2)), value)
    with pytest.raises(OptionError, match=f"chunk size must be an int >= 1, got {shown}"):
        TokenChunks(value)
    with pytest.raises(TypeError, match="prompt_length must (be an int|hold integers)"):
        pool(np.zeros((1, 2, 2)), np.ones((1, 2)), "mean", prompt_length=value)


@given(st.sampled_from(INTEGER_TYPES), st.integers(0, 3), st.integers(1, 4))
@settings(max_examples=40, deadline=None)
def test_numpy_integer_options_pool_as_python_ints(kind, prompt, size):
    """Every whole-number option of the core takes numpy integers with the Python int's result: prompt_length,
    truncate_dim, top_k, chunk specs (stored as Python ints) and RunningPool's units and positions."""
    from tokenpool.core.chunking import TokenChunks
    from tokenpool.core.sparse import sparsify
    from tokenpool.core.streaming import RunningPool

    rng = np.random.default_rng(prompt * 7 + size)
    hidden = rng.standard_normal((2, 5, 4))
    mask = np.ones((2, 5), dtype=bool)
    np.testing.assert_array_equal(
        pool(hidden, mask, "mean", prompt_length=kind(prompt)), pool(hidden, mask, "mean", prompt_length=prompt)
    )
    expected = np.stack([hidden[b, prompt:].mean(0) if prompt < 5 else np.zeros(4) for b in range(2)])
    np.testing.assert_allclose(pool(hidden, mask, "mean", prompt_length=kind(prompt)), expected, atol=1e-12)
    assert sparsify(hidden[:, 0], top_k=kind(size)).indptr.tolist() == sparsify(hidden[:, 0], top_k=size).indptr.tolist()
    chunks = TokenChunks(kind(size + 1), kind(size))
    assert (type(chunks.size), type(chunks.overlap), str(chunks)) == (int, int, f"tokens:{size + 1}:{size}")
    running = RunningPool("mean", kind(2), kind(4), dtype="float64")
    running.add(kind(1), hidden[1, prompt:], kind(prompt))
    np.testing.assert_allclose(running.read()[1], expected[1], atol=1e-12)


def test_numpy_integer_sizes_run_a_job(tmp_path):
    """Whole numbers are Python or numpy integers (errors.is_int): ``chunk_size=np.int64(2)`` runs the job (its
    manifest held the numpy value: "Object of type int64 is not JSON serializable") with the plain-int output."""
    from tokenpool import Encoder
    from tokenpool.jobs import EmbedJob, EncodeRequest, embed_corpus

    src = str(_jsonl(tmp_path / "in.jsonl"))
    encoder = Encoder()
    embed_corpus(encoder, EmbedJob(src, str(tmp_path / "a.npy"), EncodeRequest(), chunk_size=np.int64(2)), log=lambda m: None)
    embed_corpus(encoder, EmbedJob(src, str(tmp_path / "b.npy"), EncodeRequest(), chunk_size=2), log=lambda m: None)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
