"""Cache-line flushes for ``tokenpool bench --mode flushed``: every timed call then reads its arrays from memory.

A 53 MB batch on a CPU whose last-level cache holds 32 MiB is read partly from that cache when the same call
repeats, and how much depends on each candidate's access pattern (the floor read at 92 GB/s against the
machine's 59 GB/s; stop 44). Flushing the arrays' lines (x86-64 ``clflush``, compiled by numba) before each
timed call leaves code and small data warm, unlike `--mode evicted`, which reads other memory. Where the CPU lists
``clflushopt`` the lines are flushed with it: ``clflush`` waits for each line in turn, and on a Xeon VM flushing
150 MB took 345 ms with it against 5 ms with ``clflushopt`` (stop 54), most of a benchmark run's time."""

from __future__ import annotations

import functools
import importlib.util
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

LINE = 64  # bytes flushed per instruction: the cache line of every x86-64 CPU
INTRINSICS = {"clflush": "llvm.x86.sse2.clflush", "clflushopt": "llvm.x86.clflushopt"}  # LLVM's name of each


def flusher(arrays: Sequence[Any]) -> Callable[[], None] | None:
    """A call that flushes every byte of ``arrays`` (numpy arrays or CPU torch tensors, contiguous: ValueError
    otherwise) from every cache level, or None where it cannot (`available` says why)."""
    views = [_bytes_of(array) for array in arrays]
    if available() is not None:
        return None
    flush_bytes = None
    for name in dict.fromkeys((instruction(), "clflush")):
        try:
            flush_bytes = compiled(name)[1]
            break
        except Exception:  # pragma: no cover - a numba or LLVM without the x86 intrinsic
            continue
    if flush_bytes is None:  # pragma: no cover
        return None

    def flush() -> None:
        for view in views:
            flush_bytes(view)

    return flush


def instruction(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The flush instruction: ``clflushopt`` where ``cpuinfo``'s flags list it (the flushes then overlap; the fence
    after them orders them before the timed call), else ``clflush``, which every x86-64 CPU has."""
    try:
        with open(cpuinfo) as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        flags = []
    return "clflushopt" if "clflushopt" in flags else "clflush"


def available() -> str | None:
    """None where `flusher` can flush, else why not (for an error message)."""
    machine = platform.machine() or "an unknown CPU"
    if machine.lower() not in ("x86_64", "amd64"):
        return f"this CPU is {machine}, not x86-64"
    if importlib.util.find_spec("numba") is None:
        return "numba is not installed (pip install 'tokenpool[fast]')"
    return None


def _bytes_of(array: Any) -> np.ndarray:
    """The array's memory as a flat uint8 view (a CPU torch tensor's bytes, of any dtype, through ``.numpy()``)."""
    if isinstance(array, np.ndarray):
        contiguous, strides = array.flags.c_contiguous, array.strides
    else:
        contiguous, strides = array.is_contiguous(), array.stride()
    if not contiguous:
        raise ValueError(f"can only flush contiguous arrays, got strides {strides} for shape {tuple(array.shape)}")
    if isinstance(array, np.ndarray):
        return array.reshape(-1).view(np.uint8)
    return array.detach().reshape(-1).view(sys.modules["torch"].uint8).numpy()


@functools.lru_cache(maxsize=2)
def compiled(name: str = "clflush") -> tuple[Callable[[np.ndarray, Any], None], Callable[[np.ndarray], None]]:
    """(``each_line(view, op)``: ``op(view, offset)`` at one offset in every 64-byte line that holds a byte of
    the uint8 ``view``; ``flush_bytes(view)``: the instruction ``name`` (`INTRINSICS`) there, then a fence),
    compiled once per process and instruction."""
    import numba
    from llvmlite import ir
    from numba.extending import intrinsic

    @intrinsic
    def flush_one(typingctx: Any, array: Any, offset: Any) -> Any:
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            pointer = builder.gep(builder.bitcast(data, ir.IntType(8).as_pointer()), [args[1]])
            kind = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
            builder.call(builder.module.declare_intrinsic(INTRINSICS[name], fnty=kind), [pointer])
            return context.get_dummy_value()

        return numba.types.void(array, offset), codegen

    @intrinsic
    def fence(typingctx: Any) -> Any:
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            builder.fence("seq_cst")  # (an mfence: the flushes are done before the timed call starts)
            return context.get_dummy_value()

        return numba.types.void(), codegen

    @numba.njit(nogil=True)
    def each_line(view: np.ndarray, op: Any) -> None:  # pragma: no cover - runs compiled
        size = view.shape[0]
        for offset in range(0, size, LINE):
            op(view, offset)
        if size:  # the last line, when the view does not start on a line boundary
            op(view, size - 1)

    @numba.njit(nogil=True)
    def flush_line(view: np.ndarray, offset: int) -> None:  # pragma: no cover - runs compiled
        flush_one(view, offset)

    @numba.njit(nogil=True)
    def flush_bytes(view: np.ndarray) -> None:  # pragma: no cover - runs compiled
        each_line(view, flush_line)
        fence()

    flush_bytes(np.zeros(1, np.uint8))  # compile now, so that a failure shows here
    return each_line, flush_bytes
