"""Model folders whose files contradict each other (stop 47's hunt): weights that lack tensors the config
asks for, or hold them in other shapes, are refused by the one weight loader both runtimes use, naming the
tensors, where transformers would fill them with random values (or fail pointing at a report it never showed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("sentence_transformers")
from tinymodels import bert_folder  # noqa: E402

from tokenpool import Encoder  # noqa: E402
from tokenpool.errors import ModelFolderError  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return bert_folder(tmp_path_factory.mktemp("s47") / "base", normalize=False)


@pytest.fixture
def folder(base, tmp_path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "model"))


def _drop_tensor(folder: Path, fragment: str) -> str:
    from safetensors.numpy import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    key = next(k for k in weights if fragment in k)
    del weights[key]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return key


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_weights_lacking_a_tensor_are_refused_on_both_runtimes(folder, tmp_path, monkeypatch, runtime):
    """The torch runtime refused a checkpoint lacking a tensor; the onnx runtime exported it with the tensor
    filled with random values by transformers and encoded with that model, silently."""
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    key = _drop_tensor(folder, "layer.1.output.dense.weight")
    with pytest.raises(ModelFolderError, match=rf"lack 1 tensors .*{key}"):
        Encoder(folder, device="cpu", runtime=runtime)
    assert not list((tmp_path / "cache").rglob("*.onnx"))  # nothing exported


@pytest.mark.parametrize(("key", "value"), [("vocab_size", 100), ("max_position_embeddings", 64)])
def test_config_sizes_the_weights_do_not_have_name_the_tensors(folder, run, key, value):
    """config.json giving a size the weights do not have failed with transformers' "thus raising an error. For
    details look at the above report!" (a report tokenpool had silenced), exit 1; now a ModelFolderError (exit
    2) names a tensor and both shapes."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, key: value}), encoding="utf-8")
    with pytest.raises(ModelFolderError, match=r"shapes its config\.json gives.*embeddings.*\(\d+, 32\)"):
        Encoder(folder, device="cpu")
    corpus = folder.parent / "in.txt"
    corpus.write_text("one\ntwo\n", encoding="utf-8")
    code, _, err = run("embed", corpus, "-o", folder.parent / "out.npy", "--model", folder, "--device", "cpu")
    assert code == 2 and "shapes" in err and len(err.strip().splitlines()) == 1


def test_complete_weights_still_load(folder):
    vectors = Encoder(folder, device="cpu").encode(["a complete checkpoint"])
    assert vectors.shape == (1, 32) and np.isfinite(vectors).all()


# --- the onnx runtime's tokenizer on SentencePiece-family folders saved by older transformers (the Hub's files)

_CORPUS = ["Hello World, the quick brown fox jumps over the lazy dog.", "naïve café über 日本語 テキスト",
           "don't stop believing!!! max six taxis", "A LONGER sentence with MANY Words and numbers 12345"] * 40
_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def _charsmap_x_to_y() -> str:
    """A SentencePiece precompiled charsmap (double-array trie + targets) that maps "x" to "y", base64."""
    import base64
    import struct

    units = [0] * 512
    units[0] = 256 << 10  # the root's offset: "x" (0x78) leads to unit 256 ^ 0x78
    units[256 ^ 0x78] = (1 << 10) | (1 << 8) | 0x78  # label "x", a leaf at offset 1: target 0 ("y")
    trie = struct.pack("<512I", *units)
    return base64.b64encode(struct.pack("<I", len(trie)) + trie + b"y\0").decode()


