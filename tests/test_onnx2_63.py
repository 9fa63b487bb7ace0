"""Stop 63, ONNX follow-ups: the export cache's key and the remote code an export ran."""

from __future__ import annotations

import numpy as np
from tinymodels import SHIFTED_BERT, bert_weights, edit_json, minilm_tokenizer


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


LENGTH_BERT = """from transformers import BertModel
class LengthBert(BertModel):
    def forward(self, input_ids=None, **kwargs):
        out = super().forward(input_ids=input_ids, **kwargs)
        if input_ids.shape[1] > 8:  # (Python: a trace on 8 tokens keeps no trace of it)
            out.last_hidden_state.add_(1.0)
        return out
"""


def test_an_export_that_gives_other_states_at_other_lengths_is_refused_and_leaves_nothing(tmp_path):
    """A model whose forward depends on the sequence length in Python was traced on the 8-token example and
    published: the graph's states were 1.0 off the model's on longer texts, silently (as LongT5's transient-global
    attention was). The new graph is run on a second example of other lengths and compared with the model: a
    `ModelFolderError` naming the model type, the folder and the difference, and no file left."""
    import pytest

    from tokenpool.errors import ModelFolderError
    from tokenpool.model.onnx import export_onnx

    model = bert_weights(tmp_path / "length_model")
    (model / "modeling_length.py").write_text(LENGTH_BERT)
    edit_json(model / "config.json", auto_map={"AutoModel": "modeling_length.LengthBert"})
    out = tmp_path / "out"
    with pytest.raises(ModelFolderError, match=rf"bert model in {model} gives other .*max difference 1\b.*torch runtime"):
        export_onnx(model, out / "model.onnx", trust_remote_code=True)
    assert list(out.iterdir()) == []


def test_an_export_onnxruntime_cannot_run_is_refused_at_export(tmp_path, monkeypatch):
    """A Cohere model exported fine, then onnxruntime failed on every real text ("Attempting to broadcast an axis"
    at self_attn/Mul_3: the trace kept the example's batch of 2), and only the first encode said so. The export
    now runs its graph once on a second example: a RuntimeError naming the model and the torch runtime, the cache
    left empty."""
    import pytest
    import torch
    from transformers import CohereConfig, CohereModel

    from tokenpool import Encoder

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    config = CohereConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    CohereModel(config).save_pretrained(tmp_path / "cohere")
    minilm_tokenizer().save_pretrained(tmp_path / "cohere")
    with pytest.raises(RuntimeError, match=r"cannot run the cohere model exported from .*cohere .*Mul.*torch runtime"):
        Encoder(tmp_path / "cohere", runtime="onnx", pooling="mean")
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
