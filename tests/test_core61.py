"""Stop 61, core defect hunt: each test failed on the code before its fix."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tokenpool import pool, pool_packed
from tokenpool.core.quantize import Calibration, quantize
from tokenpool.core.sparse import sparsify

torch = pytest.importorskip("torch")

STRATEGIES = ["mean", "max", "cls", "lasttoken", "mean_sqrt_len_tokens", "weightedmean", "splade"]


@pytest.mark.parametrize("shape", [(3, 4, 5), (16, 256, 512)])  # (the second reaches the compiled kernels)
def test_a_lazily_negated_tensor_is_pooled_as_its_values(shape):
    """``z.conj().imag`` is a real float tensor carrying torch's lazy negation bit; `pool` and `pool_packed` raised
    torch's "Can't call numpy() on Tensor that has negative bit set" from the fast path's numpy view. Now the
    rows are those of the same values without the bit (``resolve_neg()``), also for such a mask."""
    z = torch.randn(*shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    hidden = z.conj().imag
    assert hidden.is_neg()
    mask = torch.ones(shape[:2], dtype=torch.long)
    mask[0, 2:], mask[1, :1] = 0, 0
    negated_mask = torch.complex(torch.zeros(shape[:2]), -mask.float()).conj().imag
    assert negated_mask.is_neg()
    plain = hidden.resolve_neg()
    for strategy in STRATEGIES if shape[0] < 16 else ["mean", "max"]:
        for states, given in ((hidden, mask), (hidden, negated_mask), (hidden, None), (plain, negated_mask)):
            expected = pool(plain, None if given is None else mask, strategy, prompt_length=1)
            torch.testing.assert_close(pool(states, given, strategy, prompt_length=1), expected)
            expected = pool(plain, None if given is None else mask, strategy)
            torch.testing.assert_close(pool(states, given, strategy), expected)
        offsets = [0, 2, shape[1]]
        torch.testing.assert_close(pool_packed(hidden[0], offsets, strategy), pool_packed(plain[0], offsets, strategy))


def test_a_numpy_mask_of_ml_dtypes_is_read_as_its_values():
    """``np.asarray`` of a JAX bfloat16 (or float8) mask is a numpy array of ml_dtypes' bfloat16: with numpy hidden
    states it was refused ("attention_mask must hold 0/1 or booleans, got dtype bfloat16") although the same mask
    was accepted from JAX itself, from torch, and with JAX or torch hidden states. Now it is read as its 0/1 values;
    its other values are named as in any float mask."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    hidden = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    mask = np.array([[1, 1, 0], [0, 1, 1]])
    for name in ("bfloat16", "float8_e4m3fn"):
        odd = mask.astype(getattr(ml_dtypes, name))
        for strategy in STRATEGIES[:-1]:
            np.testing.assert_array_equal(pool(hidden, odd, strategy), pool(hidden, mask, strategy))
        np.testing.assert_array_equal(pool(hidden[0], odd[0]), pool(hidden[0], mask[0]))
        with pytest.raises(ValueError, match=r"only 0 and 1 \(or True/False\), found \[2.0\]"):
            pool(hidden, (mask * 2).astype(getattr(ml_dtypes, name)))


def test_torch_float8_vectors_are_read_as_their_values():
    """torch's float8 tensors (FP8 inference) pooled fine, but `quantize`, `Calibration.from_vectors` and
    `sparsify` raised torch's bare "TypeError: Got unsupported ScalarType Float8_e4m3fn" from ``.numpy()``, and a
    float8 ``prompt_length`` / ``cu_seqlens`` was named that way instead of "must hold integers". Now float8 reads as
    its (float32-exact) values, as bfloat16 does."""
    dtype = getattr(torch, "float8_e4m3fn", None)
    if dtype is None:
        pytest.skip("this torch has no float8")
    vectors = torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.5, 0.25, -3.0, 1.0]]).to(dtype)
    exact = vectors.float().numpy()
    np.testing.assert_array_equal(quantize(vectors, "ubinary"), quantize(exact, "ubinary"))
    np.testing.assert_array_equal(quantize(vectors, "float16"), quantize(exact, "float16"))
    assert Calibration.from_vectors(vectors) == Calibration.from_vectors(exact)
    np.testing.assert_array_equal(sparsify(vectors, top_k=2).to_dense(), sparsify(exact, top_k=2).to_dense())
    hidden = torch.ones(2, 3, 4)
    with pytest.raises(TypeError, match="prompt_length must hold integers"):
        pool(hidden, None, prompt_length=torch.tensor([1, 0]).to(dtype))
    with pytest.raises(ValueError, match="cu_seqlens must hold integers"):
        pool_packed(hidden[0], torch.tensor([0, 1, 3]).to(dtype))


