"""`EncodeRequest`: one request object, two checks (before and after the model loads), each refusal naming the
field as its caller spells it (a Python keyword, or the command-line flag)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tinymodels import bert_folder

from tokenpool import Encoder
from tokenpool.core.quantize import Calibration, CalibrationMismatch
from tokenpool.errors import OptionError
from tokenpool.model.options import EncoderOptions
from tokenpool.model.request import CALLERS, OUTPUTS, EncodeRequest

# (request fields, encoder options, error type, Python message fragment, command-line message fragment)
REFUSED = [
    ({"output": "matrix"}, None, OptionError, "output must be one of", "output must be one of"),
    ({"output": "tokens", "precision": "int8"}, None, OptionError,
     "precision='int8' is not supported with output='tokens'", "--precision int8 is not supported with --token-vectors"),
    ({"chunks": "tokens:8", "precision": "float16"}, None, OptionError,
     "precision='float16' is not supported with chunks='tokens:8'", "--precision float16 is not supported with --chunks"),
    ({"chunks": "tokens:8", "top_k": 3}, None, OptionError, "top_k=3 is not supported with chunks",
     "--top-k 3 is not supported with --chunks"),
    ({"output": "tokens", "dense": True}, None, OptionError, "dense=True is not supported with output='tokens'",
     "--dense is not supported with --token-vectors"),
    ({"output": "tokens", "decoded_tokens": True}, None, OptionError, "decoded_tokens=True is not supported",
     "--tokens is not supported with --token-vectors"),
    ({"output": "tokens", "chunks": "tokens:8"}, None, OptionError,
     "chunks='tokens:8' gives one vector per chunk; it cannot be combined with output='tokens'",
     "--chunks tokens:8 gives one vector per chunk; it cannot be combined with --token-vectors"),
    ({"output": "chunks"}, None, OptionError, "chunk output needs chunks: a chunk spec",
     "chunk output needs --chunks: a chunk spec"),
    ({"chunks": "tokens:x"}, None, OptionError, "chunks must be 'tokens:SIZE", "--chunks must be 'tokens:SIZE"),
    ({"chunks": "tokens:8", "chunking": "early"}, None, OptionError, "chunking must be one of",
     "--chunking must be one of"),
    ({"precision": "int3"}, None, ValueError, "unknown precision 'int3'", "unknown precision 'int3'"),
    ({"precision": "int8"}, None, OptionError, "precision='int8' needs a calibration",
     "--precision int8 needs a calibration"),
    ({"precision": "int8", "calibration_size": 1}, None, OptionError,
     "calibration_size must be at least 2 (texts), got 1", "--calibration-size must be at least 2 (texts), got 1"),

    ({"precision": "int8", "calibration": 5}, None, TypeError, "calibration must be a tokenpool Calibration",
     "calibration must be a tokenpool Calibration"),
    ({"batch_size": 0}, None, ValueError, "batch_size must be a positive int, got 0",
     "--batch-size must be a positive int, got 0"),
    ({"batch_size": True}, None, ValueError, "batch_size must be a positive int", "--batch-size must be"),
    ({"max_batch_tokens": 0}, None, ValueError, "max_batch_tokens must be a positive int or None, got 0",
     "--max-batch-tokens must be a positive int or None, got 0"),
    ({"top_k": 0}, None, ValueError, "top_k must be a positive int", "top_k must be a positive int"),
    ({"threshold": -1.0}, None, ValueError, "threshold must be a finite number ≥ 0", "threshold must be a finite"),
    ({"special_tokens": False}, None, OptionError, "special_tokens=False is for output='tokens'",
     "--no-special-tokens is for --token-vectors"),
    ({"special_tokens": "no", "output": "tokens"}, None, TypeError, "special_tokens must be True, False or None",
     "special_tokens must be True, False or None"),
    ({"dense": "yes"}, None, TypeError, "dense must be True or False", "--dense must be True or False"),
    ({"prompt": "q: ", "prompt_name": "query"}, None, ValueError, "either prompt or prompt_name",
     "either prompt or prompt_name"),
    ({"prompt": 5}, None, TypeError, "prompt must be a str", "prompt must be a str"),
    ({"long_documents": "pages"}, None, OptionError, "long_documents must be one of",
     "--long-documents must be one of"),
    ({"output": "tokens"}, EncoderOptions(truncate_dim=8), OptionError,
     "truncate_dim=8 cannot be used with output='tokens'", "--dim 8 cannot be used with --token-vectors"),
    ({"output": "tokens"}, EncoderOptions(normalize=False), OptionError,
     "normalize=False cannot be used with output='tokens'", "--no-normalize cannot be used with --token-vectors"),
    ({"output": "tokens"}, EncoderOptions(normalize=True), OptionError, "normalize=True cannot be used",
     "--normalize cannot be used with --token-vectors"),
    ({}, EncoderOptions(long_documents="pages"), OptionError, "long_documents must be one of",
     "long_documents must be one of"),
    ({}, EncoderOptions(window_stride=0), OptionError, "window_stride must be a positive int, got 0",
     "window_stride must be a positive int, got 0"),
    ({}, EncoderOptions(window_stride=64), OptionError,
     "window_stride=64 would be ignored: windows are read only with long_documents='windows'",
     "--window-stride 64 would be ignored: windows are read only with --long-documents windows or late chunking"),
    ({"output": "tokens"}, EncoderOptions(window_stride=64), OptionError, "window_stride=64 would be ignored",
     "--window-stride 64 would be ignored"),
    ({"chunks": "tokens:8", "chunking": "naive"}, EncoderOptions(window_stride=64, long_documents="windows"),
     OptionError, "window_stride=64 would be ignored: chunking='naive' encodes each chunk's text alone",
     "--window-stride 64 would be ignored: --chunking naive encodes each chunk's text alone"),
    ({}, EncoderOptions(runtime="tensorrt"), OptionError, "runtime must be 'torch' or 'onnx', got 'tensorrt'",
     "runtime must be 'torch' or 'onnx'"),
    ({}, EncoderOptions(pooling=["mean", "splade"]), ValueError, "cannot be combined", "cannot be combined"),
    ({"pooling": ["max", "splade"]}, None, ValueError, "cannot be combined", "cannot be combined"),
    ({"pooling": "max", "precision": "int8", "calibration_size": 9}, None, OptionError,
     "precision='int8' is for the encoder's own vectors, not pooling='max'", "--precision int8 is for the encoder"),
    ({"finish": False, "precision": "ubinary"}, None, OptionError, "not finish=False", "not finish=False"),
    ({"finish": 0}, None, TypeError, "finish must be True or False", "finish must be True or False"),
    ({"chunks": "tokens:8", "empty_documents": "skip"}, None, OptionError, "empty_documents must be one of",
     "empty_documents must be one of"),
    ({"truncate_dim": True}, None, TypeError, "truncate_dim must be an integer, got True", "--dim must be an integer"),
    ({"truncate_dim": 8.0}, None, TypeError, "truncate_dim must be an integer, got 8.0", "--dim must be an integer"),
    ({"normalize": "yes"}, None, TypeError, "normalize must be True, False or None", "--normalize must be True"),
    ({"output": "tokens", "truncate_dim": 8}, None, OptionError, "truncate_dim=8 cannot be used with output='tokens'",
     "--dim 8 cannot be used with --token-vectors"),
    ({"output": "tokens", "normalize": True}, None, OptionError, "normalize=True cannot be used with output='tokens'",
     "--normalize cannot be used with --token-vectors"),
    ({"pooling": "max", "normalize": True}, None, OptionError,
     "normalize=True finishes the encoder's pooled vectors; it cannot be combined with pooling='max'",
     "--normalize finishes the encoder's pooled vectors"),
    ({"finish": False, "truncate_dim": 8}, None, OptionError, "it cannot be combined with finish=False",
     "--dim 8 finishes the encoder's pooled vectors; it cannot be combined with finish=False"),
    ({"output": "sparse", "normalize": False}, None, OptionError, "cannot be combined with output='sparse'",
     "--no-normalize finishes the encoder's pooled vectors; it cannot be combined with sparse rows"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "options", "error", "python", "cli"), REFUSED)
def test_refusals_name_the_field_as_the_caller_spells_it(fields, options, error, python, cli):
    with pytest.raises(error) as raised:
        EncodeRequest(**fields).check(options)
    assert python in str(raised.value)
    with pytest.raises(error) as raised:
        EncodeRequest(**fields, caller="cli").check(options)
    assert cli in str(raised.value)


def test_only_the_command_line_refuses_a_calibration_that_would_be_ignored(dense):
    with pytest.raises(OptionError, match="--calibration is for --precision int8 or uint8, not float16"):
        EncodeRequest(precision="float16", calibration="cal.json", caller="cli").check()
    calibration = dense.calibrate(["a cat sat", "dogs run fast", "the sun sets"])
    assert EncodeRequest(precision="float16", calibration=calibration).check_encoder(dense).precision == "float16"
    other = Encoder(dense.model_path, pooling="max", device="cpu")
    with pytest.raises(CalibrationMismatch):  # unused here, but still one made for this model
        EncodeRequest(precision="binary", calibration=calibration).check_encoder(other)


@pytest.mark.parametrize(
    ("fields", "options"),
    [({}, {"long_documents": "windows"}), ({"long_documents": "windows"}, {}), ({"chunks": "tokens:8"}, {}),
     ({"output": "tokens"}, {"long_documents": "windows"})],
)  # fmt: skip
def test_a_window_stride_passes_where_windows_are_read(fields, options):
    request = EncodeRequest(**fields, caller="cli")
    assert request.check(EncoderOptions(window_stride=64, **options)) == request.check()


def test_a_checked_request_is_canonical():
    checked = EncodeRequest(chunks="tokens:8", precision=" Float32 ", top_k=None, threshold=0).check()
    assert (checked.output, checked.precision, checked.threshold) == ("chunks", "float32", 0.0)
    assert isinstance(checked.threshold, float)
    assert EncodeRequest(output="tokens", special_tokens=False).check().special_tokens is False
    assert EncodeRequest(precision="INT8", calibration_size=2).check().precision == "int8"


_VALUES = {
    "output": st.sampled_from([*OUTPUTS, "matrix"]),
    "precision": st.sampled_from(["float32", "float16", "int8", "ubinary", "int3"]),
    "calibration": st.sampled_from([None, "cal.json", {"format": "x"}, 7]),
    "calibration_size": st.sampled_from([None, 1, 2, 1000]),
    "chunks": st.sampled_from([None, "tokens:8", "boundaries:16:2", "spans", "pages"]),
    "chunking": st.sampled_from(["late", "naive", "early"]),
    "batch_size": st.sampled_from([1, 32, 0, True]),
    "max_batch_tokens": st.sampled_from([None, 64, 0]),
    "special_tokens": st.sampled_from([None, True, False, "no"]),
    "prompt": st.sampled_from([None, "q: ", 3]),
    "prompt_name": st.sampled_from([None, "query"]),
    "top_k": st.sampled_from([None, 3, 0]),
    "threshold": st.sampled_from([0.0, 0.5, -1.0]),
    "decoded_tokens": st.booleans(),
    "dense": st.booleans(),
    "long_documents": st.sampled_from([None, "truncate", "windows", "pages"]),
    "pooling": st.sampled_from([None, "max", "mean,cls", "nope"]),
    "finish": st.sampled_from([True, False]),
    "truncate_dim": st.sampled_from([None, 8, 0, True]),
    "normalize": st.sampled_from([None, True, False, 1]),
}


@given(st.fixed_dictionaries({}, optional=_VALUES))
def test_both_spellings_refuse_the_same_requests(fields):
    """One rule, two spellings: a request passes for Python iff it passes for the command line, with the same
    exception type; a command-line message never spells a field as a Python keyword with a value, a
    checked request checks again unchanged, and its output is one of `OUTPUTS`."""
    outcomes = {}
    for caller in CALLERS:
        try:
            outcomes[caller] = EncodeRequest(**fields, caller=caller).check()
        except (ValueError, TypeError) as exc:
            outcomes[caller] = exc
    python, cli = outcomes["python"], outcomes["cli"]
    assert type(outcomes["http"]) is type(python)  # a server request passes the rules a Python call does
    if "--calibration is for --precision int8 or uint8" in str(cli):
        return  # the one difference: Python may pass a calibration along with any precision
    assert type(python) is type(cli)
    if isinstance(python, EncodeRequest):
        assert python == cli and python.output in OUTPUTS
        assert python.check() == python
        assert (python.output == "chunks") == (fields.get("chunks") is not None)
    else:
        flagged = [name for name in fields if EncodeRequest.info(name).flag and not name.startswith("prompt")]
        assert not any(f"{name}={fields[name]!r}" in str(cli) for name in flagged)


# ------------------------------------------------------------------------------------------ with a model


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> Encoder:
    return Encoder(bert_folder(tmp_path_factory.mktemp("dense")), device="cpu")


@pytest.fixture(scope="module")
def splade(tmp_path_factory) -> Encoder:
    return Encoder(bert_folder(tmp_path_factory.mktemp("splade"), mlm=True), device="cpu")


def _refused(request: EncodeRequest, encoder: Encoder, fragment: str, error: type = OptionError) -> None:
    with pytest.raises(error) as raised:
        request.check_encoder(encoder)
    assert fragment in str(raised.value), str(raised.value)


def test_model_checks_name_the_field_as_the_caller_spells_it(dense, splade):
    _refused(EncodeRequest(output="sparse"), dense, "sparse output needs a SPLADE model")
    _refused(EncodeRequest(dense=True), dense, "dense=True is for sparse (SPLADE) models")
    _refused(EncodeRequest(dense=True, caller="cli"), dense, "--dense is for sparse (SPLADE) models")
    _refused(EncodeRequest(precision="int8", calibration_size=10, caller="cli"), splade,
             "--precision int8 is for dense models")  # fmt: skip
    _refused(EncodeRequest(precision="ubinary"), splade, "precision='ubinary' is for dense models; ")
    _refused(EncodeRequest(top_k=5, caller="cli"), dense, "--top-k 5 applies to sparse (SPLADE) rows")
    _refused(
        EncodeRequest(top_k=5, threshold=0.5), dense, "top_k=5, threshold=0.5 apply to sparse (SPLADE) rows"
    )
    _refused(EncodeRequest(decoded_tokens=True, dense=True, caller="cli"), splade, "--tokens applies to sparse")
    _refused(EncodeRequest(prompt_name="nope"), dense, "prompt_name 'nope' is not one of the model's prompts",
             ValueError)  # fmt: skip


def test_model_checks_pass_what_the_model_can_do(dense, splade):
    assert (
        EncodeRequest(top_k=5, threshold=0.1, decoded_tokens=True).check_encoder(splade).writes_sparse(splade)
    )
    assert not EncodeRequest(dense=True).check_encoder(splade).writes_sparse(splade)
    # (a sparse model's N × V rows are float32, as docs/precision.md says: no precision; stop 53)
    _refused(EncodeRequest(dense=True, precision="float16"), splade,
             "precision='float16' is not supported with dense=True")  # fmt: skip
    assert not EncodeRequest().check_encoder(dense).writes_sparse(dense)
    assert not EncodeRequest(output="tokens").check_encoder(splade).writes_sparse(splade)


def test_truncate_dim_of_the_loaded_encoder_refuses_token_vectors(tmp_path):
    cut = Encoder(bert_folder(tmp_path / "m"), truncate_dim=4, device="cpu")
    _refused(EncodeRequest(output="tokens"), cut, "truncate_dim=4 cannot be used with output='tokens'")
    _refused(EncodeRequest(output="tokens", caller="cli"), cut, "--dim 4 cannot be used with --token-vectors")
    assert EncodeRequest().check_encoder(cut).output == "vectors"


def test_the_calibration_comes_back_loaded_and_matched(dense, splade, tmp_path):
    texts = ["a cat sat", "dogs run fast", "the sun sets", "rain again"]
    calibration = dense.calibrate(texts)
    path = calibration.save(tmp_path / "cal.json")
    for source in (calibration, calibration.to_dict(), str(path), path):
        loaded = EncodeRequest(precision="int8", calibration=source).check_encoder(dense).calibration
        assert isinstance(loaded, Calibration) and loaded == calibration
    other = Encoder(dense.model_path, pooling="cls", device="cpu")
    with pytest.raises(CalibrationMismatch):
        EncodeRequest(precision="uint8", calibration=str(path)).check_encoder(other)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError):
        EncodeRequest(precision="int8", calibration=str(tmp_path / "bad.json")).check_encoder(dense)


def test_every_field_has_a_flag_or_says_why_not():
    """The one place a field's command-line spelling lives: every field but ``output`` (spelled per value)
    has a flag, and no two fields share one."""
    from dataclasses import fields

    python_only = {"output", "pooling", "finish", "empty_documents"}  # no command-line flag (yet)
    python_only |= {"truncate_dim", "normalize"}  # on the command line these are the encoder's --dim / --normalize
    names = [f.name for f in fields(EncodeRequest) if f.name != "caller"]
    flags = [EncodeRequest.info(name).flag for name in names if name not in python_only]
    assert all(flags) and len(set(flags)) == len(flags)
    assert all(EncodeRequest.info(name).flag is None for name in python_only)


# ------------------------------------------------------------------------------------------ a call's own finishing


def test_a_calls_dimension_is_checked_against_the_model(dense, splade):
    width = dense.dimension
    _refused(EncodeRequest(truncate_dim=width + 1), dense,
             f"truncate_dim must be between 1 and {width} (the model's dimension), got {width + 1}")  # fmt: skip
    _refused(EncodeRequest(truncate_dim=0, caller="http"), dense, f"'dimensions' must be between 1 and {width}")
    _refused(EncodeRequest(truncate_dim=4, caller="http"), splade, "'dimensions' does not apply to a sparse")
    _refused(EncodeRequest(precision="int8", caller="http"), dense, "start the server with --calibration FILE")
    _refused(EncodeRequest(prompt_name="nope", caller="http"), dense,
             "prompt_name 'nope' is not one of the model's prompts (document, query)", ValueError)  # fmt: skip
    with pytest.raises(ValueError) as raised:  # an HTTP answer names no folder of the server
        EncodeRequest(prompt_name="nope", caller="http").check_encoder(dense)
    assert str(dense.model_path) not in str(raised.value)


def _finished_reference(raw: np.ndarray, dimension: int, normalize: bool) -> np.ndarray:
    """A plain float64 Matryoshka cut and L2 normalisation of unfinished rows."""
    cut = raw.astype(np.float64)[:, :dimension]
    return cut / np.linalg.norm(cut, axis=1, keepdims=True) if normalize else cut


@settings(max_examples=15, deadline=None)
@given(dimension=st.integers(1, 32), normalize=st.sampled_from([None, True, False]))
def test_a_calls_own_cut_and_normalisation_match_a_float64_reference(dense, dimension, normalize):
    texts = ["a cat sat on the mat", "dogs run", "x"]
    raw = dense.encode(texts, finish=False)
    got = dense.encode(texts, truncate_dim=dimension, normalize=normalize)
    want = _finished_reference(raw, dimension, dense.normalize if normalize is None else normalize)
    assert got.dtype == np.float32 and got.shape == (3, dimension)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_calls_own_finishing_equals_an_encoder_built_with_it(dense, tmp_path):
    texts = ["a cat sat on the mat", "dogs run fast", "the sun sets"]
    built = Encoder(dense.model_path, truncate_dim=8, normalize=False, device="cpu")
    np.testing.assert_allclose(dense.encode(texts, truncate_dim=8, normalize=False), built.encode(texts), atol=1e-6)
    np.testing.assert_allclose(dense.encode(texts, normalize=dense.normalize), dense.encode(texts), atol=1e-6)
    long = " ".join(f"word{k}" for k in range(150))  # several windows of the tiny model (48 tokens)
    windows = dense.encode([long], long_documents="windows", truncate_dim=8, normalize=False)
    np.testing.assert_allclose(windows, built.encode([long], long_documents="windows"), atol=1e-6)
    raw = dense.encode([long], long_documents="windows", finish=False)
    unit = dense.encode([long], long_documents="windows", truncate_dim=8, normalize=True)
    np.testing.assert_allclose(unit, _finished_reference(raw, 8, True), rtol=1e-5, atol=1e-6)
    numpy_typed = dense.encode(texts, truncate_dim=np.int64(8), normalize=np.False_)  # numpy scalars, as elsewhere
    np.testing.assert_array_equal(numpy_typed, dense.encode(texts, truncate_dim=8, normalize=False))
    chunks = dense.encode_chunks(["one two three four five six"], chunks="tokens:2", truncate_dim=8, normalize=True)
    raw = dense.encode_chunks(["one two three four five six"], chunks="tokens:2", finish=False)
    assert (chunks.start.tolist(), chunks.end.tolist()) == (raw.start.tolist(), raw.end.tolist())
    np.testing.assert_allclose(chunks.vectors, _finished_reference(raw.vectors, 8, True), rtol=1e-5, atol=1e-6)


def test_a_calls_precision_codes_its_own_cut_with_a_calibration_made_for_it(dense):
    from tokenpool.core.quantize import quantize

    texts = [f"calibration text number {k}" for k in range(12)]
    cut = dense.encode(texts, truncate_dim=8, normalize=True)
    calibration = Calibration.from_vectors(cut)
    codes = dense.encode(texts, truncate_dim=8, normalize=True, precision="int8", calibration=calibration)
    np.testing.assert_array_equal(codes, quantize(cut, "int8", calibration))
    with pytest.raises(CalibrationMismatch, match="dimension 8"):  # made for 8 dimensions, not the model's
        dense.encode(texts, precision="int8", calibration=calibration)
    # one calibration passed along with every precision: unused ones must fit the model, not the call's cut
    whole = Calibration.from_vectors(dense.encode(texts))
    np.testing.assert_array_equal(dense.encode(texts, truncate_dim=8, calibration=whole), cut)
    with pytest.raises(CalibrationMismatch, match="'precision': \"int8\": the calibration has dimension"):
        EncodeRequest(precision="int8", calibration=whole, truncate_dim=8, caller="http").check_encoder(dense)


def test_http_messages_spell_values_as_json_or_repr():
    with pytest.raises(OptionError, match="is not supported with"):  # a dict key JSON cannot write
        EncodeRequest(output="tokens", calibration={(1, 2): 3}, caller="http").check()
    with pytest.raises(TypeError, match="'normalize' must be True, False or None"):
        EncodeRequest(normalize="yes", caller="http").check()


# every integer option of EncoderOptions (the ones with a positive-integer flag)
INT_OPTIONS = [name for name in EncoderOptions.names() if EncoderOptions.info(name).kind == "positive_int"]
NUMPY_INTS = st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64])


@given(name=st.sampled_from(INT_OPTIONS), kind=NUMPY_INTS, value=st.integers(1, 127))
def test_integer_options_given_as_numpy_integers_come_back_as_python_ints(name, kind, value):
    """EncoderOptions(window_stride=np.int64(8)).check() kept the numpy integer (check returned self); every
    integer option is now a Python int once checked, numpy's integers taken as they are elsewhere."""
    checked = EncoderOptions(**{name: kind(value)}).check()
    assert type(getattr(checked, name)) is int and getattr(checked, name) == value
    assert checked == EncoderOptions(**{name: value}).check()


