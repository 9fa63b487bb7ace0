"""Stop 56, command line: refusals name the options as typed (``--max-queue``, ``--onnx-file``, ``--keep-fp32``)
while Python callers keep the parameter names; full option names only; calibration texts from stdin recorded
as stdin."""

from __future__ import annotations

import hashlib
import io
import json
import sys

import pytest

from tokenpool.errors import OptionError
from tokenpool.model.options import EncoderOptions, spell
from tokenpool.serve.settings import ServeSettings

TEXTS = ["a first calibration text", "zwei: Ünïcödé", "the third one, a little longer than the others", "4"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--max-queue", "10", "--max-inputs", "20"],
         "--max-queue 10 must be at least --max-inputs 20, or a request of --max-inputs inputs"),
        (["serve", "--read-timeout", "0"], "--read-timeout must be above 0 seconds"),
        (["serve", "--api-key", " key"], "--api-key begins or ends with whitespace"),
        (["serve", "--served-model-name", ""], "--served-model-name must be non-empty strings"),
        (["embed", "in.txt", "-o", "out.npy", "--onnx-file", "my model.onnx"],
         "--onnx-file 'my model.onnx' needs --runtime onnx (the runtime is 'torch')"),
        (["export-onnx", "--optimize", "--keep-fp32", "softmax"],
         "--keep-fp32 and --activations static apply to --quantize int8 only"),
        (["export-onnx", "--quantize", "int8", "--calibration-texts", "t.txt", "--keep-fp32", "last:0"],
         "--keep-fp32 last:0: last:N needs a positive layer count N"),
    ],
)  # fmt: skip
def test_command_refusals_name_the_options_as_typed(run, argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(*argv)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert message in err, err
    assert "_" not in err.split(": error: ")[1].split(",")[0], err  # no Python name (max_queue, onnx_file)
    assert spell("max_queue", 10) == "max_queue=10"  # the command's spelling ends with it


def test_a_key_from_the_environment_is_named_by_its_variable(run, monkeypatch):
    monkeypatch.setenv("TOKENPOOL_API_KEY", "key\n")
    code, _, err = run("serve")
    assert code == 2 and "TOKENPOOL_API_KEY begins or ends with whitespace" in err, err


def test_python_callers_still_see_parameter_names():
    from tokenpool.model.onnx_export import Recipe

    with pytest.raises(OptionError, match=r"^max_queue=10 must be at least max_inputs=20, .* of max_inputs inputs"):
        ServeSettings(max_queue=10, max_inputs=20)
    with pytest.raises(OptionError, match=r"^onnx_file='x\.onnx' needs runtime='onnx' \(the runtime is 'torch'\)"):
        EncoderOptions(onnx_file="x.onnx").check()
    with pytest.raises(OptionError, match=r"^keep_fp32 and activations='static' apply to quantize='int8' only"):
        Recipe(optimize=True, keep_fp32=("softmax",))
    with pytest.raises(OptionError, match=r"^api_key begins or ends"):
        ServeSettings(api_key="key ")


@pytest.mark.parametrize(
    "argv",
    [["--vers"], ["embed", "in.txt", "-o", "out.npy", "--norm"], ["serve", "--max-q", "10"],
     ["export-onnx", "--opt"], ["inspect", "--mod", "x"]],
)  # fmt: skip
def test_shortened_options_are_refused_by_every_parser(run, argv):
    """A prefix of an option (``--norm`` for ``--normalize``) silently changes meaning once another option
    shares it: every parser, the top-level one too, takes full names only."""
    code, out, err = run(*argv)
    flag = next(arg for arg in reversed(argv) if arg.startswith("--"))
    assert code == 2 and out == "" and f"unrecognized arguments: {flag}" in err, err


def test_calibration_texts_from_stdin_are_recorded_as_stdin(run, tiny, tmp_path, monkeypatch):
    """``--calibration-texts -`` was recorded as a file named ``-`` in the working folder; now as stdin with
    the texts' count and the SHA-256 of their JSON list."""
    pytest.importorskip("onnxruntime")
    from tokenpool.model.onnx import export_onnx
    from tokenpool.model.onnx_export import read_record

    source = export_onnx(tiny, tmp_path / "fp32" / "model.onnx")
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "q.onnx"
    argv = ("export-onnx", tiny, "--onnx-file", source, "--output", target, "--quantize", "int8")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, _, err = run(*argv, "--calibration-texts", "-")
    assert code == 2 and "error: <stdin>: no calibration texts" in err, err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\n".join(TEXTS).encode() + b"\n")))
    code, out, err = run(*argv, "--calibration-texts", "-", "--force")
    assert code == 0, err
    digest = hashlib.sha256(json.dumps(TEXTS).encode()).hexdigest()
    named = read_record(target)["quality"]["quantize"]["texts"]
    assert named == f"<stdin>: {len(TEXTS)} texts, sha256 {digest}"
    assert named in out and str(tmp_path / "-") not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["serve", "--served-model-name", "m\udcff"],
      "argument --served-model-name: expected UTF-8 text, got byte 0xff at character 2"),
     (["serve", "--model", "n\udcff=folder"], "the model NAME: expected UTF-8 text, got byte 0xff at character 2")],
)  # fmt: skip
def test_serve_refuses_a_model_name_that_is_not_utf8(run, argv, message):
    """A served name that is not UTF-8 (bytes of a Latin-1 shell) started a server whose every JSON answer
    naming the model failed (500: orjson cannot write a lone surrogate); now refused at start, exit 2."""
    orjson = pytest.importorskip("orjson")
    with pytest.raises(TypeError, match="not valid UTF-8"):  # the server's JSON writer cannot write such a name
        orjson.dumps(argv[-1].partition("=")[0])
    code, _, err = run(*argv)
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_the_server_answers_requests_in_python_names_not_the_commands_flags(run, monkeypatch):
    """The flags are the command's spelling while it sets up; what the running server tells a request is not
    spelled as ``tokenpool serve``'s flags (its requests' threads inherit the command's context)."""
    from tokenpool.serve import server

    seen = []
    monkeypatch.setattr(server, "serve_forever", lambda *args, **kwargs: seen.append(spell("max_queue", 1)) or 0)
    code, _, err = run("serve", "--port", "0", "--max-queue", "4096")
    assert code == 0 and seen == ["max_queue=1"], err


def test_inspect_names_a_file_given_as_model_as_no_folder(run, tmp_path):
    """``tokenpool inspect corpus.txt`` (a file that exists) said "no such model folder"."""
    file = tmp_path / "corpus.txt"
    file.write_text("a text\n", encoding="utf-8")
    code, _, err = run("inspect", file)
    assert code == 2 and err.strip().endswith(f"{str(file)!r}: not a folder"), err
    code, _, err = run("inspect", tmp_path / "absent")
    assert code == 2 and "no such model folder" in err, err


def test_empty_calibration_texts_path_is_refused_not_skipped(run, tiny, tmp_path, monkeypatch):
    """``--calibration-texts ''`` was taken as "no texts" (a falsy path): the variant was made and scored on the
    built-in check texts as if the option had not been given; now the path is read, and refused."""
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    code, _, err = run("export-onnx", tiny, "--output", tmp_path / "o.onnx", "--optimize", "--calibration-texts", "")
    assert code == 2 and "error: : cannot tell the input format" in err, err
    assert not (tmp_path / "o.onnx").exists()
