"""benchmarks/bench_longdocs.py: its one-pass windows + late chunks (the whole document and every chunk size
as units of the same windows) equal the library's own separate calls."""

from __future__ import annotations

import numpy as np
import pytest
from clitools import benchmark_script

pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_one_pass_windows_and_late_chunks_equal_separate_calls():
    from tokenpool import Encoder

    encoder = Encoder(device="cpu", max_length=32)  # short windows: every document below needs several
    words = [
        "the",
        "river",
        "runs",
        "under",
        "the",
        "old",
        "stone",
        "bridge",
        "while",
        "a",
        "red",
        "kite",
        "circles",
        "over",
        "the",
        "green",
        "hills",
    ]
    docs = [" ".join(words[(k + i) % len(words)] for i in range(n)) for k, n in ((0, 90), (3, 7), (5, 41))]
    got = benchmark_script("bench_longdocs").windows_and_late(encoder, docs, [16, 24], stride=None, batch_size=4)

    windows = encoder.encode(docs, long_documents="windows", batch_size=4)
    index, vectors = got["windows"]
    np.testing.assert_array_equal(index, np.arange(len(docs)))
    np.testing.assert_allclose(vectors, windows, rtol=0, atol=2e-6)
    for size in (16, 24):
        chunks = encoder.encode_chunks(docs, chunks=f"tokens:{size}:0", chunking="late", batch_size=4)
        index, vectors = got[f"late-{size}"]
        np.testing.assert_array_equal(index, chunks.doc)
        np.testing.assert_allclose(vectors, chunks.vectors, rtol=0, atol=2e-6)
