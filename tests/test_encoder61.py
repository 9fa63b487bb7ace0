"""Stop 61, Encoder side: a per-call pooling's token ids, checked against encoders built for that pooling."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from tokenpool import Encoder  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "encoder.md"
TEXTS = ["a man plays the guitar", "the quick brown fox", ""]


def test_a_calls_lasttoken_keeps_the_encoders_add_eos_as_the_docs_say(eos_decoder):
    """docs/encoder.md said a call's ``pooling=`` pools "exactly as an encoder built with that pooling and
    normalize=False"; such an encoder of a last-token pooling appends EOS (its ``add_eos``), which a call on a mean
    encoder does not: the call reads each text's last token, as an encoder built with ``add_eos=False``."""
    folder = eos_decoder.model_path
    mean = Encoder(folder, pooling="mean", max_length=16, device="cpu")
    assert not mean.add_eos and eos_decoder.add_eos
    called = mean.encode(TEXTS, pooling="lasttoken")
    same_ids = Encoder(folder, pooling="lasttoken", normalize=False, add_eos=False, max_length=16, device="cpu")
    built = Encoder(folder, pooling="lasttoken", normalize=False, max_length=16, device="cpu")
    np.testing.assert_allclose(called, same_ids.encode(TEXTS), atol=1e-6)
    assert np.abs(called - built.encode(TEXTS)).max() > 1e-3  # (the EOS's vector is another one)
    bullet = re.search(r"^- `pooling=\"max\"`.*?(?=^- )", DOCS.read_text(encoding="utf-8"), re.S | re.M).group(0)
    assert "add_eos" in bullet, bullet


@pytest.mark.parametrize("name, value", [("max_length", 8), ("truncate_dim", 4), ("add_eos", False)])
def test_an_option_the_encoder_was_built_from_is_refused_when_assigned(tiny_bert_folder, name, value):
    """``encoder.max_length = 8`` (as ``model.max_seq_length = 8`` in sentence-transformers) left the tokenizer at
    its limit, so a long text failed with "row 0 has 16 tokens, more than max_length 8 (tokenize with ...)";
    ``encoder.truncate_dim = 4`` broke encode with numpy's broadcast error; ``add_eos`` was ignored (the tokenisation holds its own). Each is an
    AttributeError naming the option, and the encoder keeps its vectors."""
    encoder = Encoder(tiny_bert_folder, pooling="mean", max_length=16, device="cpu")
    before = encoder.encode(TEXTS)
    with pytest.raises(AttributeError, match=rf"Encoder\.{name} is fixed .* Encoder\(\.\.\., {name}={value!r}\)"):
        setattr(encoder, name, value)
    np.testing.assert_array_equal(encoder.encode(TEXTS), before)
    assert getattr(Encoder(tiny_bert_folder, pooling="mean", device="cpu", **{name: value}), name) == value


def test_a_truncation_side_set_on_the_tokenizer_later_cuts_as_in_sentence_transformers(tiny):
    """``encoder.tokenizer.truncation_side = "left"`` (as sentence-transformers users set it) was read once when the
    Encoder was built: encode and ``tokenize(truncation="auto")`` ("the tokenizer's own side") still cut on the
    right, silently. Now they keep the last tokens, as `SentenceTransformer.encode` does after the same line."""
    from sentence_transformers import SentenceTransformer

    text = " ".join(f"word{k}" for k in range(120))  # longer than the folder's 48 tokens
    encoder, reference = Encoder(tiny, device="cpu"), SentenceTransformer(str(tiny), device="cpu")
    right = encoder.encode([text])
    encoder.tokenizer.truncation_side = reference.tokenizer.truncation_side = "left"
    assert encoder.tokenize([text]).ids == encoder.tokenize([text], truncation="left").ids
    np.testing.assert_allclose(encoder.encode([text]), reference.encode([text]), atol=1e-6)
    assert np.abs(encoder.encode([text]) - right).max() > 1e-3


