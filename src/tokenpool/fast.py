"""Backend-specific fast paths (numpy, torch). Placeholder: every call falls back to the generic path."""

from __future__ import annotations

from typing import Any

from .strategies import Pooling


class FastPlan:
    """Per-call analysis of the mask, shared by all strategies of one `pool` call."""

    def pool(self, strategy: Pooling, reduction: str) -> Any | None:
        return None


def make_plan(xp: Any, hidden: Any, keep: Any, work_dtype: Any) -> FastPlan | None:
    """A fast plan for this input, or None when only the generic Array API path applies."""
    return None
