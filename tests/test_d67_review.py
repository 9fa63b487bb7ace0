"""Stop 67 review of s67-core: the 0/1 check of a torch mask under torch.compile (custom op
``tokenpool::binary_mask``), its registration, and the eager path it must leave as it was."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest

import tokenpool
from tokenpool.core import masks

torch = pytest.importorskip("torch")

_MASK = [[1, 1, 0, 1, 0, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]]
_NOT_BINARY = r"^attention_mask must hold only 0 and 1 \(or True/False\), found \[2\]$"


def _mean_loop(hidden: np.ndarray, mask: list) -> np.ndarray:
    """A float64 loop: each row's mean over its tokens whose mask is 1 (zeros for a row without any)."""
    out = np.zeros((hidden.shape[0], hidden.shape[2]))
    for i, row in enumerate(mask):
        tokens = [hidden[i, j].astype(np.float64) for j, value in enumerate(row) if value == 1]
        if tokens:
            out[i] = np.mean(tokens, axis=0)
    return out


def test_compile_before_the_op_is_registered_still_refuses_a_mask_of_twos(monkeypatch):
    """``torch.compile(pool)`` (default mode) in a process where neither `tokenpool.torch` nor an eager torch mask
    had registered the op returned zero vectors for a mask of 2s (an unchecked ``mask == 1``); the base refused it
    after a graph break. Now: eager's ValueError again, and the 0/1 mask as booleans."""
    monkeypatch.setattr(masks, "_torch_mask_check", None)
    torch._dynamo.reset()
    xp = masks.namespace(torch.empty(0))
    hidden = torch.randn(4, 6, 3)
    mask = torch.tensor(_MASK)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = torch.compile(lambda m: masks.prepare_mask(xp, hidden, m), backend="eager")
        try:
            with pytest.raises(ValueError, match=_NOT_BINARY):
                compiled(mask * 2)
            out = compiled(mask)
        finally:
            torch._dynamo.reset()
    assert out.tolist() == [[value == 1 for value in row] for row in _MASK]


def test_a_torch_without_custom_ops_still_pools_eagerly(monkeypatch):
    """pyproject allows torch>=2.1, whose ``torch.library`` has no ``custom_op`` (2.4+): the first eager torch
    mask raised AttributeError while registering the op. Now: no op, and eager's result and check."""
    monkeypatch.setattr(masks, "_torch_mask_check", None)
    monkeypatch.delattr(torch.library, "custom_op")
    hidden = torch.randn(4, 6, 3)
    out = tokenpool.pool(hidden, torch.tensor(_MASK), "mean")
    np.testing.assert_allclose(out.numpy(), _mean_loop(hidden.numpy(), _MASK), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=_NOT_BINARY):
        tokenpool.pool(hidden, torch.tensor(_MASK) * 2, "mean")
    assert masks._torch_mask_check is None


def test_two_threads_first_torch_masks_register_the_op_once(monkeypatch):
    """Two threads' first calls both saw no op and both defined it (the second replacing the first's library
    while the first still set its fake kernel). Now one registration, and one op for both."""
    real = torch.library.custom_op
    calls = []

    def slow_custom_op(*args, **kwargs):
        calls.append(args[0])
        time.sleep(0.2)  # (the other thread arrives meanwhile)
        return real(*args, **kwargs)

    monkeypatch.setattr(masks, "_torch_mask_check", None)
    monkeypatch.setattr(torch.library, "custom_op", slow_custom_op)
    start = threading.Barrier(2)

    def first_call():
        start.wait()
        masks.register_torch_mask_check()

    threads = [threading.Thread(target=first_call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["tokenpool::binary_mask"]
    assert masks._torch_mask_check(torch.tensor([1, 0])).tolist() == [True, False]
    with pytest.raises(ValueError, match=_NOT_BINARY):
        masks._torch_mask_check(torch.tensor([2, 0]))


@pytest.mark.parametrize("exporting", [lambda: True, None])
def test_compiling_is_told_from_exporting_by_exports_own_flag(monkeypatch, exporting):
    """`torch_compiling` asked ``torch.compiler.is_exporting()``, which Dynamo answered True under torch.compile
    too before pytorch#176347 (torch 2.7 to 2.1x): a compiled pool then left a mask of 2s unchecked (zero vectors);
    torch 2.4 to 2.6 have no ``is_exporting`` (AttributeError). Now: only export's own flag means exporting."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    if exporting is None:
        monkeypatch.delattr(torch.compiler, "is_exporting")
    else:
        monkeypatch.setattr(torch.compiler, "is_exporting", exporting)
    assert masks.torch_compiling(torch.ones(2))
    assert not masks.torch_compiling(np.ones(2))
    monkeypatch.setattr(torch.compiler, "_is_exporting_flag", True, raising=False)
    assert not masks.torch_compiling(torch.ones(2))
