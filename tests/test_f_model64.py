"""Stop 64 follow-up fixes (f-model): remote auto_map code in the ONNX export key, Canine folders, T5Gemma2."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tokenpool.errors import ModelFolderError
from tokenpool.model.onnx import cached_export_path, check_export_source, export_sources


def _remote_code_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A folder whose config.json takes its model class from another repo (``other/repo``), which transformers
    finds as a folder of that name in the working folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    folder.mkdir()
    config = {"model_type": "bert", "hidden_size": 8, "auto_map": {"AutoModel": "other/repo--modeling_x.X"}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"weights")
    code = tmp_path / "other" / "repo" / "modeling_x.py"
    code.parent.mkdir(parents=True)
    code.write_text("X = 1\n")
    return folder, code


def test_remote_auto_map_code_changes_the_export_cache_key(tmp_path, monkeypatch):
    folder, code = _remote_code_folder(tmp_path, monkeypatch)
    before = cached_export_path(folder)
    assert cached_export_path(folder) == before
    code.write_text("X = 22  # the other repo updated\n")
    assert cached_export_path(folder) != before


def test_remote_auto_map_code_is_in_the_export_record(tmp_path, monkeypatch):
    folder, code = _remote_code_folder(tmp_path, monkeypatch)
    digests = export_sources(folder)["digests"]
    expected = "sha256:" + hashlib.sha256(code.read_bytes()).hexdigest()
    assert digests[code.absolute().as_posix()] == expected
    assert digests["config.json"] == "sha256:" + hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()


def test_export_of_older_remote_auto_map_code_is_refused(tmp_path, monkeypatch):
    folder, code = _remote_code_folder(tmp_path, monkeypatch)
    record = {"source": export_sources(folder)}
    check_export_source(tmp_path / "model.onnx", record, folder)  # (unchanged: taken)
    code.write_text("X = 22  # the other repo updated\n")
    with pytest.raises(ModelFolderError, match="modeling_x.py"):
        check_export_source(tmp_path / "model.onnx", record, folder)


def test_remote_auto_map_module_found_nowhere_is_keyed(tmp_path, monkeypatch):
    folder, code = _remote_code_folder(tmp_path, monkeypatch)
    code.unlink()
    before = cached_export_path(folder)
    code.write_text("X = 1\n")  # (the module appears: another export)
    assert cached_export_path(folder) != before


@pytest.fixture(scope="module")
def canine_folder(tmp_path_factory) -> Path:
    """A 2-layer random CanineModel with its CanineTokenizer (no vocabulary file, no vocab_size in config.json)."""
    import torch
    from transformers import CanineConfig, CanineModel, CanineTokenizer

    folder = tmp_path_factory.mktemp("canine")
    torch.manual_seed(0)
    config = CanineConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                          max_position_embeddings=256, num_hash_buckets=256, num_hash_functions=4,
                          local_transformer_stride=16)  # fmt: skip
    CanineModel(config).save_pretrained(folder)
    CanineTokenizer(model_max_length=256).save_pretrained(folder)
    assert "vocab_size" not in json.loads((folder / "config.json").read_text())
    return folder


def test_canine_folder_encodes_as_sentence_transformers(canine_folder):
    from sentence_transformers import SentenceTransformer

    from tokenpool import Encoder

    texts = ["héllo wörld 😀", "a", "Canine reads Unicode code points, " * 4, "中文 ✓"]
    expected = SentenceTransformer(str(canine_folder), device="cpu").encode(texts, convert_to_numpy=True)
    got = Encoder(str(canine_folder), pooling="mean", normalize=False).encode(texts)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


def _t5gemma2_folder(folder: Path, whole_class: str) -> Path:
    """A 2-layer random T5Gemma2 checkpoint (``T5Gemma2Model``: ``encoder.*`` tensors; ``...ForConditional
    Generation``, as google/t5gemma-2 ships: ``model.encoder.*``) with a 1-layer vision tower and the MiniLM
    tokenizer."""
    import torch
    import transformers
    from tinymodels import minilm_tokenizer

    text = {"vocab_size": 30522, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 128,
            "layer_types": ["full_attention"] * 2}  # fmt: skip
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 28, "patch_size": 14}  # fmt: skip
    encoder = {"text_config": text, "vision_config": vision, "mm_tokens_per_image": 4}
    config = transformers.T5Gemma2Config(encoder=encoder, decoder=dict(text), pad_token_id=0)
    torch.manual_seed(0)
    getattr(transformers, whole_class)(config).save_pretrained(folder)
    minilm_tokenizer().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("whole_class", ["T5Gemma2Model", "T5Gemma2ForConditionalGeneration"])
def test_t5gemma2_folder_runs_its_encoder(tmp_path, whole_class):
    import torch
    from tinymodels import minilm_tokenizer
    from transformers import AutoModel

    from tokenpool import Encoder

    folder = _t5gemma2_folder(tmp_path / "t5gemma2", whole_class)
    texts = ["hello world", "a", "T5Gemma2 runs its encoder alone " * 4]
    batch = minilm_tokenizer()(texts, padding=True, return_tensors="pt")
    encoder = AutoModel.from_pretrained(folder).double().eval().get_encoder()  # (the reference: float64)
    with torch.no_grad():
        states = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).double()
    expected = ((states * mask).sum(1) / mask.sum(1)).numpy()
    got = Encoder(str(folder), pooling="mean", normalize=False).encode(texts)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


def test_inspect_reads_a_canine_folder_as_the_encoder_loads_it(canine_folder, run):
    """`tokenpool inspect` refused a Canine folder the Encoder loads ("vocab_size must be a positive int, got
    None"): its dimension is the Encoder's."""
    from tokenpool import Encoder

    code, out, err = run("inspect", canine_folder, "--json")
    assert code == 0, err
    assert json.loads(out)["fields"]["dimension"]["value"] == Encoder(str(canine_folder), pooling="mean").dimension