def test_a_list_of_half_precision_tensors_is_read_as_their_values():
    """A list of torch tensors was read item by item only when autograd tracked them: a list of bfloat16 (or float8)
    tensors, what a bf16 model gives row by row, was refused ("vectors must be an array, got list: Got unsupported
    ScalarType BFloat16"; "attention_mask could not be read as an array: ..."). Now each item is read as a lone
    tensor of its dtype."""
    rows = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -3.0]])
    exact = rows.numpy()
    listed = [row.bfloat16() for row in rows]
    np.testing.assert_array_equal(quantize(listed, "ubinary"), quantize(exact, "ubinary"))
    np.testing.assert_array_equal(sparsify(listed, top_k=2).to_dense(), sparsify(exact, top_k=2).to_dense())
    hidden = torch.arange(24.0).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    torch.testing.assert_close(pool(hidden, [row.bfloat16() for row in mask]), pool(hidden, mask))
    np.testing.assert_array_equal(pool([h.bfloat16() for h in hidden[0]]), pool(hidden[0].bfloat16().float().numpy()))


def test_a_bare_pooling_string_is_refused_by_check_as_by_the_constructor():
    """``check(pooling="mean")`` compared the string's letters: "the vectors use ['m', 'e', 'a', 'n']", though the
    constructor refuses that string ("'pooling' must be a list of strategy names"). Now `check` refuses it alike."""
    calibration = Calibration.from_vectors(np.eye(3), pooling=["mean"])
    with pytest.raises(ValueError) as built:
        Calibration.from_vectors(np.eye(3), pooling="mean")
    with pytest.raises(ValueError) as checked:
        calibration.check(dimension=3, pooling="mean")
    assert str(checked.value) == str(built.value) == "'pooling' must be a list of strategy names, got 'mean'"
    calibration.check(dimension=3, pooling=["mean"])


def test_a_calibration_stores_and_compares_canonical_pooling_names(tiny, tmp_path):
    """``from_vectors(v, pooling=["avg"])`` (an alias of mean) stored 'avg', so an encoder pooling mean - the same
    vectors - was refused ("the calibration is for pooling ['avg']"). Now names are canonical when a calibration is
    built, loaded or checked, and a file of canonical names is written byte for byte as before."""
    from tokenpool import Encoder

    encoder = Encoder(tiny, pooling="mean")
    texts = ["a first text", "another one", "and a third, longer text"]
    vectors = encoder.encode(texts)
    canonical = Calibration.for_encoder(encoder, vectors)
    labels = {key: getattr(canonical, key) for key in ("model", "model_id", "normalize", "extra")}
    aliased = Calibration.from_vectors(vectors, pooling=["AVG"], **labels)
    assert aliased.pooling == ("mean",) and aliased == canonical
    np.testing.assert_array_equal(encoder.encode(texts, precision="int8", calibration=aliased),
                                  encoder.encode(texts, precision="int8", calibration=canonical))  # fmt: skip
    canonical.check(dimension=canonical.dimension, pooling=["mean_tokens"])
    text = json.dumps({**canonical.to_dict(), "pooling": ["average"]}, indent=1, sort_keys=True) + "\n"
    assert Calibration.from_json(text).pooling == ("mean",)
    written = canonical.save(tmp_path / "c.json").read_bytes()  # the documented file: indented, sorted JSON
    assert written == (json.dumps(json.loads(written), indent=1, sort_keys=True) + "\n").encode()
    assert json.loads(written)["pooling"] == ["mean"]
    assert Calibration.load(tmp_path / "c.json").save(tmp_path / "again.json").read_bytes() == written
    with pytest.raises(ValueError, match="unknown pooling strategy 'median'"):
        Calibration.from_vectors(vectors, pooling=["median"])


