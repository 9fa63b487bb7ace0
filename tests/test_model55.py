"""Stop 55, the model layer as a user meets it: `tokenpool export-onnx`'s calibration texts read as `embed` reads
its input (--format, --field, --column), and a pooling config's bad value named with the one file it came from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TEXTS = ["A man is playing a guitar.", "Someone plays an instrument.", "A cat sleeps on the mat.", "héllo wörld"]


def _quantize(run, tiny, tiny_onnx, texts_file: Path, target: Path, *flags: object) -> tuple[int, str, str]:
    return run(
        "export-onnx", tiny, "--onnx-file", tiny_onnx, "--quantize", "int8", "--calibration-texts", texts_file,
        *flags, "--output", target,
    )  # fmt: skip


def _cosines(target: Path) -> dict:
    return json.loads((target.parent / (target.name + ".json")).read_text(encoding="utf-8"))["quality"]["quantize"][
        "cosine"
    ]


@pytest.mark.parametrize(
    ("name", "content", "flags"),
    [
        ("texts.jsonl", "".join(json.dumps({"id": i, "sentence": t}) + "\n" for i, t in enumerate(TEXTS)),
         ("--field", "sentence")),
        ("texts.csv", "id,sentence\n" + "".join(f"{i},{t}\n" for i, t in enumerate(TEXTS)), ("--column", "sentence")),
        ("texts.data", "".join(t + "\n" for t in TEXTS), ("--format", "txt")),
    ],
)  # fmt: skip
def test_calibration_texts_are_read_with_embeds_input_options(run, tiny, tiny_onnx, tmp_path, name, content, flags):
    """The reader's message says "choose one with --field" (or --column, --format), and docs/runtimes.md says any
    input format embed reads: export-onnx takes those options, and scores the same texts as a .txt of them."""
    plain = tmp_path / "texts.txt"
    plain.write_text("".join(t + "\n" for t in TEXTS), encoding="utf-8")
    code, _, err = _quantize(run, tiny, tiny_onnx, plain, tmp_path / "plain.onnx", "--force")
    assert code == 0, err
    given = tmp_path / name
    given.write_text(content, encoding="utf-8")
    code, _, err = _quantize(run, tiny, tiny_onnx, given, tmp_path / "given.onnx", "--force", *flags)
    assert code == 0, err
    assert _cosines(tmp_path / "given.onnx") == _cosines(tmp_path / "plain.onnx")
    assert _cosines(tmp_path / "given.onnx")["texts"] == len(TEXTS)


def test_a_missing_field_names_a_flag_export_onnx_has(run, tiny, tiny_onnx, tmp_path):
    given = tmp_path / "texts.jsonl"
    given.write_text(json.dumps({"sentence": "a b"}) + "\n", encoding="utf-8")
    code, out, err = _quantize(run, tiny, tiny_onnx, given, tmp_path / "q.onnx")
    assert code == 2 and "choose one with --field" in err and "Traceback" not in err
    code, _, err = _quantize(run, tiny, tiny_onnx, given, tmp_path / "q.onnx", "--field", "sentence", "--force")
    assert code == 0, err


def test_input_options_that_pick_nothing_are_refused(run, tiny, tiny_onnx, tmp_path):
    """As embed refuses them: --field for a .txt would be ignored; on a plain export they apply to nothing."""
    plain = tmp_path / "texts.txt"
    plain.write_text("a b\nc d\n", encoding="utf-8")
    code, _, err = _quantize(run, tiny, tiny_onnx, plain, tmp_path / "q.onnx", "--field", "sentence")
    assert code == 2 and "--field" in err and len(err.strip().splitlines()) == 1
    code, _, err = run("export-onnx", tiny, "--field", "sentence", "--output", tmp_path / "m.onnx")
    assert code == 2 and "--field applies to a variant (--optimize or --quantize int8) only" in err
    assert not (tmp_path / "q.onnx").exists() and not (tmp_path / "m.onnx").exists()


def _st_folder(folder: Path, *, pooling: dict, sbert: dict) -> Path:
    """The config files of a sentence-transformers folder (Transformer at the root, Pooling, Normalize)."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.base.modules.normalize.Normalize"},
    ]  # fmt: skip
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling), encoding="utf-8")
    (folder / "sentence_bert_config.json").write_text(json.dumps(sbert), encoding="utf-8")
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "q: "}}))
    return folder


