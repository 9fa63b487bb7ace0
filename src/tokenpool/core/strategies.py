"""Pooling strategies: the `Pooling` enum (a superset of LlamaIndex's seed) and `STRATEGY_TABLE`, one
`StrategySpec` row per member, which the accepted names (`valid_names`, `parse_strategy`), configs'
``LEGACY_KEYS``, ``evaluate``'s and ``bench``'s lists, `pooled_width` and `check_combination` derive from.
Adding a strategy (a member, its row last in the table, its reduction, its tests): docs/architecture.md."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, Literal, NamedTuple

from ..errors import shown_value

InputKind = Literal["hidden", "logits"]
WidthRule = Literal["hidden", "vocab"]

# What each input kind is, in error messages.
INPUT_DESCRIPTIONS: dict[str, str] = {"hidden": "hidden states", "logits": "MLM logits"}


class Pooling(str, Enum):
    """A pooling strategy; call a member to pool: ``Pooling.MEAN(hidden, attention_mask)``.

    Without a mask, ``CLS`` and ``MEAN`` behave exactly as in LlamaIndex's enum (first token, plain mean)."""

    CLS = "cls"
    MEAN = "mean"
    MAX = "max"
    MEAN_SQRT_LEN = "mean_sqrt_len_tokens"
    WEIGHTED_MEAN = "weightedmean"
    LAST_TOKEN = "lasttoken"
    SPLADE = "splade"

    def __call__(self, array: Any, attention_mask: Any = None, **options: Any) -> Any:
        """Pool ``array`` (L×D or B×L×D) with this strategy; see `tokenpool.pool` for the options. The seed's
        ``Pooling.CLS(array)`` / ``Pooling.MEAN(array)`` (no mask, no option) is its own call (`seed_call`)."""
        from .pooling import pool

        if self in (Pooling.CLS, Pooling.MEAN) and attention_mask is None and not options:
            return seed_call(self, array)
        if "strategy" in options:
            raise TypeError(f"Pooling.{self.name} already is the strategy {self.value!r}; for strategy="
                            f"{options['strategy']!r} call pool(array, mask, strategy=...)")
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
        return _ALIASES.get(_normalise(value)) if isinstance(value, str) else None


def seed_call(member: Pooling, array: Any) -> Any:
    """The seed's ``Pooling.CLS(array)`` (`first_tokens`: ``array[0]`` / ``array[:, 0]`` in any dtype) and
    ``Pooling.MEAN(array)`` (the library's own mean over the tokens, bit for bit, where the seed and `pool` agree
    on the dtype: float32/float64 with tokens; else `pool`'s: zeros for no token, half precision in float32)."""
    from ._backends import namespace
    from .pooling import check_hidden, first_tokens, pool, work_dtypes

    hidden = check_hidden(array)
    if member is Pooling.CLS:
        return first_tokens(hidden)
    xp = namespace(hidden)
    if hidden.shape[-2] and work_dtypes(xp, hidden) == (hidden.dtype, hidden.dtype):
        return xp.mean(hidden, axis=-2)
    return pool(hidden, strategy=member)


Statistic = Literal["first", "last", "sum", "ranked_sum", "max"]
SUM_STATISTICS: tuple[Statistic, ...] = ("sum", "ranked_sum")  # the statistics that add tokens up (a float32 sum may overflow)
Divisor = Literal["one", "count", "sqrt_count", "rank_total"]
Activation = Literal["identity", "log1p_relu"]


class Running(NamedTuple):
    """A strategy as a running statistic of its row's tokens, what streamed and fast pooling keep per row.

    statistic: the "first" or "last" token (by position), the "sum", the "ranked_sum" Σ rank·h (rank = 1, 2, …
        counted over the row's real tokens, so a left-out prompt shifts it), or the element-wise "max";
    divisor: the pooled row is the statistic divided by "one", the "count" n of pooled tokens, its square root
        ("sqrt_count") or the "rank_total" Σ rank; a row with no pooled token is zeros;
    activation: an element-wise non-decreasing function of every token ("log1p_relu": SPLADE's log(1 + relu));
        being non-decreasing it commutes with first/last/max, which may apply it to their result only;
    reducible: the ``reduction`` option ("max" or "sum") picks the statistic (SPLADE)."""

    statistic: Statistic
    divisor: Divisor = "one"
    activation: Activation = "identity"
    reducible: bool = False

    def under(self, reduction: str) -> Running:
        """The rule in effect with the ``reduction`` option (only a reducible rule changes)."""
        return self._replace(statistic="sum") if self.reducible and reduction == "sum" else self


