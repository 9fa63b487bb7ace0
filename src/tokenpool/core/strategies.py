"""Strategy names: the `Pooling` enum (a superset of LlamaIndex's seed) and every alias it accepts."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any


class Pooling(str, Enum):
    """A pooling strategy; call a member to pool: ``Pooling.MEAN(hidden, attention_mask)``.

    Without a mask, ``CLS`` and ``MEAN`` behave exactly as in LlamaIndex's enum (first token, plain mean).
    """

    CLS = "cls"
    MEAN = "mean"
    MAX = "max"
    MEAN_SQRT_LEN = "mean_sqrt_len_tokens"
    WEIGHTED_MEAN = "weightedmean"
    LAST_TOKEN = "lasttoken"
    SPLADE = "splade"

    def __call__(self, array: Any, attention_mask: Any = None, **options: Any) -> Any:
        """Pool ``array`` (L×D or B×L×D) with this strategy; see `tokenpool.pool` for the options."""
        from .pooling import pool

        return pool(array, attention_mask, self, **options)

    @classmethod
    def cls_pooling(cls, array: Any, attention_mask: Any = None, **options: Any) -> Any:
        """First real token of each row (``array[0]`` / ``array[:, 0]`` without a mask)."""
        return cls.CLS(array, attention_mask, **options)

    @classmethod
    def mean_pooling(cls, array: Any, attention_mask: Any = None, **options: Any) -> Any:
        """Mean over the real tokens of each row (over all tokens without a mask)."""
        return cls.MEAN(array, attention_mask, **options)

    @classmethod
    def _missing_(cls, value: object) -> Pooling | None:
        # Pooling("Last-Token") and other aliases resolve to their member.
        if isinstance(value, str):
            return _ALIASES.get(_normalise(value))
        return None


_ALIAS_NAMES: dict[Pooling, tuple[str, ...]] = {
    Pooling.CLS: ("cls", "cls_token", "first", "first_token", "pooling_mode_cls_token"),
    Pooling.MEAN: ("mean", "mean_tokens", "avg", "average", "pooling_mode_mean_tokens"),
    Pooling.MAX: ("max", "max_tokens", "pooling_mode_max_tokens"),
    Pooling.MEAN_SQRT_LEN: ("mean_sqrt_len_tokens", "mean_sqrt_len", "pooling_mode_mean_sqrt_len_tokens"),
    Pooling.WEIGHTED_MEAN: (
        "weightedmean",
        "weighted_mean",
        "weightedmean_tokens",
        "weighted_mean_tokens",
        "pooling_mode_weightedmean_tokens",
    ),
    Pooling.LAST_TOKEN: ("lasttoken", "last_token", "last", "eos", "pooling_mode_lasttoken"),
    Pooling.SPLADE: ("splade",),
}
_ALIASES: dict[str, Pooling] = {alias: member for member, names in _ALIAS_NAMES.items() for alias in names}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def valid_names() -> list[str]:
    """Every accepted strategy name, canonical names first."""
    canonical = [member.value for member in Pooling]
    return canonical + sorted(set(_ALIASES) - set(canonical))


def parse_strategy(spec: Any) -> Pooling:
    """One strategy from a member, its value, or an alias (case-insensitive, '-' or '_')."""
    if isinstance(spec, Pooling):
        return spec
    member = _ALIASES.get(_normalise(spec)) if isinstance(spec, str) else None
    if member is None:
        raise ValueError(f"unknown pooling strategy {spec!r}; valid names: {', '.join(valid_names())}")
    return member


def parse_strategies(spec: Any) -> tuple[Pooling, ...]:
    """A strategy or a list of them (also "mean,max" or "mean+max"), in the given order."""
    if isinstance(spec, str) and not isinstance(spec, Pooling) and any(sep in spec for sep in ",+"):
        spec = [part for part in spec.replace("+", ",").split(",") if part.strip()]
    if isinstance(spec, (str, Pooling)) or not isinstance(spec, Iterable):
        return (parse_strategy(spec),)
    members = tuple(parse_strategy(item) for item in spec)
    if not members:
        raise ValueError(f"no pooling strategy given; valid names: {', '.join(valid_names())}")
    return members
