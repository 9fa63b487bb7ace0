"""Lead's stop-58 fixes across helpers' seams."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("transformers")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


def test_a_ray_calibration_on_one_text_is_worded_as_the_command_line_words_it(run, ray_session, tiny_bert_folder,
                                                                             tmp_path):
    """An int8 job on an input of one text: `tokenpool embed` names the input, the precision and
    --calibration-size; under --ray the task's ValueError came back bare ("the Ray job failed: a calibration
    needs at least 2 texts"). Both now give `jobs.pooled.calibration_failed`'s one line, exit 2."""
    source = tmp_path / "one.jsonl"
    source.write_text(json.dumps({"text": "a lone text"}) + "\n", encoding="utf-8")
    flags = ["--model", tiny_bert_folder, "--precision", "int8"]
    code, _, plain = run("embed", source, "-o", tmp_path / "plain.parquet", *flags)
    assert code == 2 and "cannot calibrate int8 on its first 1 text(s) (--calibration-size 1000)" in plain, plain
    code, _, err = run("embed", source, "-o", tmp_path / "out", *flags, "--ray")
    assert code == 2 and err.count("\n") == 1, err
    assert "cannot calibrate int8 on its first 1 text(s) (--calibration-size 1000)" in err and str(source) in err, err


def test_evaluations_progress_is_named_progress_when_it_is_no_bool(tiny_bert_folder):
    """Evaluation's ``progress=`` reached the progress bar as ``show_progress_bar``, so ``progress=1`` (refused
    since bars take bools only) was named as a parameter the caller never passed."""
    from tokenpool import Encoder
    from tokenpool.evaluation.beir import RetrievalSet
    from tokenpool.evaluation.common import encode_every_way
    from tokenpool.evaluation.precision import evaluate_retrieval_precisions

    encoder = Encoder(tiny_bert_folder, device="cpu")
    with pytest.raises(TypeError, match=r"^progress must be True, False or None, got 1$"):
        encode_every_way(encoder, ["a text", "another"], [None], progress=1)
    data = RetrievalSet(query_ids=["q"], query_texts=["cats"], doc_ids=["d1", "d2"], doc_texts=["cats purr", "dogs"],
                        qrels={"q": {"d1": 1}})  # fmt: skip
    with pytest.raises(TypeError, match=r"^progress must be True, False or None, got 1$"):
        evaluate_retrieval_precisions(data, encoder, ["float32"], progress=1)