def _sentencepiece_folder(folder: Path, family: str, pipeline: dict, config: dict) -> Path:
    """A tokenizer of ``family`` (xlmr, t5: Unigram; llama: BPE with byte fallback) trained on a tiny corpus,
    saved by transformers 5, then given the tokenizer.json ``pipeline`` and tokenizer_config.json ``config`` of
    a folder saved by older versions."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    unigram = family != "llama"
    tokenizer = Tokenizer(models.Unigram() if unigram else models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = (trainers.UnigramTrainer(vocab_size=150, special_tokens=_SPECIALS, unk_token="<unk>") if unigram
               else trainers.BpeTrainer(vocab_size=200, special_tokens=_SPECIALS))  # fmt: skip
    tokenizer.train_from_iterator(_CORPUS, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    if unigram:
        vocab = [tuple(item) for item in model["vocab"]]
        made = transformers.XLMRobertaTokenizer(vocab=vocab) if family == "xlmr" else transformers.T5Tokenizer(
            vocab=vocab, extra_ids=0)  # fmt: skip
    else:
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
        made = transformers.LlamaTokenizer(vocab=model["vocab"], merges=merges)
    made.save_pretrained(folder)
    saved = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    (folder / "tokenizer.json").write_text(json.dumps({**saved, **pipeline}), encoding="utf-8")
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    (folder / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, **config}), encoding="utf-8")
    return folder


_METASPACE = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
_HUB_XLMR = {  # multilingual-e5 / bge-m3: the charsmap, then runs of spaces to one
    "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Precompiled", "precompiled_charsmap": _charsmap_x_to_y()},
        {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
    "pre_tokenizer": _METASPACE,
}  # fmt: skip
_HUB_LLAMA = {  # Llama 2 / Mistral 7B: ▁ prepended and spaces replaced by the normalizer, no pre-tokenizer
    "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
    "pre_tokenizer": None,
}  # fmt: skip
SENTENCEPIECE_CASES = {
    "xlmr-hub": ("xlmr", _HUB_XLMR, {}),
    "xlmr-no-prefix-space": ("xlmr", _HUB_XLMR, {"add_prefix_space": False}),
    "t5-generic-sentencepiece": ("t5", _HUB_XLMR, {}),
    "llama-hub": ("llama", _HUB_LLAMA, {}),
    "llama-hub-legacy": ("llama", _HUB_LLAMA, {"legacy": True}),
    "llama-no-prefix-space": ("llama", {}, {"add_prefix_space": False}),
}
_PIECES = ["x", "max", " ", "  ", "\t", "\n", "<s>", "</s>", "<mask>", "Hello", "world", "taxis", "é", "日本", "!"]


@pytest.fixture(scope="module")
def sentencepiece_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sentencepiece")
    return {name: _sentencepiece_folder(root / name, *case) for name, case in SENTENCEPIECE_CASES.items()}


@pytest.mark.parametrize("name", sorted(SENTENCEPIECE_CASES))
@settings(max_examples=40, deadline=None)
@given(pieces=st.lists(st.sampled_from(_PIECES), max_size=8))
def test_onnx_tokenizer_of_sentencepiece_families_matches_transformers(sentencepiece_folders, name, pieces):
    """transformers 5 rebuilds an XLM-R / T5 tokenizer's pipeline (whitespace split + Metaspace, only the saved
    charsmap kept) and a Llama one's (no normalizer, Metaspace from add_prefix_space / legacy) whatever
    tokenizer.json says; the onnx runtime's FolderTokenizer ran tokenizer.json's own, so for the Hub's files of
    multilingual-e5, bge-m3 or Mistral 7B a text with a leading space, a run of spaces or a special token inside
    got other ids than on the torch runtime (another vector)."""
    from transformers import AutoTokenizer

    from tokenpool.model.fast_tokenizer import FolderTokenizer

    folder = sentencepiece_folders[name]
    text = "".join(pieces)
    expected = AutoTokenizer.from_pretrained(folder, local_files_only=True)([text, "x max  " + text])["input_ids"]
    assert FolderTokenizer(folder)([text, "x max  " + text])["input_ids"] == expected


# --- Hub snapshots: one weight format per folder


class _Hub:
    """`snapshot_download` over a local repo folder: copies the files its allow_patterns match (fnmatch, as the
    Hub matches them) into ``cache/<revision>``; with local_files_only, that snapshot folder if it exists."""

    def __init__(self, repo: Path, cache: Path) -> None:
        self.repo, self.snapshot, self.downloads = repo, cache / "main", []

    def __call__(self, repo_id, *, revision=None, cache_dir=None, local_files_only=False, allow_patterns=None):
        import fnmatch

        import huggingface_hub

        if local_files_only:
            if not self.snapshot.is_dir():
                raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")
            return str(self.snapshot)
        self.downloads.append(list(allow_patterns))
        for file in self.repo.rglob("*"):
            relative = file.relative_to(self.repo).as_posix()
            if file.is_file() and any(fnmatch.fnmatch(relative, p) for p in allow_patterns):
                (self.snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, self.snapshot / relative)
        return str(self.snapshot)


def _repo(base: Path, where: Path, *, safetensors: bool) -> Path:
    """A Hub repo as sentence-transformers' own are laid out: the model in both formats (or .bin only), OpenVINO
    weights, and a Dense module saved before safetensors (its pytorch_model.bin only)."""
    repo = Path(shutil.copytree(base, where))
    (repo / "pytorch_model.bin").write_bytes(b"pickled weights")
    if not safetensors:
        (repo / "model.safetensors").unlink()
    (repo / "openvino").mkdir()
    (repo / "openvino" / "openvino_model.bin").write_bytes(b"openvino weights")
    (repo / "2_Dense").mkdir()
    (repo / "2_Dense" / "config.json").write_text(json.dumps({"in_features": 32, "out_features": 8}))
    (repo / "2_Dense" / "pytorch_model.bin").write_bytes(b"dense weights")
    modules = json.loads((repo / "modules.json").read_text(encoding="utf-8"))
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (repo / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    return repo


@pytest.mark.parametrize("safetensors", [True, False])
def test_hub_download_fetches_one_weight_format_per_folder(base, tmp_path, monkeypatch, safetensors):
    """The torch runtime asked the Hub for every *.bin file: a repo such as all-MiniLM-L6-v2 (model.safetensors,
    pytorch_model.bin, two OpenVINO .bin files) came down at three times the size of the weights it reads. Now
    safetensors, and a folder's pytorch_model*.bin only where it has none; a cached snapshot asks nothing."""
    import huggingface_hub

    from tokenpool.model.hub import download_model

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    hub = _Hub(_repo(base, tmp_path / "repo", safetensors=safetensors), tmp_path / "cache")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    path = download_model("org/model", cache_dir=tmp_path / "cache")
    weights = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.suffix in (".bin", ".safetensors")}
    root = "model.safetensors" if safetensors else "pytorch_model.bin"
    assert weights == {root, "2_Dense/pytorch_model.bin"}
    assert {"config.json", "modules.json", "1_Pooling/config.json", "tokenizer.json"} <= {
        p.relative_to(path).as_posix() for p in path.rglob("*")}  # fmt: skip
    calls = len(hub.downloads)
    assert download_model("org/model", cache_dir=tmp_path / "cache") == path and len(hub.downloads) == calls
