"""Stop 67 review of s67-evaluation: `evaluate --pooling` reads every name before it checks the combinations
(as `embed` does), and `--calibration-size` keeps taking any positive size of at least 2."""

from __future__ import annotations

import pytest


def _error_line(capsys, argv: list[str]) -> str:
    """The one stderr line of a refused command, without its ``tokenpool COMMAND:`` prefix."""
    from clitools import assert_one_error_line

    from tokenpool import cli

    code = cli.main(argv)
    err = capsys.readouterr().err
    assert_one_error_line(code, err)
    return err.strip().split(": error: ", 1)[1]


@pytest.mark.parametrize("pooling", ["mean+splade,bogus", "bogus,mean+splade", "mean+splade", "max+splade,Nope"])
def test_evaluate_refuses_a_pooling_as_embed_does(tmp_path, capsys, pooling):
    """An unknown name and an uncombinable pair in one --pooling: evaluate names what embed names (every name
    is read first, then the combinations: "mean+splade,bogus" named 'bogus', then the combination), before the
    model loads."""
    (tmp_path / "no-model").mkdir()
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("score\ts1\ts2\n1\ta cat\ta dog\n3\tthe sun\tthe sun shines\n", encoding="utf-8")
    texts = tmp_path / "texts.txt"
    texts.write_text("a cat\n", encoding="utf-8")
    model = ["--model", str(tmp_path / "no-model"), "--pooling", pooling]
    expected = _error_line(capsys, ["embed", str(texts), "-o", str(tmp_path / "out.npy"), *model])
    assert _error_line(capsys, ["evaluate", str(pairs), *model]) == expected


class _Unrun:
    """An encoder without `check_pooling` (nor anything to run): the labels are checked without it."""

    is_sparse = False


@pytest.mark.parametrize("labels", ["mean+splade,bogus", ["mean+splade", "bogus"], ["cls", "splade+max", "nope"]])
def test_label_list_names_an_unknown_strategy_first(labels):
    """`label_list` (evaluate_pairs' pooling=): every name is read before a combination is checked, as core's
    reader of one combination does ("mean+splade,bogus" names 'bogus')."""
    from tokenpool.core.strategies import parse_strategies
    from tokenpool.evaluation.sts import label_list

    names = labels if isinstance(labels, str) else ",".join(labels)
    with pytest.raises(ValueError) as reference:
        parse_strategies(names)
    with pytest.raises(ValueError) as found:
        label_list(labels, _Unrun())
    assert str(found.value) == str(reference.value)


def test_label_list_refuses_an_uncombinable_label_before_the_encoder_runs():
    """A label that pools nothing (SPLADE with another strategy) is refused as core's `pool` refuses it, before
    an encoder without `check_pooling` runs."""
    from tokenpool.core.strategies import parse_combination
    from tokenpool.evaluation.sts import label_list

    with pytest.raises(ValueError) as reference:
        parse_combination("cls+splade")
    with pytest.raises(ValueError) as found:
        label_list("mean,cls+splade", _Unrun())
    assert str(found.value) == str(reference.value)


@pytest.mark.parametrize("folder", [False, True])
@pytest.mark.parametrize("size", [2, 2**63, 10**30])
def test_evaluate_takes_any_calibration_size_of_at_least_two(tmp_path, capsys, folder, size):
    """--calibration-size N calibrates on the first N texts, fewer where the data holds fewer (the library's
    ``calibration_size`` takes any positive int): a size past int64 is no error (it was, after stop 67's early
    check, "at most 9223372036854775807", a bound for what embed's jobs record); the model folder is what is
    refused here."""
    from clitools import tiny_beir

    (tmp_path / "no-model").mkdir()
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("score\ts1\ts2\n1\ta cat\ta dog\n3\tthe sun\tthe sun shines\n", encoding="utf-8")
    data = tiny_beir(tmp_path / "set") if folder else pairs
    argv = ["evaluate", str(data), "--model", str(tmp_path / "no-model"), "--precision", "int8"]
    assert "no-model" in _error_line(capsys, [*argv, "--calibration-size", str(size)])
