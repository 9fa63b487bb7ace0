"""Stop 63, core / bench / torch.Pool: each test failed on the code before its fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clitools import assert_one_error_line

from tokenpool import cli, pool
from tokenpool.core.strategies import parse_strategies


@pytest.mark.parametrize("spec", ["mean+", "mean,,max", "+max", "mean, ,cls"])
def test_a_strategy_list_with_an_empty_name_is_refused_not_read_as_the_rest(capsys, spec):
    """``"mean+"`` (a strategy left out) pooled as plain ``mean``, also in ``tokenpool bench --strategies mean+``
    (which then timed mean alone, exit 0). A list item that is empty is now refused, naming the spec; a list
    given as a Python list with an empty item was refused already ("unknown pooling strategy ''")."""
    with pytest.raises(ValueError, match="empty strategy name in " + repr(spec).replace("+", r"\+")):
        parse_strategies(spec)
    with pytest.raises(ValueError, match="empty strategy name"):
        pool(np.ones((1, 2, 4), np.float32), np.ones((1, 2)), spec)
    code = cli.main(["bench", "--batch", "2", "--length", "4", "--dim", "4", "--no-st", "--strategies", spec])
    assert_one_error_line(code, capsys.readouterr().err, "tokenpool bench: error:", f"empty strategy name in {spec!r}")
    assert [m.value for m in parse_strategies(" mean + max ")] == ["mean", "max"]  # spaces around names still do


@pytest.mark.parametrize(
    "sizes",
    [["--batch", "1024", "--length", "1024", "--dim", "2147483647"],
     ["--batch", "2147483647", "--length", "2147483647"]],
)  # fmt: skip
def test_bench_sizes_past_the_machines_memory_name_the_options_before_allocating(capsys, sizes):
    """``--batch 1024 --length 1024 --dim 2147483647`` ended in numpy's "Unable to allocate 8.00 PiB" (a failure,
    exit 1, no option named) and ``--batch 2147483647 --length 2147483647`` was killed for memory after a minute
    (16 GiB of row lengths first). Both now exit 2 at once, naming the three sizes and the memory."""
    code = cli.main(["bench", *sizes, "--no-st", "--libraries", "numpy"])
    assert_one_error_line(code, capsys.readouterr().err, "tokenpool bench: error:", f"{sizes[0]} {sizes[1]} x",
                          f"{sizes[2]} {sizes[3]} x", "GiB of memory")  # fmt: skip


def test_bench_times_a_strategy_named_twice_once(capsys):
    """``--strategies mean,avg`` (an alias) or ``mean,mean`` timed mean twice, printing two identical rows per
    library and layout (and two memory rows); each strategy is now timed once."""
    code = cli.main(["bench", "--batch", "2", "--length", "4", "--dim", "4", "--repeats", "1", "--warmup", "0",
                     "--settle-ms", "0", "--no-st", "--no-bandwidth", "--no-scaling", "--libraries", "numpy",
                     "--strategies", "mean,avg,MEAN", "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    rows = [(t["library"], t["layout"], t["strategy"]) for t in report["timings"] if t["group"] == "tokenpool"]
    assert code == 0 and sorted(rows) == [("numpy", "packed", "mean"), ("numpy", "padded", "mean")]
    assert [(m["layout"], m["strategy"]) for m in report["memory"]] == [("padded", "mean"), ("packed", "mean")]


def test_bench_on_a_gpu_counts_only_the_host_arrays_against_the_machines_memory(monkeypatch):
    """With ``--device cuda`` the states and packed tokens live in GPU memory; the host holds the float32 draw,
    its real tokens (4 + 4 bytes a value, `make_data`) and the masks. The memory check counted the GPU's arrays
    too, refusing a run the host holds ("more than this machine's memory") on a machine with room for it."""
    from tokenpool.bench import pooling

    batch, length, dim = 64, 512, 768
    host = batch * length * dim * (4 + 4) + batch * length * (1 + 8)  # the draw, its real tokens, the two masks
    monkeypatch.setattr(pooling, "memory_bytes", lambda: host + (batch * length * dim * 4) // 2)
    sizes = ["--batch", str(batch), "--length", str(length), "--dim", str(dim), "--no-st"]
    with pytest.raises(pooling.BenchError, match="GiB of memory"):  # on the CPU the states are host arrays too
        pooling.parse_args([*sizes, "--device", "cpu"])
    try:
        pooling.parse_args([*sizes, "--device", "cuda"])
    except pooling.BenchError as exc:  # (on a machine without CUDA: refused for that, not for memory)
        assert "memory" not in str(exc), exc


def test_bench_memory_refusal_shows_a_need_above_the_memory(monkeypatch):
    """On a 1.9 GiB machine a 2.0 GiB need was told as "needs up to 2 GiB ..., more than this machine's 2 GiB of
    memory" (whole GiB): the two figures of the refusal must show the need above the memory."""
    import re

    from tokenpool.bench import pooling

    monkeypatch.setattr(pooling, "memory_bytes", lambda: int(1.9 * 2**30))
    with pytest.raises(pooling.BenchError) as info:
        pooling.parse_args(["--batch", "340", "--length", "512", "--dim", "768", "--no-st"])
    need, memory = map(float, re.findall(r"([\d.,]+) GiB", str(info.value)))
    assert need > memory, info.value