@pytest.mark.parametrize("name", INT_OPTIONS)
@pytest.mark.parametrize("value", [True, np.True_, np.int64(0), 2.0, "8"])
def test_integer_options_refuse_bools_and_non_integers(name, value):
    with pytest.raises((TypeError, ValueError), match=f"{name} must be ") as info:
        EncoderOptions(**{name: value}).check()
    assert str(info.value).endswith((f"got {value!r}", f"got {value}"))


def test_the_encoder_keeps_the_checked_python_ints(tmp_path):
    """`Encoder` kept the unchecked options after checking them: its window_stride stayed a numpy integer."""
    encoder = Encoder(bert_folder(tmp_path / "m"), window_stride=np.int64(8), truncate_dim=np.int32(4), device="cpu")
    assert type(encoder.window_stride) is int and encoder.window_stride == 8
    assert type(encoder.options.truncate_dim) is int and type(encoder.options.window_stride) is int


def test_the_rule_table_names_special_tokens_only_where_token_vectors_are_not_written():
    from tokenpool.model.request import OUTPUTS, unread_options

    for output in OUTPUTS:
        unread = unread_options({"special_tokens"}, chunks=None, precision="float32", calibration=None, output=output)
        assert unread == ([] if output == "tokens" else [("special_tokens", "token vectors")])
