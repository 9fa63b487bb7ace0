"""Stop 65 review: what the merged shrinks and fixes must keep, each against a reference written here."""

from __future__ import annotations

import bisect
import itertools

import numpy as np
import pytest

import tokenpool
from tokenpool.core import fast


def _refusal(call):
    with pytest.raises(Exception) as caught:
        call()
    return type(caught.value), str(caught.value)


@pytest.mark.parametrize("strings", [["1", "0", "1"], (b"1", b"1", b"0"), ["1", "mean", "0"]])
def test_a_flat_list_of_digit_strings_is_refused_as_its_array_is(strings):
    """Stop 65 read every flat list of strings given as the mask as a list of strategies ("TypeError: ... (a
    pooling strategy is no mask ...)"): ``pool(hidden[0], ["1", "0", "1"])`` lost its "must hold 0/1 or booleans,
    got dtype <U1" ValueError, which the same values as an array or a nested list still get (stop 61)."""
    hidden = np.ones((2, 3, 4), dtype=np.float32)
    as_array = np.array(strings)
    assert _refusal(lambda: tokenpool.pool(hidden[0], strings)) == _refusal(lambda: tokenpool.pool(hidden[0], as_array))
    assert _refusal(lambda: tokenpool.pool(hidden, strings)) == _refusal(lambda: tokenpool.pool(hidden, as_array))
    kind, message = _refusal(lambda: tokenpool.pool(hidden[0], strings))
    assert kind is ValueError and "a pooling strategy is no mask" not in message, message


def test_a_list_of_strategy_names_as_the_mask_still_names_the_strategies():
    with pytest.raises(TypeError, match=r"got the list \['mean', 'max'\] \(a pooling strategy is no mask"):
        tokenpool.pool(np.ones((2, 4), dtype=np.float32), ["mean", "max"])


def _reference_bounds(sizes: list[int], parts: int) -> list[tuple[int, int]]:
    """The cut as stop 64's thread pool made it in plain Python: each cut before or after the row that crosses
    its share of the tokens, whichever leaves the nearer count; empty groups dropped."""
    cumulative = list(itertools.accumulate(sizes))
    if not cumulative:
        return []
    cuts = set()
    for k in range(1, parts):
        share = cumulative[-1] * k / parts
        crossing = bisect.bisect_left(cumulative, share)
        before = cumulative[crossing - 1] if crossing else 0
        cuts.add(min(crossing if share - before < cumulative[crossing] - share else crossing + 1, len(cumulative)))
    bounds = [0, *sorted(cuts), len(cumulative)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def test_the_thread_pool_cuts_rows_where_the_python_reference_does():
    """`fast._token_bounds` now runs `compiled.token_bounds` uncompiled (stop 65); the hypothesis test that held
    the two equal now compares that function with itself, so the cut is held here against the old Python one."""
    rng = np.random.default_rng(65)
    for trial in range(3000):
        high = (2, 5, 1000, 10**6)[trial % 4]
        sizes = rng.integers(0, high, int(rng.integers(0, 40))).astype(np.int64)
        parts = int(rng.integers(2, 17))
        got = fast._token_bounds(sizes, parts)
        assert got == _reference_bounds(sizes.tolist(), parts), (sizes.tolist(), parts)
        assert all(type(a) is int and type(b) is int for a, b in got)
