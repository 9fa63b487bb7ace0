"""Stop 67 review of s67-encoder: texts that carry an ``ndim`` but no ``shape`` are read as before, and
``tokenpool bench --device`` reads a device as every other command does (an index above torch's refused)."""

from __future__ import annotations

import pytest

from tokenpool.model.texts import as_texts


class _Tagged(list):
    """A list of texts carrying an ``ndim`` of its own meaning (no array: no ``shape``)."""

    ndim = None


def test_texts_with_an_ndim_but_no_shape_are_read_as_the_list_they_are():
    """The DataFrame refusal (``ndim != 1``) read ``texts.shape`` for its message, so a sequence carrying an
    ``ndim`` but no ``shape`` got an AttributeError where it was read as its items before; the reference is
    the plain list of the same texts."""
    texts = ["hello world", "x"]
    assert as_texts(_Tagged(texts)) == (False, list(texts))


@pytest.mark.parametrize("device", ["cuda:300", "cpu:128", "cuda:99999999999999999999"])
def test_bench_refuses_a_device_index_above_torchs_as_embed_does(capsys, device):
    """``tokenpool bench --device cuda:300`` went to ``torch.device``, which keeps 8 bits of the index: on a
    CUDA machine it timed cuda:44 (``cpu:300`` ran anywhere). It is read by the project's one device reader
    now: one stderr line, exit 2, with the words of ``tokenpool embed --device`` (the reference)."""
    from tokenpool import cli

    assert cli.main(["bench", "--batch", "2", "--length", "4", "--dim", "4", "--device", device]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert cli.main(["embed", "in.txt", "-o", "out.npy", "--device", device]) == 2
    reference = capsys.readouterr().err.strip().splitlines()[-1].removeprefix("tokenpool embed: error: ")
    assert reference.startswith(f"--device {device.split(':')[0]}:") and "a device index is at most" in reference
    assert lines == [f"tokenpool bench: error: {reference}"]