@pytest.mark.parametrize("library", ["torch", "jax"])
def test_a_bfloat16_prompt_length_or_offsets_are_named_by_their_own_dtype(library):
    """A bfloat16 ``prompt_length`` / ``cu_seqlens`` was named by float32, the dtype tokenpool reads it as ("got
    dtype float32"); now the message names the dtype given."""
    if library == "jax":
        jnp = pytest.importorskip("jax.numpy")
        make = lambda values: jnp.asarray(values, jnp.bfloat16)  # noqa: E731
    else:
        make = lambda values: torch.tensor(values).bfloat16()  # noqa: E731
    hidden = np.ones((2, 3, 4), np.float32)
    with pytest.raises(TypeError, match=r"prompt_length must hold integers, got dtype bfloat16$"):
        pool(hidden, None, prompt_length=make([1, 0]))
    with pytest.raises(ValueError, match=r"cu_seqlens must hold integers, got dtype bfloat16: "):
        pool_packed(hidden[0], make([0, 1, 3]))
    with pytest.raises(TypeError, match=r"prompt_length must hold integers, got dtype float64$"):
        pool(hidden, None, prompt_length=[1.0, 0.0])  # (a list: the dtype numpy reads it as)


def test_a_file_name_near_the_limit_is_written_through_a_short_temporary(tmp_path, monkeypatch):
    """The temporary name beside the file added ~25 characters to it, so a legal name of ~240-255 bytes failed
    with ENAMETOOLONG naming the temporary. Now a long name's temporary is a short one, still in the same folder
    and still removed when the write fails."""
    from tokenpool.core import durable

    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(durable.os, "replace", lambda a, b: (renamed.append(a), real_replace(a, b))[1])
    calibration = Calibration.from_vectors(np.eye(3))
    names = ["c" * (name_max - 5) + ".json", "é" * ((name_max - 5) // 2) + ".json"]  # (255 bytes each)
    for done, name in enumerate(names, 1):
        assert calibration.save(tmp_path / name) == tmp_path / name
        assert Calibration.load(tmp_path / name) == calibration
        assert os.path.dirname(renamed[-1]) == str(tmp_path)
        assert sorted(os.listdir(tmp_path)) == sorted(names[:done])  # (no temporary left)
    folder = tmp_path / ("d" * name_max)
    folder.mkdir()  # the rename over a folder fails: the temporary is removed
    with pytest.raises(OSError):
        durable.write_whole(folder, b"x")
    assert len(os.listdir(tmp_path)) == 3 and not os.listdir(folder)


def test_a_string_dtype_mask_for_torch_states_gets_the_mask_refusal():
    """A numpy StringDType mask with torch hidden states crashed in numpy ("Cannot use DescrNewByteOrder for this
    new style DTypes"); numpy states got "attention_mask must hold 0/1 or booleans ..." - now both do."""
    if not hasattr(np, "dtypes") or not hasattr(np.dtypes, "StringDType"):
        pytest.skip("numpy < 2 has no StringDType")
    mask = np.array([["1", "1", "0"], ["1", "0", "0"]], dtype=np.dtypes.StringDType())
    for hidden in (np.ones((2, 3, 4), np.float32), torch.ones(2, 3, 4)):
        with pytest.raises(ValueError, match=r"attention_mask must hold 0/1 or booleans, got dtype StringDType"):
            pool(hidden, mask)
        with pytest.raises(ValueError, match=r"attention_mask must hold 0/1 or booleans, got dtype StringDType"):
            pool(hidden[0], mask[0])
