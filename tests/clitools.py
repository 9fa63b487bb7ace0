"""Assertions shared by the command-line tests."""

from __future__ import annotations


def assert_one_error_line(code: int, err: str, *needles: str) -> None:
    """Exit status 2, no traceback, exactly one stderr line containing every needle."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
