"""Stop 66 review of s66-folders: behaviour its changes must keep, each checked against an independent
reference (transformers' own model, the old numbering of a graph's position ids)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROWS = [[0, 7, 8, 2], [0, 9, 10, 11, 12, 13, 14, 15, 2]]  # <s> ... </s>, the short one first


def _roberta_graph_taking_positions(folder: Path) -> Any:
    """A tiny random RoBERTa saved by transformers with transformers' default pad id, and an ONNX graph of it
    in onnx/model.onnx that takes ``position_ids`` (a third party's export); the saved model is returned."""
    import torch
    from tinymodels import export_taking_positions
    from transformers import AutoConfig, AutoModel, RobertaConfig

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "roberta", vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40, pad_token_id=RobertaConfig().pad_token_id, attn_implementation="eager",
    )  # fmt: skip
    model = AutoModel.from_config(config).eval()
    model.save_pretrained(folder)
    export_taking_positions(model, folder / "onnx" / "model.onnx", first_position=config.pad_token_id + 1)
    return AutoModel.from_pretrained(folder, attn_implementation="eager").eval()


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_graph_taking_position_ids_of_a_folder_saving_no_vocab_size_nor_pad_id_is_numbered_as_torch(
    tmp_path, side
):
    """A RoBERTa-like config.json without vocab_size (a size read as transformers' default) and without
    pad_token_id: its default pad id was read with the default size and numbered the graph's position_ids,
    as torch numbers them; s66-folders refused the graph ("no an integer pad_token_id")."""
    pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tokenpool.model.onnx import OnnxRunner

    folder = tmp_path / "roberta"
    model = _roberta_graph_taking_positions(folder)
    saved = json.loads((folder / "config.json").read_text())
    unsaved = {key: value for key, value in saved.items() if key not in ("vocab_size", "pad_token_id")}
    (folder / "config.json").write_text(json.dumps(unsaved))
    runner = OnnxRunner(folder, sparse=False, device=None, dtype=None)
    assert runner.input_names == ["input_ids", "attention_mask", "position_ids"]
    width, pad = max(map(len, ROWS)), model.config.pad_token_id
    ids, mask = np.full((2, width), pad, dtype=np.int64), np.zeros((2, width), dtype=np.int64)
    for row, tokens in enumerate(ROWS):
        place = slice(width - len(tokens), width) if side == "left" else slice(0, len(tokens))
        ids[row, place], mask[row, place] = tokens, 1
    hidden = runner.forward(ids, mask)[0]
    for row, tokens in enumerate(ROWS):
        with torch.inference_mode():  # the row alone through transformers: its own position ids
            alone = model(input_ids=torch.tensor([tokens]))[0][0].numpy()
        np.testing.assert_allclose(hidden[row][mask[row].astype(bool)], alone, rtol=0, atol=1e-5)
