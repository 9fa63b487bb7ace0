"""Stop 48, the command line as a user meets it: what it reports agrees with the Encoder, and the docs' claims
about it hold."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("model_type", ["gpt2", "distilbert"])
def test_inspect_dimension_of_a_folder_whose_config_names_the_width_its_own_way(run, tmp_path, model_type):
    """A GPT-2 (``n_embd``) or DistilBERT (``dim``) folder without a pooling config: inspect said "dimension
    none (default)" while the Encoder gives 32-wide vectors (it read only ``hidden_size`` from config.json)."""
    from tinymodels import tiny_decoder, tiny_encoder

    from tokenpool import Encoder

    folder = (tiny_decoder if model_type == "gpt2" else tiny_encoder)(tmp_path, model_type)
    code, out, err = run("inspect", folder, "--json")
    assert code == 0, err
    shown = json.loads(out)["fields"]["dimension"]
    assert shown["value"] == Encoder(folder, device="cpu").encode(["a text"]).shape[1] == 32
    # (stop 61: the width under its family's key is the folder's embedding_dimension, read from config.json, as
    # for a BERT folder without a pooling config)
    assert shown["source"] == "config.json"


def test_docs_cli_table_names_every_command():
    """docs/cli.md said "It has five commands" and its table left out ``export-onnx``."""
    import re
    from pathlib import Path

    from tokenpool.cli import build_parser

    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `tokenpool ([a-z-]+)", text, flags=re.M))
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert listed == commands
    assert f"It has {['no', 'one', 'two', 'three', 'four', 'five', 'six', 'seven'][len(commands)]} commands" in text


@pytest.mark.parametrize("kind", ["file", "dangling link"])
def test_export_onnx_into_a_path_under_a_file_names_that_file(run, tmp_path, tiny_bert_folder, kind):
    """``export-onnx --output ok.txt/x.onnx`` said "[Errno 20] Not a directory: 'ok.txt/.tokenpool-export-…'",
    naming a temporary file the user never asked for; the error names the path that is no folder, and the
    user's file is left as it was."""
    blocker = tmp_path / "ok.txt"
    if kind == "file":
        blocker.write_text("mine\n")
    else:
        blocker.symlink_to(tmp_path / "nowhere")
    code, _, err = run("export-onnx", tiny_bert_folder, "--output", blocker / "x.onnx")
    assert code == 2 and err.count("\n") == 1, err
    assert f"cannot write into '{blocker}': not a folder" in err and ".tokenpool-export" not in err
    assert blocker.is_symlink() or blocker.read_text() == "mine\n"
