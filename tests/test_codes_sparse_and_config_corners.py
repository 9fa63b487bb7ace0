"""Corners of compact codes, sparse rows and model-folder configs, each checked against an independent reference
(sentence-transformers' own modules, numpy.packbits, a float64 loop)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tokenpool import Encoder

TEXTS = ["a cat sat on the mat", "hello world, again and again", "x"]
HIDDEN = 32


@pytest.fixture(scope="module")
def two_dense(tmp_path_factory) -> Path:
    """A tiny BERT saved by sentence-transformers: Transformer → mean Pooling → Dense (tanh) → Dense (relu)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tinymodels import bert_weights

    plain = bert_weights(tmp_path_factory.mktemp("corners") / "plain")
    torch.manual_seed(3)
    modules = [Transformer(str(plain), max_seq_length=48), Pooling(HIDDEN, "mean"),
               Dense(HIDDEN, HIDDEN, activation_function=torch.nn.Tanh()),
               Dense(HIDDEN, HIDDEN, activation_function=torch.nn.ReLU())]  # fmt: skip
    for module in modules[2:]:  # weights large enough that the order of the two layers shows
        for parameter in module.parameters():
            torch.nn.init.normal_(parameter, std=0.5)
    folder = tmp_path_factory.mktemp("corners") / "two-dense"
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def test_modules_run_in_list_order_whatever_their_idx(two_dense, tmp_path):
    """sentence-transformers runs modules.json's entries in list order (its `idx` is written but never read);
    tokenpool sorted them by idx, so a file whose idx disagree with the list ran the Dense layers the other way
    round and gave other vectors, silently."""
    from sentence_transformers import SentenceTransformer

    folder = Path(shutil.copytree(two_dense, tmp_path / "swapped"))
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    modules[2], modules[3] = modules[3], modules[2]  # list: relu Dense first; idx still say tanh first
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    theirs = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    ours = Encoder(folder, device="cpu").encode(TEXTS)
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("width", [13, 16])
def test_unpack_signs_reads_the_bits_numpy_packed(width):
    """``unpack_signs(codes, precision="binary")`` shifted any codes by 128, so uint8 (ubinary) codes given with
    that precision came back with every first bit of a byte flipped, silently; and a negative ``dimension`` cut
    bits off the end of the row. Both are refused now; int8 and uint8 codes still give numpy's bits as ±1."""
    from tokenpool.core.quantize import quantize, unpack_signs

    vectors = np.random.default_rng(width).standard_normal((6, width)).astype(np.float32)
    expected = np.where(vectors > 0, 1.0, -1.0)  # numpy.packbits' bit for each dimension, as a sign
    ubinary = np.packbits(vectors > 0, axis=-1)
    np.testing.assert_array_equal(unpack_signs(ubinary, dimension=width), expected)
    np.testing.assert_array_equal(unpack_signs(quantize(vectors, "binary"), dimension=width, precision="binary"),
                                  expected)  # fmt: skip
    with pytest.raises(TypeError, match="int8"):
        unpack_signs(ubinary, dimension=width, precision="binary")
    for dimension in (0, -3):
        with pytest.raises(ValueError, match="dimension"):
            unpack_signs(ubinary, dimension=dimension)


@pytest.mark.parametrize(
    ("st_config", "match"),
    [
        ({"prompts": {"q": "q: "}, "default_prompt_name": "query"}, "'query'"),
        ({"truncate_dim": 0}, "truncate_dim"),
    ],
)
def test_side_file_errors_name_their_file(run, tmp_path, st_config, match):
    """A bad value in config_sentence_transformers.json that only PoolingConfig's own checks catch (a
    default_prompt_name naming no prompt, truncate_dim 0) was reported as "invalid pooling config in FOLDER
    (1_Pooling/config.json, config_sentence_transformers.json, ...)": every file read, not the one to fix (docs:
    the error names the file and the value). Now one line, exit 2, naming that file alone."""
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 8, "pooling_mode": "mean"}))
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps(st_config))
    status, out, err = run("inspect", tmp_path)
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"{tmp_path / 'config_sentence_transformers.json'}: " in err and match in err
    assert "1_Pooling" not in err


def test_a_rerun_with_a_long_prompt_replaces_its_own_calibration_file(run, tmp_path):
    """Jobs replace ``OUT.calibration.json`` only when its head holds the calibration's format key; the file is
    written with sorted keys, so ``extra`` (which keeps the job's prompt) comes before ``format``, and a prompt of
    a few KiB hid it from the 4 KiB that were searched: the rerun of the same job refused its own earlier file as
    "not a tokenpool calibration". (The file's bytes stay those of earlier versions: tests/test_jobs_fixtures.py.)"""
    from tokenpool.core.quantize import Calibration

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {i} about {w}\n" for i, w in enumerate(["cats", "dogs", "rain"] * 4)))
    prompt = "instruction:" + " ~" * 16 + "x" * 4500 + ": "  # 4.5 KB, a few tokens (one [UNK] for the long word)
    out = tmp_path / "c.npy"
    for attempt in range(2):
        code, _, err = run("embed", corpus, "-o", out, "--precision", "int8", "--calibration-size", "6",
                           "--prompt", prompt)  # fmt: skip
        assert code == 0, (attempt, err)
    assert Calibration.load(f"{out}.calibration.json").extra["prompt"] == prompt