class StrategySpec(NamedTuple):
    """One strategy's row: everything about it except its reduction (``core/reductions.py``); a NamedTuple
    rather than a dataclass, so that ``import tokenpool`` loads no module beyond its own."""

    member: Pooling
    input: InputKind  # what it pools: "hidden" states (B×L×D) or MLM "logits" (B×L×V)
    width: WidthRule  # its output width: the model's "hidden" size or its "vocab"ulary size
    legacy_key: str | None  # sentence-transformers' boolean ``pooling_mode_*`` key; None if it has none
    running: Running  # how it is computed from running statistics (streamed and fast pooling)
    aliases: tuple[str, ...] = ()  # other accepted names, besides the value and the legacy key
    combinable: bool = True  # may be concatenated with other strategies

    @property
    def name(self) -> str:
        """The canonical name (the member's value)."""
        return self.member.value

    @property
    def names(self) -> tuple[str, ...]:
        """Every name that selects this strategy: canonical name, aliases, legacy key."""
        return (self.name, *self.aliases, *(() if self.legacy_key is None else (self.legacy_key,)))


# Rows in the order sentence-transformers concatenates its legacy modes (its `forward`); new ones go last.
STRATEGY_TABLE: tuple[StrategySpec, ...] = (
    #            member                 input     width     legacy sentence-transformers key
    #            running statistic
    StrategySpec(Pooling.CLS,           "hidden", "hidden", "pooling_mode_cls_token",
                 Running("first"),
                 aliases=("cls_token", "first", "first_token")),
    StrategySpec(Pooling.MAX,           "hidden", "hidden", "pooling_mode_max_tokens",
                 Running("max"),
                 aliases=("max_tokens",)),
    StrategySpec(Pooling.MEAN,          "hidden", "hidden", "pooling_mode_mean_tokens",
                 Running("sum", "count"),
                 aliases=("mean_tokens", "avg", "average")),
    StrategySpec(Pooling.MEAN_SQRT_LEN, "hidden", "hidden", "pooling_mode_mean_sqrt_len_tokens",
                 Running("sum", "sqrt_count"),
                 aliases=("mean_sqrt_len",)),
    StrategySpec(Pooling.WEIGHTED_MEAN, "hidden", "hidden", "pooling_mode_weightedmean_tokens",
                 Running("ranked_sum", "rank_total"),
                 aliases=("weighted_mean", "weightedmean_tokens", "weighted_mean_tokens")),
    StrategySpec(Pooling.LAST_TOKEN,    "hidden", "hidden", "pooling_mode_lasttoken",
                 Running("last"),
                 aliases=("last_token", "last", "eos")),
    StrategySpec(Pooling.SPLADE,        "logits", "vocab",  None,
                 Running("max", activation="log1p_relu", reducible=True),
                 combinable=False),
)  # fmt: skip
SPECS: dict[Pooling, StrategySpec] = {spec.member: spec for spec in STRATEGY_TABLE}
if set(SPECS) != set(Pooling) or len(SPECS) != len(STRATEGY_TABLE):  # pragma: no cover - a bad table edit
    raise RuntimeError("STRATEGY_TABLE needs exactly one row per Pooling member")

_ALIASES: dict[str, Pooling] = {alias: spec.member for spec in STRATEGY_TABLE for alias in spec.names}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def spec_of(strategy: Any) -> StrategySpec:
    """The table row of a strategy (a member, its value or an alias)."""
    return SPECS[parse_strategy(strategy)]


def valid_names() -> list[str]:
    """Every accepted strategy name, canonical names first."""
    canonical = [member.value for member in Pooling]
    return canonical + sorted(set(_ALIASES) - set(canonical))


def strategy_names(input_kind: InputKind | None = None, *, first: Any = None) -> tuple[str, ...]:
    """Canonical names in `Pooling` order, only those reading ``input_kind`` when given; ``first`` (a strategy)
    is moved to the front."""
    names = [member.value for member in Pooling if input_kind is None or SPECS[member].input == input_kind]
    if first is not None:
        lead = parse_strategy(first).value
        names = [lead] + [name for name in names if name != lead]
    return tuple(names)


def legacy_keys() -> dict[str, str]:
    """sentence-transformers' legacy ``pooling_mode_*`` keys → canonical names, in its concatenation order."""
    return {spec.legacy_key: spec.name for spec in STRATEGY_TABLE if spec.legacy_key is not None}


