"""Stop 46, the command line as a user meets it: what `tokenpool inspect` reports agrees with the Encoder."""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tinymodels import edit_json


@pytest.fixture(scope="module")
def limited_folder(tmp_path_factory, tiny_bert_folder):
    """The tiny BERT (128 positions) copied, so that its sentence_bert_config.json can be rewritten."""
    folder = tmp_path_factory.mktemp("limited") / "model"
    shutil.copytree(tiny_bert_folder, folder)
    return folder


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(max_seq_length=st.one_of(st.integers(3, 200), st.integers(129, 100_000)))
def test_inspect_max_length_is_the_one_the_encoder_truncates_at(limited_folder, run, max_seq_length):
    """A folder's max_seq_length above the model's 128 positions: the Encoder truncates at 128, and inspect said
    the folder's number (e.g. 4096, from sentence_bert_config.json)."""
    from tokenpool import Encoder

    edit_json(limited_folder / "sentence_bert_config.json", max_seq_length=max_seq_length)
    code, out, err = run("inspect", limited_folder, "--json")
    assert code == 0, err
    shown = json.loads(out)["fields"]["max_length"]
    assert shown["value"] == Encoder(limited_folder, device="cpu").max_length == min(max_seq_length, 128)
    assert shown["source"] == ("sentence_bert_config.json" if max_seq_length <= 128 else
                               "config.json max_position_embeddings")  # fmt: skip
