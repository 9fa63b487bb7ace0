"""Stop 62, reported items outside core: each test failed on the code before its fix."""

from __future__ import annotations

import pytest
from clitools import assert_one_error_line

from tokenpool import cli


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--threads", "2147483648"], "--threads must be <= 4096, got 2147483648"),
        (["--batch", "99999999999999999999"], "--batch must be <= 2147483647, got 99999999999999999999"),
        (["--dim", "99999999999999999999"], "--dim must be <= 2147483647, got 99999999999999999999"),
    ],
)
def test_bench_names_an_option_too_large_and_its_limit(capsys, argv, words):
    """``--threads 2147483648`` said "Overflow when unpacking long" (torch's set_num_threads) and ``--batch
    99999999999999999999`` "Maximum allowed dimension exceeded" (numpy), naming no option; ``--threads
    2147483647`` ended in libgomp's "Out of memory". Now the option and its limit are named."""
    code = cli.main(["bench", "--batch", "2", "--length", "4", "--dim", "4", "--no-st", *argv])
    assert_one_error_line(code, capsys.readouterr().err, "tokenpool bench: error:", words)


@pytest.mark.parametrize(("name", "encoding"), [("u16.txt", "utf-16-le"), ("u16.jsonl", "utf-16-be"),
                                                 ("u16.csv", "utf-16-le"), ("pairs.tsv", "utf-16-le")])  # fmt: skip
def test_a_utf16_file_is_named_utf16_and_advised_to_be_saved_as_utf8(tmp_path, name, encoding):
    """A UTF-16 file (PowerShell 5's default, byte-order mark FF FE or FE FF) was refused as "line 1: invalid UTF-8
    (byte 0xff at column 1)" only; the corpus readers and STS pairs now say it looks like UTF-16 and to save it as
    UTF-8. A file that merely holds such bytes later is told invalid UTF-8 as before."""
    from tokenpool.evaluation.sts import read_pairs
    from tokenpool.io.readers import iter_records

    text = {"u16.jsonl": '{"text": "hi"}\n', "pairs.tsv": "score\ts1\ts2\n1\ta\tb\n"}.get(name, "text\nhi\n")
    bom = b"\xff\xfe" if encoding.endswith("le") else b"\xfe\xff"
    path, late = tmp_path / name, tmp_path / f"late.{name.split('.')[1]}"
    path.write_bytes(bom + text.encode(encoding))
    late.write_bytes(text.encode() + bom + b"\n")
    read = read_pairs if name == "pairs.tsv" else (lambda p: list(iter_records(p, p.rsplit(".", 1)[1])))
    with pytest.raises(ValueError, match=rf"^{path}, line 1: invalid UTF-8 \(byte 0x{bom[0]:02x} at column 1\); it "
                                         r"looks like UTF-16 .*: save it as UTF-8$"):  # fmt: skip
        read(str(path))
    with pytest.raises(ValueError, match=r"line \d: invalid UTF-8 \(byte 0x.. at column 1\)$"):
        read(str(late))


def test_a_plot_title_in_letters_the_font_lacks_writes_the_plot_without_warnings(tmp_path):
    """``evaluate --plot x.png --model '模型 é'`` printed matplotlib's "Glyph 27169 ... missing from font(s)"
    UserWarnings (8 stderr lines with their source lines); the plot is written and nothing is warned now."""
    pytest.importorskip("matplotlib")
    import warnings

    from tokenpool.evaluation.common import plot_file

    path = tmp_path / "x.png"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with plot_file(str(path), (4.0, 3.0), "STS of 模型 é") as ax:
            ax.bar(["mean", "max"], [1.0, 2.0])
    assert [str(w.message) for w in caught] == []
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
