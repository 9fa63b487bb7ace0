"""The strategy table: one row per `Pooling` member, and every list and rule derived from it."""

from __future__ import annotations

import pytest

from tokenpool import Pooling
from tokenpool.core.strategies import (
    SPECS,
    STRATEGY_TABLE,
    check_combination,
    input_kind,
    is_auto,
    legacy_keys,
    parse_strategies,
    parse_strategy,
    pooled_width,
    spec_of,
    strategy_names,
    valid_names,
)

DENSE = ("cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")


def test_one_row_per_member():
    assert set(SPECS) == set(Pooling) and len(STRATEGY_TABLE) == len(Pooling)
    assert spec_of("Last-Token") is SPECS[Pooling.LAST_TOKEN]
    assert SPECS[Pooling.SPLADE].input == "logits" and SPECS[Pooling.SPLADE].width == "vocab"
    assert all(spec.input == "hidden" and spec.width == "hidden" for spec in STRATEGY_TABLE if spec.name in DENSE)


def test_running_rules_are_from_the_closed_sets_the_kernels_implement():
    """core/streaming.py and core/fast.py implement exactly these statistics, divisors and activations; only a
    reducible rule (SPLADE) follows the ``reduction`` option."""
    from typing import get_args

    from tokenpool.core.strategies import Activation, Divisor, Statistic

    for spec in STRATEGY_TABLE:
        rule = spec.running
        assert rule.statistic in get_args(Statistic) and rule.divisor in get_args(Divisor)
        assert rule.activation in get_args(Activation)
        assert rule.under("max") == rule
        assert rule.under("sum").statistic == ("sum" if rule.reducible else rule.statistic)
    assert [spec.member for spec in STRATEGY_TABLE if spec.running.reducible] == [Pooling.SPLADE]


def test_every_name_of_a_row_selects_its_member():
    for spec in STRATEGY_TABLE:
        for name in spec.names:
            assert parse_strategy(name) is spec.member
            assert parse_strategy(name.upper().replace("_", "-")) is spec.member
            assert name in valid_names()


def test_derived_lists_keep_their_orders():
    assert valid_names()[: len(Pooling)] == [*DENSE, "splade"]
    assert strategy_names() == (*DENSE, "splade")
    assert strategy_names("hidden") == DENSE
    assert strategy_names("logits") == ("splade",)
    assert strategy_names("hidden", first="mean") == (
        "mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"
    )  # fmt: skip
    # sentence-transformers' forward order, which configs writes and reads
    assert legacy_keys() == {
        "pooling_mode_cls_token": "cls",
        "pooling_mode_max_tokens": "max",
        "pooling_mode_mean_tokens": "mean",
        "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens": "weightedmean",
        "pooling_mode_lasttoken": "lasttoken",
    }


def test_the_users_of_the_table_take_their_lists_from_it():
    from tokenpool.bench.pooling import STRATEGIES
    from tokenpool.evaluation.sts import DENSE_STRATEGIES
    from tokenpool.model.configs import LEGACY_KEYS

    assert STRATEGIES[:-1] == DENSE and STRATEGIES[-1] == "splade"  # the benchmark times every strategy
    assert DENSE_STRATEGIES == ("mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
    assert legacy_keys() == LEGACY_KEYS


@pytest.mark.parametrize("members", [["splade", "mean"], ["max", "splade"], ["splade", "splade"]])
def test_splade_cannot_be_combined(members):
    parsed = parse_strategies(members)
    message = f"'splade' pools MLM logits and cannot be combined with other strategies: {members}"
    with pytest.raises(ValueError) as info:
        check_combination(parsed)
    assert str(info.value) == message
    with pytest.raises(ValueError, match="cannot be combined"):
        input_kind(parsed)


def test_allowed_combinations_and_their_input():
    check_combination(parse_strategies("mean,max,cls"))
    check_combination(parse_strategies("splade"))
    check_combination(())
    assert input_kind(parse_strategies("mean,max")) == "hidden"
    assert input_kind((Pooling.SPLADE,)) == "logits"


def test_pooled_width():
    assert pooled_width(parse_strategies("mean"), 384, 30522) == 384
    assert pooled_width(parse_strategies("mean,max,cls"), 384, 30522) == 3 * 384
    assert pooled_width((Pooling.SPLADE,), 384, 30522) == 30522
    assert pooled_width(parse_strategies("mean"), 384) == 384
    with pytest.raises(ValueError, match="vocab_size"):
        pooled_width((Pooling.SPLADE,), 384)


@pytest.mark.parametrize(("spec", "auto"), [
    ("auto", True), (" AUTO ", True), ("Auto", True), (None, True),
    ("mean", False), ("", False), (["auto"], False), (Pooling.MEAN, False), ("automatic", False),
])  # fmt: skip
def test_is_auto(spec, auto):
    assert is_auto(spec) is auto
