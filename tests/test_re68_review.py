"""Review of stop 68's encoder change: a named pooling on a folder whose Dense module tokenpool cannot run, the
warning said once per encoder (never by a call's own pooling or evaluate's per-strategy rows), ordered iterables."""

from __future__ import annotations

import json
import logging
from collections import deque

import numpy as np
import pytest
from test_encoder68 import TEXTS, dense_encoder, dense_folder  # noqa: F401 (fixtures)

from tokenpool.errors import ConfigError

SAID = "gives raw pooled rows"


def _said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if SAID in r.getMessage()]


def test_a_named_pooling_takes_a_folder_whose_dense_module_tokenpool_cannot_run(dense_folder, tmp_path, caplog):  # noqa: F811
    """``Encoder(folder, pooling="mean")`` on a folder whose Dense module names an activation tokenpool does not
    run (Softsign) gave the raw mean rows before stop 68: the one way to use such a folder. Stop 68 read the
    module configs for its warning and so refused it (ConfigError) although they are not run. It is taken again,
    with the warning; pooling "auto", which would run the module, still refuses it."""
    import shutil

    from tokenpool import Encoder

    folder = shutil.copytree(dense_folder, tmp_path / "softsign")
    config = json.loads((folder / "3_Dense" / "config.json").read_text(encoding="utf-8"))
    config["activation_function"] = "torch.nn.modules.activation.Softsign"
    (folder / "3_Dense" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    raw = Encoder(dense_folder, pooling="mean", normalize=False, device="cpu")  # the same weights, runnable Dense
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tokenpool.model.encoder"):
        named = Encoder(folder, pooling="mean", normalize=False, device="cpu")
    np.testing.assert_array_equal(named.encode(TEXTS), raw.encode(TEXTS))
    (message,) = _said(caplog)
    assert "Softsign" in message and "not run" in message
    with pytest.raises(ConfigError, match="Softsign"):
        Encoder(folder, device="cpu")


def test_the_warning_is_said_once_per_encoder_and_never_by_a_calls_own_pooling(dense_folder, dense_encoder, caplog):  # noqa: F811
    """The warning belongs to building an encoder with a named pooling: its calls do not repeat it, and an
    encoder of the folder's own pipeline never says it, whatever pooling its calls (or evaluate's per-strategy
    rows, which pool through them) ask for."""
    from tokenpool import Encoder
    from tokenpool.evaluation.sts import Pairs, evaluate_pairs

    with caplog.at_level(logging.WARNING, logger="tokenpool.model.encoder"):
        named = Encoder(dense_folder, pooling="cls", device="cpu")
        for _ in range(3):
            named.encode(TEXTS)
        assert len(_said(caplog)) == 1
        caplog.clear()
        dense_encoder.encode(TEXTS, pooling="cls")
        dense_encoder.encode(TEXTS, pooling=["mean", "max"], long_documents="windows")
        pairs = Pairs(["a cat", "a dog", "rain", "snow"], ["the cat", "a bird", "sun", "ice"], [4.0, 1.0, 0.5, 3.0])
        scores = evaluate_pairs(dense_encoder, pairs, "all")
    assert len(scores) > 3 and _said(caplog) == []


def test_the_cli_evaluate_rows_of_every_strategy_say_nothing(run, dense_folder, tmp_path, caplog):  # noqa: F811
    """``tokenpool evaluate PAIRS --model FOLDER --pooling all`` pools a row per strategy through the folder's
    own encoder: no warning (it builds no encoder with a named pooling)."""
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("score\ts1\ts2\n1.0\ta cat\tthe cat\n2.0\train\tsun\n3.5\tsnow\tice\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        code, _, err = run("evaluate", pairs, "--model", dense_folder, "--pooling", "all")
    assert code == 0, err
    assert SAID not in err and _said(caplog) == []


@pytest.mark.parametrize("kind", ["generator", "tuple", "deque", "dict keys", "array", "map"])
def test_ordered_iterables_are_still_taken_in_their_order(dense_encoder, kind):  # noqa: F811
    """Only set / frozenset are refused: every ordered iterable gives the rows of its own order."""
    made = {"generator": lambda t: (x for x in t), "tuple": tuple, "deque": deque, "array": np.array,
            "dict keys": lambda t: dict.fromkeys(t).keys(), "map": lambda t: map(str, t)}[kind]  # fmt: skip
    np.testing.assert_array_equal(dense_encoder.encode(made(TEXTS)), dense_encoder.encode(list(TEXTS)))
