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
