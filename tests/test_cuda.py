"""CUDA: pooling, the fast path, packed pooling, `Pool` autograd and `Encoder(device="cuda")` on a GPU.

Skipped where torch sees no CUDA GPU (CI). Run on a GPU machine with ``pytest tests/test_cuda.py``; the results
of the last such run are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import numpy as np
import pytest
from backends import DTYPES, TOLERANCE, dtype_name, round_to, to_numpy64
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_pool
from strategies_hyp import pooling_inputs

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")

from tokenpool import pool, pool_packed  # noqa: E402
from tokenpool.core import fast  # noqa: E402


def on_cuda(values: np.ndarray, dtype: str | None = None):
    tensor = torch.from_numpy(np.ascontiguousarray(values)).to("cuda")
    return tensor if dtype is None else tensor.to(getattr(torch, dtype))


@settings(max_examples=150, deadline=None)
@given(data=pooling_inputs(), choice=st.data())
def test_pool_on_cuda_matches_float64_reference(data, choice):
    hidden, mask, options = data
    dtype = choice.draw(st.sampled_from(DTYPES["torch"]))
    seen = round_to(hidden, dtype)
    result = pool(on_cuda(hidden, dtype), on_cuda(mask), **options)
    expected = reference_pool(seen, mask, options["strategy"], **{k: v for k, v in options.items() if k != "strategy"})
    assert result.device.type == "cuda"
    assert dtype_name(result) == dtype
    assert tuple(result.shape) == expected.shape
    rtol, atol = TOLERANCE[dtype]
    np.testing.assert_allclose(to_numpy64(result), expected, rtol=rtol, atol=atol)


@settings(max_examples=60, deadline=None)
@given(data=pooling_inputs(), dtype=st.sampled_from(["float32", "float16", "bfloat16"]))
def test_cuda_fast_path_equals_generic_path(data, dtype):
    """The torch fast path against the generic Array API path, both on the GPU."""
    hidden, mask, options = data
    x, m = on_cuda(hidden, dtype), on_cuda(mask)
    fast_result = pool(x, m, **options)
    saved = fast.make_plan
    fast.make_plan = lambda *args, **kwargs: None  # the documented "cannot handle" answer → generic path
    try:
        generic = pool(x, m, **options)
    finally:
        fast.make_plan = saved
    rtol, atol = TOLERANCE[dtype]
    np.testing.assert_allclose(to_numpy64(fast_result), to_numpy64(generic), rtol=rtol, atol=atol)


def test_fp16_sums_do_not_overflow_on_cuda():
    """512 tokens of 300.0 in float16: a float16 running sum would reach 153,600 > 65,504 (inf)."""
    hidden = np.full((2, 512, 8), 300.0)
    mask = np.ones((2, 512), dtype=np.int64)
    mask[1, 100:] = 0
    result = pool(on_cuda(hidden, "float16"), on_cuda(mask), "mean")
    assert torch.isfinite(result).all()
    np.testing.assert_allclose(to_numpy64(result), 300.0, rtol=1e-3)


def test_empty_rows_are_zero_not_nan_on_cuda():
    hidden = np.random.default_rng(0).standard_normal((3, 5, 4))
    mask = np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 1, 1, 1]])
    for strategy in ("mean", "max", "cls", "lasttoken", "weightedmean"):
        for dtype in ("float32", "float16", "bfloat16"):
            result = pool(on_cuda(hidden, dtype), on_cuda(mask), strategy, normalize=True)
            assert torch.isfinite(result).all(), (strategy, dtype)
            assert float(result[1].abs().max()) == 0.0, (strategy, dtype)


def test_packed_pooling_on_cuda_matches_padded():
    rng = np.random.default_rng(1)
    lengths = [3, 1, 7, 4]
    tokens = rng.standard_normal((sum(lengths), 6))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    padded = np.zeros((len(lengths), max(lengths), 6))
    mask = np.zeros((len(lengths), max(lengths)), dtype=np.int64)
    for i, n in enumerate(lengths):
        padded[i, :n] = tokens[offsets[i] : offsets[i + 1]]
        mask[i, :n] = 1
    for strategy in ("mean", "max", "cls", "lasttoken", "weightedmean"):
        got = pool_packed(on_cuda(tokens, "float32"), offsets, strategy)
        assert got.device.type == "cuda"
        expected = reference_pool(padded, mask, strategy)
        np.testing.assert_allclose(to_numpy64(got), expected, rtol=1e-5, atol=1e-5)


def test_pool_module_gradients_on_cuda_equal_cpu():
    from tokenpool.torch import Pool

    rng = np.random.default_rng(2)
    hidden = rng.standard_normal((3, 6, 5))
    mask = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1], [1, 0, 1, 0, 1, 0]])
    grads = {}
    for device in ("cpu", "cuda"):
        x = torch.tensor(hidden, dtype=torch.float32, device=device, requires_grad=True)
        out = Pool(["mean", "max", "weightedmean"], normalize=True)(x, torch.tensor(mask, device=device))
        (out * torch.arange(out.shape[1], device=device)).sum().backward()
        grads[device] = x.grad.detach().cpu().numpy()
    np.testing.assert_allclose(grads["cuda"], grads["cpu"], rtol=1e-5, atol=1e-6)
    assert (grads["cpu"][mask == 0] == 0).all()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from tinymodels import bert_folder

    return bert_folder(tmp_path_factory.mktemp("tiny-cuda"))


TEXTS = [
    "A short text.",
    "Ein längerer Text über das Wetter, mit Umlauten — und einem Emoji 🙂.",
    " ".join(f"word{i}" for i in range(150)),
    "x",
]


def test_encoder_on_cuda_equals_cpu(tiny_folder):
    from tokenpool import Encoder

    cpu = Encoder(tiny_folder, device="cpu")
    gpu = Encoder(tiny_folder, device="cuda")
    assert gpu.runner.device.startswith("cuda")
    np.testing.assert_allclose(gpu.encode(TEXTS), cpu.encode(TEXTS), rtol=1e-4, atol=1e-5)
    for a, b in zip(gpu.encode(TEXTS, output="tokens"), cpu.encode(TEXTS, output="tokens"), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_long_documents_on_cuda_equal_cpu(tiny_folder):
    from tokenpool import Encoder

    kwargs = {"max_length": 16, "long_documents": "windows", "window_stride": 8}
    cpu = Encoder(tiny_folder, device="cpu", **kwargs)
    gpu = Encoder(tiny_folder, device="cuda", **kwargs)
    np.testing.assert_allclose(gpu.encode(TEXTS), cpu.encode(TEXTS), rtol=1e-4, atol=1e-5)
    for chunking in ("late", "naive"):
        a = gpu.encode_chunks(TEXTS, chunks="tokens:6:2", chunking=chunking)
        b = cpu.encode_chunks(TEXTS, chunks="tokens:6:2", chunking=chunking)
        assert (a.doc == b.doc).all() and (a.start == b.start).all() and (a.end == b.end).all()
        np.testing.assert_allclose(a.vectors, b.vectors, rtol=1e-4, atol=1e-5)


def test_half_precision_encoder_on_cuda_is_close_and_finite(tiny_folder):
    from tokenpool import Encoder

    reference = Encoder(tiny_folder, device="cpu").encode(TEXTS)
    for dtype in ("float16", "bfloat16"):
        got = Encoder(tiny_folder, device="cuda", dtype=dtype).encode(TEXTS)
        assert got.dtype == np.float32 and np.isfinite(got).all()
        cosine = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
        assert cosine.min() > 0.99, (dtype, cosine)


def test_windows_split_on_a_real_cuda_out_of_memory(tiny_folder, caplog):
    """A real `torch.cuda.OutOfMemoryError`: all but ~256 MB of the GPU taken, 8,192 windows in one batch — the
    batch is split in halves until it fits, and the vectors equal the unconstrained run."""
    import logging

    from tokenpool import Encoder

    gpu = Encoder(tiny_folder, device="cuda", max_length=128, long_documents="windows", window_stride=8)
    docs = [" ".join(f"w{(i * 7 + k) % 997}" for k in range(4000)) for i in range(8)]  # 1,500 windows each
    reference = gpu.encode(docs, batch_size=256)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    blocker = torch.empty(max(0, free - 256 * 2**20), dtype=torch.uint8, device="cuda")
    try:
        with caplog.at_level(logging.WARNING, logger="tokenpool.model.batching"):
            got = gpu.encode(docs, batch_size=8192)
    finally:
        del blocker
        torch.cuda.empty_cache()
    assert any("out of memory on a batch" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5)
