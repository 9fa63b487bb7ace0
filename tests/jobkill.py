"""Kill a corpus job at one named step of the job skeleton, as the resume tests need."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tokenpool.jobs import EmbedJob, embed_corpus


class Killed(BaseException):
    """The injected kill: a BaseException like KeyboardInterrupt, so no job code mistakes it for its own error."""


def run_killed_in(encoder: Any, job: EmbedJob, monkeypatch: Any, step: str = "assemble",
                  after: Callable[[tuple], bool] | None = None) -> None:  # fmt: skip
    """Run ``job`` with ``tokenpool.jobs.skeleton.<step>`` raising Killed: at once, or, given ``after``, once the
    real step has run with arguments for which ``after(args)`` is true."""
    from tokenpool.jobs import skeleton

    real = getattr(skeleton, step)

    def killed(*args: Any, **kwargs: Any) -> Any:
        if after is None:
            raise Killed
        done = real(*args, **kwargs)
        if after(args):
            raise Killed
        return done

    with monkeypatch.context() as patch:
        patch.setattr(skeleton, step, killed)
        with pytest.raises(Killed):
            embed_corpus(encoder, job, log=lambda m: None)