@pytest.mark.parametrize("name, value, option", [
    ("dimension", 4, "truncate_dim"), ("strategies", ("max",), "pooling"), ("device", "meta", "device"),
    ("dtype", "float16", "dtype"),
])  # fmt: skip
def test_a_fact_built_from_an_option_is_refused_when_assigned_naming_that_option(tiny_bert_folder, name, value, option):
    """Review of the guard above, which left the facts next to those options open: ``encoder.dimension = 4``
    broke encode with numpy's broadcast error, ``strategies = ("max",)``, ``device`` and ``dtype`` were silently
    ignored (mean pooling on the same device kept running; sentence-transformers' ``device`` is read-only too).
    Each is now an AttributeError naming the option that builds it, and the vectors stay the encoder's."""
    encoder = Encoder(tiny_bert_folder, pooling="mean", max_length=16, device="cpu")
    before = encoder.encode(TEXTS)
    with pytest.raises(AttributeError, match=rf"Encoder\.{name} is fixed .* Encoder\(\.\.\., {option}={re.escape(repr(value))}\)"):
        setattr(encoder, name, value)
    np.testing.assert_array_equal(encoder.encode(TEXTS), before)
    assert name in DOCS.read_text(encoding="utf-8").split("are fixed once built")[0].rsplit("`tokenizer`.", 1)[1]


def test_llama_index_takes_torch_dtype_device_and_numpy_bools_as_the_encoder_does(tiny_bert_folder):
    """docs/integrations.md: ``device``, ``dtype``, ``normalize``, ``add_eos`` work "as for tokenpool.Encoder", which
    takes ``torch.float64``, ``torch.device("cpu")`` and numpy bools; the wrapper's string/strict-bool fields refused
    them (pydantic's ValidationError). They are kept as plain values, so to_json / pickle still round-trip."""
    import pickle

    import torch

    pytest.importorskip("llama_index.core")
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    options = dict(dtype=torch.float64, device=torch.device("cpu"), normalize=np.bool_(False), add_eos=np.bool_(False),
                   max_length=16)  # fmt: skip
    expected = Encoder(tiny_bert_folder, **options).encode_documents(TEXTS[:2])
    emb = TokenPoolEmbedding(tiny_bert_folder, **options)
    assert (emb.dtype, emb.device, emb.normalize, emb.add_eos) == ("float64", "cpu", False, False)
    assert emb.encoder.dtype == torch.float64
    for copy in (emb, TokenPoolEmbedding.from_json(emb.to_json()), pickle.loads(pickle.dumps(emb))):
        np.testing.assert_allclose(copy.get_text_embedding_batch(TEXTS[:2]), expected, atol=1e-6)


def test_llama_index_takes_paths_for_its_file_options_as_the_encoder_does(tiny, tiny_onnx, tmp_path):
    """``onnx_file=`` and ``cache_dir=`` take a Path in the Encoder; the wrapper's str fields refused one."""
    pytest.importorskip("llama_index.core")
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    expected = Encoder(tiny, runtime="onnx", onnx_file=Path(tiny_onnx)).encode_documents(TEXTS[:2])
    emb = TokenPoolEmbedding(Path(tiny), runtime="onnx", onnx_file=Path(tiny_onnx))
    assert emb.onnx_file == str(tiny_onnx)
    np.testing.assert_allclose(TokenPoolEmbedding.from_json(emb.to_json()).get_text_embedding_batch(TEXTS[:2]),
                               expected, atol=1e-6)  # fmt: skip
    with pytest.raises(Exception) as by_encoder:  # a local folder reads no cache_dir: the Encoder's own refusal
        Encoder(tiny, cache_dir=tmp_path)
    with pytest.raises(type(by_encoder.value), match="cache_dir"):
        TokenPoolEmbedding(tiny, cache_dir=tmp_path)