def is_auto(spec: Any) -> bool:
    """True for ``"auto"`` (any case, surrounding spaces allowed) or None: pool as the model's config says."""
    return spec is None or (isinstance(spec, str) and spec.strip().lower() == "auto")


def parse_strategy(spec: Any) -> Pooling:
    """One strategy from a member, its value, or an alias (case-insensitive, '-' or '_')."""
    if isinstance(spec, Pooling):
        return spec
    member = _ALIASES.get(_normalise(spec)) if isinstance(spec, str) else None
    if member is None:
        raise ValueError(f"unknown pooling strategy {shown_value(spec, short=True)}; valid names: {', '.join(valid_names())}")
    return member


def parse_strategies(spec: Any) -> tuple[Pooling, ...]:
    """A strategy or a list of them (also "mean,max" or "mean+max"), in the given order."""
    if isinstance(spec, str) and spec in _PARSED:  # the names of the members: no parsing per pooling call
        return _PARSED[spec]
    if isinstance(spec, str) and not isinstance(spec, Pooling) and any(sep in spec for sep in ",+"):
        spec = split_names(spec)
    if isinstance(spec, (str, Pooling, bytes, bytearray)) or not isinstance(spec, Iterable):
        return (parse_strategy(spec),)  # (bytes are one unknown name, not a sequence of integers)
    if isinstance(spec, Mapping):  # its keys would be pooled whatever its values say ({"…_cls_token": False})
        raise TypeError("give the strategies as a name or a list or tuple of names, not a "
                        f"{type(spec).__name__} (its values would not be read): {spec!r:.120}")
    if isinstance(spec, (set, frozenset)):
        raise TypeError("strategies are concatenated in order, so give a list or tuple, not a "
                        f"{type(spec).__name__} (whose order is undefined): {sorted(map(str, spec))}")
    members = tuple(parse_strategy(item) for item in spec)
    if not members:
        raise ValueError(f"no pooling strategy given; valid names: {', '.join(valid_names())}")
    return members


def split_names(
    spec: str, *, what: str = "strategy", valid: Iterable[str] | None = None, separators: str = ",+"
) -> list[str]:
    """The stripped names of a list given as one string ("mean,max", "mean+max"), [] when it names none ("",
    " , "); ValueError for an empty name among others ("mean+" leaves a strategy out: not plain mean), listing
    the ``valid`` names (default: every strategy name)."""
    parts = [part.strip() for part in re.split(f"[{re.escape(separators)}]", spec)]
    if any(parts) and not all(parts):
        raise ValueError(f"an empty {what} name in {spec!r}; valid names: "
                         f"{', '.join(valid_names() if valid is None else valid)}")
    return parts if any(parts) else []


_PARSED: dict[str, tuple[Pooling, ...]] = {member.value: (member,) for member in Pooling}


def check_combination(members: Iterable[Pooling]) -> None:
    """Raise ValueError when a strategy that cannot be combined (SPLADE) is given with others."""
    members = tuple(members)
    if len(members) < 2:
        return
    for member in members:
        spec = SPECS[member]
        if not spec.combinable:
            raise ValueError(f"{spec.name!r} pools {INPUT_DESCRIPTIONS[spec.input]} and cannot be combined "
                             f"with other strategies: {[m.value for m in members]}")


def parse_combination(spec: Any) -> tuple[Pooling, ...]:
    """The strategies of one pooled vector (`parse_strategies`), checked to be combinable (`check_combination`):
    what `pool`, `pool_packed`, `RunningPool` and ``tokenpool.torch.Pool`` accept."""
    members = parse_strategies(spec)
    check_combination(members)
    return members


def input_kind(members: Iterable[Pooling]) -> InputKind:
    """What the (valid, see `check_combination`) strategies read: "hidden" states or MLM "logits"."""
    members = tuple(members)
    check_combination(members)
    kinds = {SPECS[member].input for member in members}
    if len(kinds) != 1:  # only with a future combinable strategy on another input
        raise ValueError(f"strategies {[m.value for m in members]} read different inputs: {sorted(kinds)}")
    return kinds.pop()


def pooled_width(members: Iterable[Pooling], hidden_size: int, vocab_size: int | None = None) -> int:
    """Width of the concatenated pooled vector: each strategy adds the hidden size or the vocabulary size
    (SPLADE → the vocabulary; dense strategies → len(members) × hidden size)."""
    width = 0
    for spec in map(spec_of, members):
        size = hidden_size if spec.width == "hidden" else vocab_size
        if size is None:
            raise ValueError(f"{spec.name!r} pools over the vocabulary: pooled_width needs vocab_size")
        width += int(size)
    return width
