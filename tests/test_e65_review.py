"""Stop 65 review (ray): the paths Ray's refusals name, quoted as the CLI's (`errors.shown_name`); the Ray
session's cleanup when setting preserve_order fails."""

from __future__ import annotations

import io
import sys
import types

import pytest

pytest.importorskip("pyarrow")

BROKEN = "in\nput"  # a line break in a name: shown as Python writes it, 'in\nput', so it reads on one line
TYPED = "in\\nput"  # a typed backslash-n: quoted too, so that it reads differently from BROKEN


def _quoted(name: str) -> str:
    return repr(name)  # (the independent reference: Python's own quoting)


@pytest.mark.parametrize("name", [BROKEN, TYPED])
def test_a_missing_input_is_named_quoted(tmp_path, name):
    from tokenpool.integrations.ray import embed_parquet

    source = tmp_path / f"{name}.parquet"
    with pytest.raises(FileNotFoundError) as caught:
        embed_parquet(str(source), str(tmp_path / "out"))
    assert str(caught.value) == f"{_quoted(str(source))}: no such file or folder"


def test_a_printable_missing_input_is_named_as_given(tmp_path):
    from tokenpool.integrations.ray import embed_parquet

    source = str(tmp_path / "in put.parquet")
    with pytest.raises(FileNotFoundError) as caught:
        embed_parquet(source, str(tmp_path / "out"))
    assert str(caught.value) == f"{source}: no such file or folder"


@pytest.mark.parametrize("name", [BROKEN, TYPED])
def test_an_output_that_is_a_file_is_named_quoted(tmp_path, name):
    from tokenpool.integrations import ray as tp_ray

    target = tmp_path / name
    target.write_text("x", encoding="utf-8")
    with pytest.raises(FileExistsError) as caught:
        tp_ray._refuse_existing(str(target))
    assert str(caught.value).startswith(f"{_quoted(str(target))} is a file; ")


def test_an_output_that_holds_files_is_named_quoted(tmp_path):
    from tokenpool.integrations import ray as tp_ray

    target = tmp_path / BROKEN
    target.mkdir()
    (target / "a.parquet").write_text("x", encoding="utf-8")
    with pytest.raises(FileExistsError) as caught:
        tp_ray._refuse_existing(str(target))
    assert str(caught.value).startswith(f"{_quoted(str(target))} already holds files; ")
    assert "\n" not in str(caught.value)


def test_a_dangling_symlink_output_is_named_quoted(tmp_path):
    from tokenpool.integrations import ray as tp_ray

    target = tmp_path / BROKEN
    target.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError) as caught:
        tp_ray._refuse_existing(str(target))
    assert str(caught.value).startswith(f"{_quoted(str(target))} is a dangling symlink; ")


def test_a_foreign_calibration_file_is_named_quoted(tmp_path):
    from tokenpool.integrations import ray as tp_ray

    output = tmp_path / BROKEN
    (tmp_path / f"{BROKEN}.calibration.json").write_text("not mine", encoding="utf-8")
    with pytest.raises(FileExistsError) as caught:
        tp_ray._refuse_foreign_sidecar(str(output))
    assert str(caught.value).startswith(f"{_quoted(str(output) + '.calibration.json')} exists and is not a ")


def test_a_changed_given_calibration_file_names_it_and_the_output_quoted(tmp_path):
    import numpy as np

    from tokenpool.core.quantize import Calibration
    from tokenpool.integrations import ray as tp_ray

    output = tmp_path / BROKEN
    calibration = Calibration(np.zeros(4, np.float32), np.ones(4, np.float32))
    (tmp_path / f"{BROKEN}.calibration.json").write_text("{}", encoding="utf-8")
    with pytest.raises(Exception, match="changed while the job ran") as caught:
        tp_ray._write_beside(str(output), calibration, given_beside=True)
    assert str(caught.value) == (
        f"{_quoted(str(output) + '.calibration.json')}: changed while the job ran; it held the calibration the rows "
        f"in {_quoted(str(output))} are quantized with (also in their parquet metadata) and is left as it is"
    )


def test_a_folder_with_an_unread_file_is_named_quoted(tmp_path):
    from tokenpool.errors import CorpusError
    from tokenpool.integrations import ray as tp_ray

    folder = tmp_path / BROKEN
    (folder / "sub\nname").mkdir(parents=True)
    (folder / "sub\nname" / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(CorpusError) as caught:
        tp_ray._refuse_unread_files(str(folder))
    message = str(caught.value)
    assert message.startswith(f"{_quoted(str(folder))}: holds {_quoted('sub' + chr(10) + 'name/notes.txt')}, ")
    assert "\n" not in message


def test_a_jsonl_field_refusal_names_the_file_quoted():
    from tokenpool.errors import CorpusError
    from tokenpool.integrations import ray as tp_ray

    path = "/data/a\nb.jsonl"
    data = io.BytesIO(b'{"text": "a", "n": 1}\n{"text": "b", "n": "one"}\n')
    with pytest.raises(CorpusError) as caught:
        tp_ray._json_table(data, path, "text")
    assert str(caught.value).startswith(f"{_quoted(path)}: field 'n' holds values that no one parquet column ")


def test_an_unsupported_format_names_the_input_quoted(monkeypatch):
    pytest.importorskip("ray.data")
    from tokenpool.integrations import ray as tp_ray

    monkeypatch.setattr(tp_ray, "input_format_of", lambda uri: "xml")
    with pytest.raises(ValueError) as caught:
        tp_ray._read("in\nput.xml", "text")
    assert str(caught.value) == f"{_quoted('in' + chr(10) + 'put.xml')}: xml input is not supported with Ray"


def test_an_s3_uri_is_named_as_given():
    from tokenpool.errors import shown_name

    assert shown_name("s3://bucket/x") == "s3://bucket/x"


def test_a_failed_preserve_order_still_shuts_the_started_ray_down(monkeypatch):
    """Setting preserve_order was the job's first step inside the session (its cleanup ran on a failure); moved
    into `_ray_session` before its try, a failure there left a Ray started here running, the log filter on."""
    from tokenpool.integrations import ray as tp_ray

    calls = []

    class Options:
        @property
        def preserve_order(self):
            return None

        @preserve_order.setter
        def preserve_order(self, value):
            raise RuntimeError("no context")

    context = types.SimpleNamespace(execution_options=Options())
    fake = types.ModuleType("ray")
    fake.is_initialized = lambda: False
    fake.init = lambda **kwargs: calls.append("init")
    fake.shutdown = lambda: calls.append("shutdown")
    fake.data = types.SimpleNamespace(DataContext=types.SimpleNamespace(get_current=lambda: context))
    monkeypatch.setitem(sys.modules, "ray", fake)
    import logging

    reports = logging.getLogger("ray.data.exceptions")
    before = list(reports.filters)
    with pytest.raises(RuntimeError, match="no context"), tp_ray._ray_session(None):
        pass
    assert calls == ["init", "shutdown"]
    assert reports.filters == before