@pytest.mark.parametrize(
    ("pooling", "sbert", "culprit"),
    [
        ({"embedding_dimension": 32, "pooling_mode": "mean"}, {"max_seq_length": 0}, "sentence_bert_config.json"),
        ({"embedding_dimension": 0, "pooling_mode": "mean"}, {"max_seq_length": 64}, "1_Pooling/config.json"),
        ({"word_embedding_dimension": -3, "pooling_mode_mean_tokens": True}, {}, "1_Pooling/config.json"),
    ],
)
def test_a_size_below_one_is_named_with_its_one_file(tmp_path, pooling, sbert, culprit):
    """docs/configs.md: a wrong value is a ValueError naming the file (that one file) and the value. A size
    below 1 named every file the config was read from."""
    from tokenpool import read_pooling_config
    from tokenpool.errors import ConfigError

    folder = _st_folder(tmp_path / "m", pooling=pooling, sbert=sbert)
    with pytest.raises(ConfigError) as caught:
        read_pooling_config(folder)
    message = str(caught.value)
    assert message.startswith(f"{folder / culprit}: "), message
    assert "must be positive" in message
    others = {"modules.json", "config_sentence_transformers.json", "1_Pooling/config.json", "sentence_bert_config.json"}
    assert not [name for name in others - {culprit} if name in message], message


def test_a_limit_the_tokenizer_options_override_is_not_checked(tmp_path):
    """sentence-transformers lets processor_kwargs.model_max_length win over max_seq_length: a 0 there is read
    by no one and stays accepted."""
    from tokenpool import read_pooling_config

    sbert = {"max_seq_length": 0, "processor_kwargs": {"model_max_length": 20}}
    folder = _st_folder(tmp_path / "m", pooling={"embedding_dimension": 32, "pooling_mode": "mean"}, sbert=sbert)
    assert read_pooling_config(folder).max_seq_length == 20


def _paths(record: dict) -> list[str]:
    """Every path a record names: the source (folder or file), each step's file and the written file."""
    source = record["source"].get("folder") or record["source"]["file"]
    return [source, *(step["file"] for step in record["steps"] if "file" in step), record["file"]["path"]]


def test_records_name_absolute_paths_when_given_relative_ones(run, tiny, tiny_onnx, tmp_path, monkeypatch):
    """An export's record (FILE.json and the ONNX metadata) is its provenance, read later from anywhere: a path
    relative to the working directory of the export (``"folder": "bert"``) names nothing there."""
    from tokenpool.model.onnx_export import read_record

    (tmp_path / "bert").symlink_to(tiny, target_is_directory=True)
    (tmp_path / "fp32.onnx").symlink_to(tiny_onnx)
    (tmp_path / "texts.txt").write_text("".join(t + "\n" for t in TEXTS), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, _, err = run("export-onnx", "bert", "--output", "out/plain.onnx")
    assert code == 0, err
    code, _, err = run("export-onnx", "bert", "--onnx-file", "fp32.onnx", "--quantize", "int8", "--calibration-texts",
                       "texts.txt", "--force", "--output", "out/q.onnx")  # fmt: skip
    assert code == 0, err
    for name, source in (("plain.onnx", tmp_path / "bert"), ("q.onnx", tmp_path / "fp32.onnx")):
        target = tmp_path / "out" / name
        beside = json.loads((tmp_path / "out" / (name + ".json")).read_text(encoding="utf-8"))
        inside = read_record(target)
        for record in (beside, inside) if "file" in inside else (beside,):
            assert all(Path(path).is_absolute() for path in _paths(record)), _paths(record)
        assert _paths(beside)[0] == str(source) and _paths(beside)[-1] == str(target)
        assert (inside["source"].get("folder") or inside["source"]["file"]) == str(source)
    quality = json.loads((tmp_path / "out" / "q.onnx.json").read_text(encoding="utf-8"))["quality"]["quantize"]
    assert quality["texts"] == str(tmp_path / "texts.txt")  # the data it was scored on, named as absolutely
