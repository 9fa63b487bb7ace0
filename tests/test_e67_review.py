"""Stop 67 review (e): a failed Ray job drops its own tracebacks only, never those of the caller's errors."""

from __future__ import annotations

import traceback

import pytest

pytest.importorskip("ray")


def _callers_own_error() -> None:
    raise KeyError("the caller's own")


def test_a_failed_job_leaves_the_error_its_caller_handles_its_traceback():
    """A job run while the caller handles an error of its own (a fallback in an ``except`` block) and failing
    there: the caller's error keeps its traceback, as Python left it (was: the job's error chain reaches the
    caller's error through its ``__context__``, and `_users_errors` dropped its traceback too, so a bare
    ``raise`` or a printed chain showed the caller's error with no traceback)."""
    import ray

    from tokenpool.integrations.ray import _users_errors

    try:
        _callers_own_error()
    except KeyError as own:
        before = traceback.format_tb(own.__traceback__)
        assert any("_callers_own_error" in line for line in before)
        with pytest.raises(RuntimeError, match="the Ray job failed") as caught, _users_errors():
            raise ray.exceptions.RaySystemError("the job's own")  # noqa: B904 (chained to own, as a job is)
        assert caught.value.__cause__.__context__ is own  # (the chain does reach it)
        assert caught.value.__cause__.__traceback__ is None  # the job's own traceback still goes
        assert traceback.format_tb(own.__traceback__) == before
