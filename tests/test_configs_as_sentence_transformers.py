"""Model folders read as sentence-transformers reads them: tiny random folders that sentence-transformers saves,
then edits to their config files that sentence-transformers still loads; tokenpool's vectors and settings are
compared with sentence-transformers' own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tinymodels import bert_folder
from tinymodels import edit_json as edit

from tokenpool import Encoder, read_pooling_config

TEXTS = ["a cat sat on the mat " * 6, "Hello World, A LONGER sentence with MANY words.", "x"]
# the names sentence-transformers tries, in its order, for the Transformer module's config
LEGACY_SBERT_NAMES = (
    "sentence_roberta_config.json", "sentence_distilbert_config.json", "sentence_camembert_config.json",
    "sentence_albert_config.json", "sentence_xlm-roberta_config.json", "sentence_xlnet_config.json",
)  # fmt: skip


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A BERT folder saved by sentence-transformers: Transformer (max_seq_length 48) → mean Pooling."""
    return bert_folder(tmp_path_factory.mktemp("hunt") / "base", normalize=False)


@pytest.fixture
def folder(base, tmp_path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "model"))


def st_encode(folder: Path, texts=TEXTS) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)


def assert_same_vectors(folder: Path, texts=TEXTS) -> None:
    expected = st_encode(folder, texts)
    got = Encoder(folder, device="cpu").encode(texts)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [LEGACY_SBERT_NAMES[1], LEGACY_SBERT_NAMES[4]])
def test_legacy_named_sentence_bert_config_sets_max_seq_length(folder, name):
    """Older folders (e.g. XLM-R and DistilBERT models) name the Transformer's config
    sentence_<architecture>_config.json; sentence-transformers reads those names after sentence_bert_config.json.
    tokenpool read only the first name, so the folder's max_seq_length was ignored and long texts kept more
    tokens than sentence-transformers keeps."""
    from sentence_transformers import SentenceTransformer

    sbert = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
    (folder / "sentence_bert_config.json").unlink()
    edit(folder / name, **sbert, max_seq_length=8)
    assert read_pooling_config(folder).max_seq_length == SentenceTransformer(str(folder), device="cpu").max_seq_length
    assert read_pooling_config(folder).sources["max_seq_length"] == name
    assert_same_vectors(folder)


def test_normalize_of_another_feature_is_refused(base, tmp_path):
    """sentence-transformers' Normalize may name the feature it normalises (module_input_name, e.g. the token
    embeddings of a multi-vector model); after Pooling such a module leaves the sentence embedding as it is.
    tokenpool read every Normalize as "normalise the sentence embedding" and gave unit vectors where
    sentence-transformers gives others; a Normalize it cannot run as written is now refused, as such a Dense is."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.normalize import Normalize

    from tokenpool.errors import ConfigError

    model = SentenceTransformer(str(base), device="cpu")
    folder = tmp_path / "token-normalize"
    SentenceTransformer(modules=[model[0], model[1], Normalize(module_input_name="token_embeddings")],
                        device="cpu").save(str(folder))  # fmt: skip
    norms = np.linalg.norm(st_encode(folder), axis=1)
    assert not np.allclose(norms, 1.0)  # the reference: the sentence embedding is not normalised
    with pytest.raises(ConfigError, match=r"2_Normalize/config\.json.*module_input_name='token_embeddings'"):
        Encoder(folder, device="cpu")
    with pytest.raises(ConfigError, match="module_input_name"):
        read_pooling_config(folder)


@pytest.mark.parametrize(
    ("pooling", "st_config"),
    [
        ({"pooling_mode": ["cls", "mean"]}, {}),
        ({"pooling_mode": ["cls", "max", "mean"]}, {"truncate_dim": 8}),
        ({"embedding_dimension": 77}, {}),  # a stale dimension: the vectors are hidden_size wide
    ],
)
def test_inspect_dimension_is_the_width_of_the_vectors(folder, run, pooling, st_config):
    """`tokenpool inspect` showed the pooling file's per-strategy dimension: 32 for cls + mean vectors of 64,
    and for a folder whose saved truncate_dim cuts them to 8 (which both libraries encode at)."""
    edit(folder / "1_Pooling" / "config.json", **pooling)
    edit(folder / "config_sentence_transformers.json", **st_config)
    width = st_encode(folder).shape[1]
    assert Encoder(folder, device="cpu").dimension == width
    code, out, err = run("inspect", folder, "--json")
    assert code == 0, err
    assert json.loads(out)["fields"]["dimension"]["value"] == width


@pytest.mark.parametrize(
    ("rel", "values"),
    [
        ("1_Pooling/config.json", {"pooling_mode_cls_token": None, "pooling_mode_max_tokens": True}),
        ("1_Pooling/config.json", {"pooling_mode": "max", "pooling_mode_lasttoken": None}),
        ("sentence_bert_config.json", {"do_lower_case": None}),
    ],
)
def test_a_null_flag_is_an_absent_one_as_in_sentence_transformers(folder, rel, values):
    """sentence-transformers reads a null legacy pooling_mode_* boolean or do_lower_case as false, which is what
    an absent key means; tokenpool refused such folders ("has the wrong type: None")."""
    edit(folder / rel, **values)
    assert_same_vectors(folder)


def test_include_prompt_null_is_refused_naming_the_file(folder):
    """null include_prompt is ambiguous: absent means true, but sentence-transformers' test of it is falsy."""
    from tokenpool.errors import ConfigError

    edit(folder / "1_Pooling" / "config.json", include_prompt=None)
    with pytest.raises(ConfigError, match=r"1_Pooling/config\.json.*'include_prompt'"):
        read_pooling_config(folder)


@pytest.mark.parametrize("rel", ["modules.json", "1_Pooling/config.json", "config.json"])
def test_deeply_nested_json_is_bad_input_for_inspect(folder, run, rel):
    """A JSON file nested deeper than Python's recursion limit raised RecursionError: `tokenpool inspect` said
    "failed" and exited 1 instead of naming the file and exiting 2."""
    (folder / rel).write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    code, out, err = run("inspect", folder)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and rel in err


def test_inspect_names_the_file_of_a_truncate_dim_too_wide(folder, run):
    """A saved truncate_dim wider than the vectors is refused (the Encoder refuses it too); the message only said
    "truncate_dim must be an int in 1..32", though the user never passed one."""
    edit(folder / "config_sentence_transformers.json", truncate_dim=999)
    code, out, err = run("inspect", folder)
    assert code == 2 and out == ""
    assert "config_sentence_transformers.json" in err and "999" in err and len(err.strip().splitlines()) == 1


def test_encoder_names_the_file_of_a_truncate_dim_too_wide(folder):
    """The Encoder refused a folder's too-wide truncate_dim with "truncate_dim must be an int in 1..32, got 999",
    an option the caller never passed; it names the file now. An explicit truncate_dim overrides the folder's."""
    from tokenpool import Encoder
    from tokenpool.errors import ConfigError

    edit(folder / "config_sentence_transformers.json", truncate_dim=999)
    with pytest.raises(ConfigError, match=r"config_sentence_transformers\.json: truncate_dim .*999"):
        Encoder(folder)
    assert Encoder(folder, truncate_dim=8).encode(["a text"]).shape == (1, 8)
