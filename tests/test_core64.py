"""Stop 64, core/bench layer: each test failed on the code before its fix."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest


@pytest.mark.parametrize("name", ["memory.max", "memory/memory.limit_in_bytes"])
def test_bench_memory_check_reads_a_cgroup_limit_below_the_physical_memory(tmp_path: Path, monkeypatch, name):
    """In a container limited to 256 MiB (cgroup v2 ``memory.max`` or v1 ``memory.limit_in_bytes``) on a larger
    machine, ``tokenpool bench --batch 64 --length 512 --dim 768`` (about 0.4 GiB of arrays) passed the check,
    which read the machine's physical memory, and was killed by the kernel with no message; now refused, exit 2."""
    from tokenpool.bench import harness, pooling

    limit = 256 << 20
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(f"{limit}\n")
    physical = harness.memory_bytes(tmp_path / "none")
    assert physical is None or physical > limit  # (the machine's own memory, where no cgroup limit is read)
    assert harness.memory_bytes(tmp_path) == limit
    monkeypatch.setattr(pooling, "memory_bytes", functools.partial(harness.memory_bytes, tmp_path))
    with pytest.raises(pooling.BenchError, match=r"more than the 0\.2 GiB of memory this process may use"):
        pooling.parse_args(["--batch", "64", "--length", "512", "--dim", "768", "--no-st"])


@pytest.mark.parametrize("text", ["max\n", "9223372036854771712\n", "garbage"])
def test_bench_memory_without_a_cgroup_limit_is_the_physical_memory(tmp_path: Path, text: str):
    """cgroup v2 writes "max" and v1 a huge number when there is no limit; neither lowers the physical figure."""
    from tokenpool.bench import harness

    (tmp_path / "memory.max").write_text(text)
    assert harness.memory_bytes(tmp_path) == harness.memory_bytes(tmp_path / "none")


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">i2", "<f4"])
def test_no_token_in_a_byte_swapped_array_gives_zeros_of_its_dtype(dtype: str):
    """``Pooling.CLS(np.empty((3, 0, 4), ">f8"))`` (no token; the seed's own call, which keeps the input's dtype and
    byte order) and ``pool_packed`` / ``unpack`` of no token raised numpy's "The `dtype` and `signature` arguments
    to ufuncs only select the general DType ..." TypeError; now zeros, as for a native array."""
    import numpy as np

    import tokenpool

    empty = np.empty((3, 0, 4), dtype=dtype)
    for got, shape in ((tokenpool.Pooling.CLS(empty), (3, 4)), (tokenpool.Pooling.cls_pooling(empty[0]), (4,))):
        assert got.dtype == np.dtype(dtype) and got.shape == shape and not got.any()
    tokens = np.empty((0, 4), dtype=dtype)
    assert np.array_equal(tokenpool.pool_packed(tokens, [0, 0, 0], "max"), np.zeros((2, 4)))
    hidden, mask = tokenpool.unpack(tokens, [0, 0])
    assert hidden.shape == (1, 0, 4) and mask.shape == (1, 0)


@pytest.mark.parametrize("name", ["bfloat16", "float8_e4m3fn", "int4"])
def test_unpack_takes_the_numpy_dtypes_of_ml_dtypes(name: str):
    """``tokenpool.unpack`` of numpy tokens in an ml_dtypes type (what JAX's bfloat16 arrays become in numpy;
    `pool`, `pool_packed` and `pack` take them) raised numpy's "dtype argument must be a NumPy dtype" TypeError;
    now padded as any dtype: the real tokens back in place, padding = ``pad_value`` where the dtype holds it, and
    a ValueError naming it where it does not."""
    import numpy as np

    import tokenpool

    ml_dtypes = pytest.importorskip("ml_dtypes")
    dtype = np.dtype(getattr(ml_dtypes, name))
    tokens = (np.arange(12).reshape(3, 4) % 7).astype(dtype)
    hidden, mask = tokenpool.unpack(tokens, [0, 1, 3], pad_value=-2)
    assert hidden.dtype == dtype and mask.tolist() == [[True, False], [True, True]]
    assert np.array_equal(hidden[mask], tokens) and (hidden[0, 1].astype(np.float64) == -2).all()
    with pytest.raises(ValueError, match=r"pad_value 1e\+39 is not a value of the tokens' dtype"):
        tokenpool.unpack(tokens, [0, 3], pad_value=1e39)
    if name == "int4":
        with pytest.raises(ValueError, match="pad_value 0.5 is not a value"):
            tokenpool.unpack(tokens, [0, 3], pad_value=0.5)


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64"])
def test_running_pool_max_takes_every_dtype_pool_takes(name: str):
    """``RunningPool(["mean", "max"], ...).add(0, block)`` of a torch float8 or uint16/32/64 block raised torch's
    ``NotImplementedError: "max_values_cpu" not implemented for 'Float8_e4m3fn'`` while `pool` pools the same
    tokens (promoted, as documented); now the rows `pool` gives."""
    torch = pytest.importorskip("torch")
    import numpy as np

    from tokenpool import pool
    from tokenpool.core.streaming import RunningPool

    dtype = getattr(torch, name, None)
    if dtype is None:
        pytest.skip(f"torch has no {name}")
    tokens = (torch.arange(20, dtype=torch.float32).reshape(5, 4) % 7 * 0.5 + 1).to(dtype)
    running = RunningPool(["mean", "max"], 1, 4)
    running.add(0, tokens[2:], 2)
    running.add(0, tokens[:2], 0)
    expected = tokens.to(torch.float64).numpy()
    want = np.concatenate([expected.mean(0), expected.max(0)])
    assert np.allclose(running.read()[0].double().numpy(), want, rtol=1e-6)
    pooled = pool(tokens, None, ["mean", "max"])  # (returned in float8, or promoted to float32 from uint)
    assert torch.equal(pooled, torch.from_numpy(want).to(pooled.dtype))


@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("mask", ["max", b"max", "Pooling.MAX"])
def test_a_strategy_given_as_the_mask_is_named_as_such(library: str, mask: str):
    """``pool(hidden, "max")`` (the strategy where the mask goes) said "attention_mask has shape () but hidden states
    have shape (2, 3, 4); the mask must have shape (2, 3)"; now a TypeError naming the str and where a strategy
    goes (also for the one-sequence form and `pack`)."""
    import numpy as np

    import tokenpool

    if mask == "Pooling.MAX":
        mask = tokenpool.Pooling.MAX
    hidden = np.ones((2, 3, 4), dtype=np.float32)
    if library == "torch":
        hidden = pytest.importorskip("torch").from_numpy(hidden)
    for call in (lambda: tokenpool.pool(hidden, mask), lambda: tokenpool.pool(hidden[0], mask),
                 lambda: tokenpool.pack(hidden, mask)):  # fmt: skip
        with pytest.raises(TypeError, match=r"attention_mask must be an array of 0/1 or booleans, got the "
                                            r"(str|bytes|Pooling) .*max.*\(a pooling strategy is no mask"):
            call()


def test_bench_times_a_library_named_twice_once():
    """``tokenpool bench --libraries numpy,numpy`` timed and reported every numpy candidate twice (two identical
    rows per strategy and layout, in the timings and the memory table); ``--strategies cls,cls`` already counted
    once. Now each library once, in the order given."""
    from tokenpool.bench import pooling

    args = pooling.parse_args(["--batch", "2", "--length", "4", "--dim", "3", "--libraries", "numpy,torch,numpy"])
    assert args.library_list == ["numpy", "torch"]
    assert pooling.parse_args(["--batch", "2", "--strategies", "cls,CLS,first"]).strategy_list == ["cls"]
