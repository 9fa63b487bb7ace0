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
