"""Stop 64, the lead's own fixes: each test checks a documented rule against Python's own quoting."""

from __future__ import annotations

import pytest

from tokenpool.errors import CorpusError
from tokenpool.evaluation.sts import read_pairs


@pytest.mark.parametrize("content", [b"score,s1,s2\n1,a,b\n\xff,c,d\n", b"1\ta\tb\tc\t\xff\td\te\n"])
def test_an_sts_path_with_a_backslash_is_quoted_once(tmp_path, content):
    """A pairs file under a folder named with a backslash: its bad byte's message named the path quoted twice
    ("'…\\\\\\\\b…'"), since read_pairs quoted it before the readers quoted it again; now as Python writes it, once."""
    folder = tmp_path / "a\\b"
    folder.mkdir()
    path = folder / "p.csv"
    path.write_bytes(content)
    with pytest.raises(CorpusError) as err:
        read_pairs(str(path))
    assert str(err.value).startswith(f"{str(path)!r}, line "), str(err.value)


@pytest.mark.parametrize("kind", ["fifo", "dangling"])
def test_weights_that_are_no_regular_file_are_named_not_called_missing(tiny_copy, kind):
    """A `model.safetensors` that is a named pipe or a dangling link was reported as "missing model weights (one of
    model.safetensors, …)" though it is there; it is named as no regular file, as a config file is."""
    import os

    from tokenpool import Encoder
    from tokenpool.errors import ConfigError

    weights = tiny_copy / "model.safetensors"
    weights.unlink()
    os.mkfifo(weights) if kind == "fifo" else weights.symlink_to(tiny_copy / "gone")
    with pytest.raises(ConfigError, match=f"^{weights}: .*tokenpool reads only regular files from a model folder$"):
        Encoder(tiny_copy, device="cpu")
