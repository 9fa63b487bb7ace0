"""Stop 67, the lead's own fixes."""

import argparse

import pytest

from tokenpool.cli.export_onnx import min_cosine


@pytest.mark.parametrize("text", ["7" * 5000, "x" * 61])
def test_min_cosine_cuts_a_long_bad_value_as_every_number_flag_does(text):
    """--min-cosine echoed a 5,000-character value whole; every other number flag shows its first 60 characters."""
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        min_cosine(text)
    message = str(caught.value)
    assert message == f"expected a number within [0, 1], got '{text[:60]}…'"


@pytest.mark.parametrize("text", ["2", "nan", "-0.5", "x" * 60])
def test_min_cosine_keeps_its_message_for_short_values(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected a number within \[0, 1\], got ") as caught:
        min_cosine(text)
    assert str(caught.value).endswith(repr(text))


@pytest.mark.parametrize("foreign", [b"my notes\n", b'{"not": "a calibration"}'])
def test_a_ray_job_never_replaces_a_file_put_at_its_calibration_name_while_it_ran(tmp_path, foreign):
    """The Ray job checked OUT.calibration.json only when it started, then wrote over whatever was there at
    the end; `tokenpool embed` refuses such a file at both points (the brief: never overwrite a file the job
    did not create)."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("pyarrow")
    from tokenpool.core.quantize import Calibration
    from tokenpool.integrations import ray as tp_ray

    output = tmp_path / "out.parquet"
    beside = tmp_path / "out.parquet.calibration.json"
    tp_ray._refuse_foreign_sidecar(str(output))  # (the start's check: nothing there yet)
    beside.write_bytes(foreign)  # (the user's file, put there while the job ran)
    calibration = Calibration(np.zeros(4, np.float32), np.ones(4, np.float32))
    with pytest.raises(FileExistsError, match="exists and is not a tokenpool calibration file; refusing to replace"):
        tp_ray._write_beside(str(output), calibration)
    assert beside.read_bytes() == foreign


def test_a_ray_job_still_replaces_an_earlier_runs_calibration_file(tmp_path):
    np = pytest.importorskip("numpy")
    pytest.importorskip("pyarrow")
    from tokenpool.core.quantize import Calibration
    from tokenpool.integrations import ray as tp_ray

    output = tmp_path / "out.parquet"
    beside = tmp_path / "out.parquet.calibration.json"
    Calibration(np.zeros(4, np.float32), np.full(4, 2.0, np.float32)).save(beside)
    calibration = Calibration(np.zeros(4, np.float32), np.ones(4, np.float32))
    tp_ray._write_beside(str(output), calibration)
    assert Calibration.load(beside).maximum.tolist() == [1.0] * 4


@pytest.mark.parametrize("size", [1])  # (0 and below: check_int's "a positive int", as before)
def test_the_python_precision_evaluations_refuse_a_calibration_of_one_text_before_any_model_runs(size):
    """`evaluate_precisions` / `evaluate_retrieval_precisions` encoded every text, then said "cannot calibrate
    ... on the first 1 ..."; `tokenpool embed` and `tokenpool evaluate` refuse it first, with this message. No
    encoder or data is touched here: an `object()` stands for both."""
    from tokenpool.errors import OptionError
    from tokenpool.evaluation.precision import evaluate_precisions, evaluate_retrieval_precisions

    expected = f"calibration_size must be at least 2 (texts), got {size}"
    for call in (lambda: evaluate_precisions(object(), object(), [None], ["float32", "int8"], calibration_size=size),
                 lambda: evaluate_retrieval_precisions(object(), object(), ["uint8"], calibration_size=size)):  # fmt: skip
        with pytest.raises(OptionError) as caught:
            call()
        assert str(caught.value) == expected


def test_a_calibration_size_of_one_is_fine_without_a_calibrated_precision_or_with_a_calibration():
    from tokenpool.evaluation.precision import check_calibration_size

    check_calibration_size(1, ["float32", "ubinary"], None)
    check_calibration_size(1, ["int8"], object())
