"""Stop 54 (the lead's changes): the benchmark's cache-line flush uses ``clflushopt`` where the CPU lists it
(``clflush`` took 345 ms per flush of the arrays on a Xeon VM, ``clflushopt`` 5 ms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tokenpool.bench import flush as flush_module

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse2 {extra} avx512f
bugs\t\t: spectre_v1 clflushopt_is_not_a_flag_here

processor\t: 1
flags\t\t: fpu vme sse2 {extra} avx512f
"""


def test_the_flush_instruction_is_clflushopt_only_where_the_flags_list_it(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO.format(extra="clflush clflushopt clwb"))
    assert flush_module.instruction(info) == "clflushopt"
    info.write_text(CPUINFO.format(extra="clflush"))  # (the "bugs" line names it, but not as a flag)
    assert flush_module.instruction(info) == "clflush"
    info.write_text(CPUINFO.format(extra="clflushoptx"))  # whole words only
    assert flush_module.instruction(info) == "clflush"
    assert flush_module.instruction(tmp_path / "missing") == "clflush"


@pytest.mark.parametrize("name", sorted(flush_module.INTRINSICS))
def test_each_flush_instruction_reaches_the_data_and_leaves_it_alone(name: str) -> None:
    """Both instructions compile and run over views at any offset (clflushopt only where this CPU lists it)."""
    if flush_module.available() is not None:
        pytest.skip(flush_module.available())
    if name == "clflushopt" and flush_module.instruction() != "clflushopt":
        pytest.skip("this CPU does not list clflushopt")
    flush_bytes = flush_module.compiled(name)[1]
    values = np.arange(100_003, dtype=np.float32)
    raw = values.view(np.uint8)
    for start, size in ((0, raw.size), (1, 63), (63, 65), (5, 0), (7, raw.size - 7)):
        flush_bytes(raw[start : start + size])
    assert np.array_equal(values, np.arange(100_003, dtype=np.float32))


def test_the_flusher_uses_the_instruction_the_cpu_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    if flush_module.available() is not None:
        pytest.skip(flush_module.available())
    listed = flush_module.instruction() == "clflushopt"  # (elsewhere it is an illegal instruction)
    asked: list[str] = []
    real = flush_module.compiled

    def spy(name: str = "clflush"):  # type: ignore[no-untyped-def]
        asked.append(name)
        return real(name)

    monkeypatch.setattr(flush_module, "compiled", spy)
    monkeypatch.setattr(flush_module, "instruction", lambda: "clflush")
    flush_module.flusher([np.zeros(10)])()
    assert asked == ["clflush"]
    if listed:
        monkeypatch.setattr(flush_module, "instruction", lambda: "clflushopt")
        flush_module.flusher([np.zeros(10)])()
        assert asked == ["clflush", "clflushopt"]
