"""Stop 64's hunt in `tokenpool serve`: what a client or an operator is told names what they sent. Servers bind
127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("pair", "flag"), [
    ("precision=int8", "--precision=int8"),
    ("pool=mean", "--pool=mean"),
    ("colour=false", "--no-colour"),
    ("colour=true", "--colour"),
])  # fmt: skip
def test_an_unknown_model_option_is_named_as_the_list_wrote_it(capsys, pair, flag):
    """``--model a=./m,precision=int8`` said "unrecognized arguments: --precision=int8": a flag the user never
    typed (and ``colour=false`` became ``--no-colour``). The refusal now names the pair as written in the list."""
    from tokenpool.cli import build_parser
    from tokenpool.cli.serve import _model_specs

    args = build_parser().parse_args(["serve", "--model", f"a=./m,dim=8,{pair}"])
    with pytest.raises(SystemExit) as exit_:
        _model_specs(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert f"--model 'a=./m,dim=8,{pair}': unrecognized arguments: {pair} " in err, err
    assert flag not in err and "dim" not in err.split("unrecognized", 1)[1], err


def test_known_model_options_still_parse():
    from tokenpool.cli import build_parser
    from tokenpool.cli.serve import _model_specs

    args = build_parser().parse_args(["serve", "--model", "a=./m,dim=8,normalize=false,prompt=query: x, y"])
    [(name, options)] = _model_specs(args)
    assert (name, options.model, options.truncate_dim, options.normalize, options.prompt) == ("a", "./m", 8, False, "query: x, y")
