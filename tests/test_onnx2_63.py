"""Stop 63, ONNX follow-ups: the export cache's key and the remote code an export ran."""

from __future__ import annotations

import numpy as np
from tinymodels import bert_weights, edit_json

SHIFTED_BERT = """from transformers import BertModel
SHIFT = {shift}
class ShiftedBert(BertModel):
    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.last_hidden_state.add_(SHIFT)
        return out
"""


def _transformers_means(folder, texts: list[str]) -> np.ndarray:
    """Mean-pooled last hidden states of ``folder``'s own model class as transformers runs it (float64 mean)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = []
    for text in texts:
        batch = tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            rows.append(model(**batch)[0][0].double().mean(0).numpy())
    return np.stack(rows)


def test_an_export_of_a_folder_whose_own_code_changed_is_not_read_from_the_cache(tmp_path, monkeypatch):
    """With trust_remote_code the folder's modeling_*.py decides the graph, but the export cache was keyed on
    config.json and the weights only: after the code changed (a shift of 5.25 on every hidden state), the onnx
    runtime ran the old code's cached graph (vectors 5.25 off transformers' per dimension). Now the folder's
    Python files are in the key when its config has an auto_map: the new code is exported."""
    from tokenpool import Encoder

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    model = bert_weights(tmp_path / "own_code_model")
    code = model / "modeling_shift.py"
    edit_json(model / "config.json", auto_map={"AutoModel": "modeling_shift.ShiftedBert"})
    texts = ["a short text", "another sentence about the weather today"]
    for shift in (0.0, 5.25):
        code.write_text(SHIFTED_BERT.format(shift=shift))
        encoder = Encoder(model, runtime="onnx", pooling="mean", normalize=False, trust_remote_code=True)
        np.testing.assert_allclose(encoder.encode(texts), _transformers_means(model, texts), atol=1e-4)


def test_an_exported_file_whose_folders_own_code_changed_since_is_refused(tmp_path):
    """export-onnx's record named the digests of config.json and the weights only, so a graph exported before the
    folder's modeling_*.py changed ran as this folder's model (vectors 5.25 off transformers' per dimension). Its
    record names the Python files now (when config.json has an auto_map), and the stale graph is refused."""
    import pytest

    from tokenpool import Encoder
    from tokenpool.errors import ModelFolderError
    from tokenpool.model.onnx_export import export_fp32

    model = bert_weights(tmp_path / "own_code_model2")
    code = model / "modeling_shift.py"
    code.write_text(SHIFTED_BERT.format(shift=0.0))
    edit_json(model / "config.json", auto_map={"AutoModel": "modeling_shift.ShiftedBert"})
    export_fp32(model, tmp_path / "model.onnx", trust_remote_code=True)
    code.write_text(SHIFTED_BERT.format(shift=5.25))
    with pytest.raises(ModelFolderError, match=r"exported from other files .* modeling_shift\.py"):
        Encoder(model, runtime="onnx", onnx_file=tmp_path / "model.onnx", trust_remote_code=True)
