"""Evaluation corners found in hunt 34-3, each failed before its fix."""

from __future__ import annotations

import pytest

from tokenpool.evaluation.modes import plan_modes


@pytest.mark.parametrize(
    "given, names",
    [("truncate,bm25", ["truncate", "bm25"]), (" hybrid:truncate , windows", ["hybrid:truncate", "windows"]),
     ("bm25", ["bm25"])],
)  # fmt: skip
def test_modes_string_is_comma_separated_like_pooling(given, names):
    """modes="truncate,bm25" (split like pooling="mean,cls" and the CLI's --modes) was refused as one unknown
    mode named 'truncate,bm25'."""
    assert plan_modes(given).order == plan_modes(names).order


def test_mode_name_not_a_string_is_a_type_error_naming_it():
    """modes=[3] raised AttributeError ('int' object has no attribute 'removeprefix')."""
    with pytest.raises(TypeError, match="3"):
        plan_modes(["truncate", 3])
