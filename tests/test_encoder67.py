"""Stop 67 (the Encoder facade and CLI plumbing): device spellings refused naming the value as it was written,
DataFrames and mappings refused as texts, number flags refused through one helper, and embed's argv fuzzed."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenpool.errors import OptionError
from tokenpool.model.options import EncoderOptions, spelled_as


@pytest.mark.parametrize("device", ["cuda:300", "cuda:99999999999999999999"])
def test_a_device_index_too_big_in_serves_model_list_is_named_as_written(run, device):
    """``tokenpool serve --model a=FOLDER,device=cuda:300`` was told ``--model a=...,device cuda:300: ...``: an
    option spelling without its ``=``, which the list would refuse ("is not OPTION=VALUE"). The message writes
    the option as the list takes it, as every other option of the list is named (``onnx-file=m.onnx``)."""
    code, _, err = run("serve", "--port", "0", "--model", f"a=/no/such/folder,device={device}")
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"tokenpool serve: error: --model a=...,device={device}: a device index is at most 127"
    )
    code, _, err = run("serve", "--port", "0", "--model", "a=/no/such/folder,onnx-file=m.onnx")  # (the reference)
    assert "--model a=...,onnx-file=m.onnx needs" in err


def test_a_device_index_too_big_keeps_its_python_and_flag_spellings():
    with pytest.raises(OptionError, match=r"^device cuda:300: a device index is at most 127$"):
        EncoderOptions(device="cuda:300").check()
    flag = pytest.raises(OptionError, match=r"^--device cuda:300: a device index is at most 127$")
    with spelled_as({"device": "--device"}), flag:
        EncoderOptions(device="cuda:300").check()


@pytest.mark.parametrize("device", [1.5, ["cpu"], {"type": "cpu"}])
@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_a_device_of_no_device_type_is_one_line_naming_the_value(device, runtime):
    """``Encoder(device=1.5)`` (runtime torch) gave torch's several-line overload list ("device() received an
    invalid combination of arguments ... * (torch.device device) ..."), where runtime onnx gave the one line every
    malformed device gets; both give that line now (a device is a string, a torch.device or a GPU index)."""
    with pytest.raises(OptionError, match=r"^unknown device .+: a device type and optional index") as caught:
        EncoderOptions(device=device, runtime=runtime).check()
    assert "\n" not in str(caught.value) and repr(device) in str(caught.value)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from tinymodels import bert_folder

    from tokenpool import Encoder

    return Encoder(bert_folder(tmp_path_factory.mktemp("enc67") / "bert"), device="cpu")


def test_a_dataframe_is_refused_not_read_as_its_column_names(encoder):
    """``encoder.encode(pandas.DataFrame({"text": [...3 texts...]}))`` gave ONE vector, of the word "text": a
    DataFrame iterates over its column names. sentence-transformers refuses it ("Unsupported input type:
    DataFrame"); it is the TypeError a 2-D array gets, naming its type and shape, in every method that reads
    texts. Its column (a Series) is the texts, as a list of them is."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"text": ["hello world", "the quick brown fox", "x"]})
    message = r"^texts must be a str or a 1-D sequence of str, got a DataFrame of shape \(3, 1\)$"
    for method in (encoder.encode, encoder.encode_queries, encoder.encode_documents, encoder.tokenize):
        with pytest.raises(TypeError, match=message):
            method(frame)
    expected = encoder.encode(["hello world", "the quick brown fox", "x"])
    assert np.array_equal(encoder.encode(frame["text"]), expected)
    assert np.array_equal(encoder.encode(frame["text"].to_numpy()), expected)


def test_a_mapping_other_than_a_dict_is_refused_as_a_dict_is(encoder):
    """A dict was refused ("got dict": its iteration gives its keys), while a read-only mapping of the same items
    (``types.MappingProxyType``, a class's ``__dict__``) was encoded as its keys. Every mapping is refused now; a
    dict's ``keys()`` (texts the caller chose to give) is still encoded, as a list of them is."""
    import types

    with pytest.raises(TypeError, match=r"^texts must be a str or a list of str, got mappingproxy$"):
        encoder.encode(types.MappingProxyType({"hello world": 1}))
    assert np.array_equal(encoder.encode({"hello world": 1}.keys()), encoder.encode(["hello world"]))


@pytest.mark.parametrize(("argv", "kind"), [
    (["embed", "in.txt", "-o", "out.npy", "--batch-size"], "a positive integer"),
    (["embed", "in.txt", "-o", "out.npy", "--checkpoint-seconds"], "a number >= 0"),
    (["serve", "--port"], "a port number (0-65535)"),
])  # fmt: skip
@pytest.mark.parametrize("given", ["x" * 5000, "9" * 80 + "x"])
def test_a_long_bad_number_flag_is_cut_as_bench_cuts_it(run, argv, kind, given):
    """``tokenpool embed --batch-size <5,000 characters>`` echoed all 5,000 in its one error line, where ``tokenpool
    bench --batch`` (`errors.option_integer`) cuts a caller's value to its first 60 characters: the number flags
    of every command now refuse through the one helper, so the value is shown as bench shows it."""
    code, _, err = run("bench", "--batch", given)
    assert code == 2
    shown = err.strip().split(", got ", 1)[1]
    assert len(shown) < 70 and shown.startswith("'" + given[:10])
    code, _, err = run(*argv, given)
    assert code == 2
    command = f"tokenpool {argv[0]}"
    assert err.strip() == f"{command}: error: argument {argv[-1]}: expected {kind}, got {shown} (see {command} --help)"


_EMBED_FLAGS = ["--batch-size", "--max-batch-tokens", "--max-length", "--dim", "--window-stride", "--top-k",
                "--calibration-size", "--chunk-size", "--threshold", "--checkpoint-seconds", "--device", "--dtype",
                "--runtime", "--pooling", "--long-documents", "--precision", "--chunking", "--format", "--chunks"]
_BAD_VALUES = ["", " ", "-1", "abc", "1e400", "nan", "-inf", "0x10", "1_000", "１", "x" * 500, "9" * 5000 + "x",
               "a\nb", "cuda:300", "meta", "tpu", "cls,,mean", "--"]


@given(flag=st.sampled_from(_EMBED_FLAGS), value=st.sampled_from(_BAD_VALUES))
@settings(max_examples=80)
def test_embed_refuses_a_bad_flag_value_in_one_line_with_status_2(tmp_path_factory, flag, value):
    """Every bad value of an embed flag: exit status 2 and ONE stderr line naming the command, no traceback
    (argparse's usage block, torch's several-line errors and tracebacks would each break it)."""
    from tokenpool import cli

    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "in.txt").write_text("hello\n", encoding="utf-8")
    argv = ["embed", str(folder / "in.txt"), "-o", str(folder / "out.npy"), "--model", str(folder / "no-model")]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = cli.main([*argv, flag, value])
        except SystemExit as exc:
            code = exc.code
    lines = err.getvalue().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("tokenpool embed: error: "), err.getvalue()
