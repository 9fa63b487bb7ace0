"""Stop 59, ONNX / Hub / model folders: `tokenpool inspect` of ONNX-only folders, ..."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _onnx_only(tiny: Path, graph: Path, folder: Path, name: str = "onnx/model.onnx") -> Path:
    """`tiny`'s files with ``graph`` as ``name`` and no torch weights."""
    (folder / name).parent.mkdir(parents=True)
    for entry in tiny.iterdir():
        if entry.name != "model.safetensors":
            (folder / entry.name).symlink_to(entry)
    (folder / name).symlink_to(graph)
    return folder


@pytest.mark.parametrize("name", ["onnx/model.onnx", "model.onnx"])
def test_inspect_reports_an_onnx_only_folder_that_embed_runs(run, tiny, tiny_onnx, tmp_path, name):
    """``tokenpool embed --runtime onnx`` runs a folder with an ONNX file, config and tokenizer but no torch weights;
    inspect refused it ("is missing torch weights"). It reports what it reports for the torch folder (the same
    pooling, dimension and max length, each from the same file), and the runtime and file that run it."""
    from tokenpool import Encoder

    folder = _onnx_only(tiny, tiny_onnx, tmp_path / "onnx-only", name)
    code, out, err = run("inspect", folder, "--json")
    assert code == 0, err
    report = json.loads(out)
    code, out, err = run("inspect", tiny, "--json")
    torch_report = json.loads(out)
    runtime = report["fields"].pop("runtime")
    assert report["fields"] == torch_report["fields"] and report["modules"] == torch_report["modules"]
    flag = [] if name == "onnx/model.onnx" else ["--onnx-file", name]
    assert runtime == {"value": "onnx", "source": name + (f"; embed with --onnx-file {name}" if flag else "")}
    encoder = Encoder(folder, runtime="onnx", onnx_file=flag[1] if flag else None)
    assert report["fields"]["dimension"]["value"] == encoder.dimension
    assert report["fields"]["max_length"]["value"] == encoder.max_length
    (tmp_path / "in.txt").write_text("a text\n")
    code, out, err = run("embed", tmp_path / "in.txt", "--model", folder, "--runtime", "onnx", *flag,
                         "--output", tmp_path / "v.npy")  # fmt: skip
    assert code == 0, err
    code, out, err = run("inspect", folder)
    assert code == 0 and f"runtime             onnx  ({runtime['source']})" in out.splitlines()


@pytest.mark.parametrize(("file", "status"), [("config.json", 0), ("tokenizer_config.json", 2)])
def test_inspect_of_an_onnx_only_folder_refuses_what_the_onnx_runtime_refuses(run, tiny, tiny_onnx, tmp_path, file,
                                                                               status):  # fmt: skip
    """An ONNX-only folder's own model class (config.json's auto_map, as Jina v2 folders have) is no matter to the
    onnx runtime (the graph is the model); a tokenizer class of its own is refused unless trusted. Inspect says the
    same of the folder: the exit status says whether it runs."""
    from tokenpool import Encoder
    from tokenpool.errors import UnsafeModelFolderError

    folder = _onnx_only(tiny, tiny_onnx, tmp_path / "onnx-only")
    (folder / file).unlink()
    data = json.loads((tiny / file).read_text())
    (folder / file).write_text(json.dumps({**data, "auto_map": {"AutoModel": "own.Model"}}))
    code, out, err = run("inspect", folder)
    assert code == status and ("auto_map" in err) == bool(status), err
    if status:
        with pytest.raises(UnsafeModelFolderError, match="auto_map"):
            Encoder(folder, runtime="onnx")
        assert run("inspect", folder, "--trust-remote-code")[0] == 0
    else:
        Encoder(folder, runtime="onnx")
