"""Stop 64, security hunt: hostile model folders (oversized JSON configs, huge values in error messages)."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import pytest

from tokenpool import Encoder
from tokenpool.errors import ConfigError
from tokenpool.model.configs import PoolingConfig, read_pooling_config

# --------------------------------------------------------------------------- a JSON config too large to read

OVERSIZED = 512 << 20  # a sparse file: no disk used, but reading it whole took 512 MiB and more (1 GiB: 1.5 GiB)


@pytest.mark.parametrize(
    "name",
    ["config.json", "modules.json", "1_Pooling/config.json", "tokenizer_config.json", "config_sentence_transformers.json"],
)
def test_an_oversized_json_config_is_refused_unread(tiny_copy, name):
    """Before: the whole file was read into memory (then 'Expecting value'); now refused by its size, naming it."""
    file = tiny_copy / name
    file.unlink(missing_ok=True)
    with open(file, "wb") as fh:
        fh.truncate(OVERSIZED)
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match="over the") as caught:
            Encoder(tiny_copy, device="cpu")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(file) in str(caught.value) and f"{OVERSIZED:,} bytes" in str(caught.value)
    assert peak < OVERSIZED // 2, peak  # (imports included)


def test_an_oversized_config_is_one_line_exit_2(tiny_copy, tmp_path, run):
    with open(tiny_copy / "modules.json", "wb") as fh:
        fh.truncate(OVERSIZED)
    (tmp_path / "in.txt").write_text("hello\n")
    code, _, err = run("embed", tmp_path / "in.txt", "-o", tmp_path / "out.npy", "--model", tiny_copy)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "modules.json" in err and "over the" in err
    assert not (tmp_path / "out.npy").exists()


# --------------------------------------------------------------- a huge value in a config, shown in the message

HUGE = list(range(100_000))  # 588,890 characters as Python shows it


def _set(file: str, change):
    def damage(folder):
        path = folder / file
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return damage


HUGE_VALUES = [
    ("prompts", _set("config_sentence_transformers.json", lambda d: d.update(prompts={"q": HUGE})), "prompts"),
    ("module-path-a-list", _set("modules.json", lambda d: d[1].update(path=HUGE)), "modules.json"),
    ("module-path-escapes", _set("modules.json", lambda d: d[1].update(path="../" + "x" * 200_000)), "inside"),
    ("module-type-foreign", _set("modules.json", lambda d: d[1].update(type="mylib." + "P" * 200_000)), "mylib.PPP"),
    ("pooling_mode", _set("1_Pooling/config.json", lambda d: d.update(pooling_mode=HUGE)), "pooling_mode"),
    ("include_prompt", _set("1_Pooling/config.json", lambda d: d.update(include_prompt="y" * 200_000)), "include_prompt"),
]


@pytest.mark.parametrize(("case", "damage", "fragment"), HUGE_VALUES, ids=[c[0] for c in HUGE_VALUES])
def test_a_huge_config_value_is_shown_briefly(tiny_copy, case, damage, fragment):
    """Before: the whole value went into the message (one 'error:' line of 589 KB on the CLI's stderr)."""
    damage(tiny_copy)
    with pytest.raises(ConfigError, match=fragment) as caught:
        Encoder(tiny_copy, device="cpu")
    assert str(tiny_copy) in str(caught.value) and len(str(caught.value)) < len(str(tiny_copy)) * 2 + 400


# ------------------------------------------------------------ PoolingConfig.save and a linked module folder


def _files(top: Path) -> dict[str, bytes]:
    return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_save_never_writes_through_a_linked_module_folder(tiny_copy, tmp_path):
    """Before: 1_Pooling -> a user's folder elsewhere, and save() replaced that folder's config.json (the user's)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.json").write_text('{"the user\'s": "own file"}\n')
    shutil.rmtree(tiny_copy / "1_Pooling")
    (tiny_copy / "1_Pooling").symlink_to(victim, target_is_directory=True)
    before = _files(tmp_path)
    with pytest.raises(ConfigError, match="1_Pooling, a symlink"):
        PoolingConfig(strategies=("cls",), embedding_dimension=32).save(tiny_copy)
    assert _files(tmp_path) == before


def test_save_into_a_linked_model_folder_still_works(tiny_copy, tmp_path):
    """The folder the caller names may itself be a link: only links inside it are refused."""
    link = tmp_path / "link"
    link.symlink_to(tiny_copy, target_is_directory=True)
    PoolingConfig(strategies=("cls",), embedding_dimension=32).save(link)
    assert read_pooling_config(tiny_copy).strategies == ("cls",)
