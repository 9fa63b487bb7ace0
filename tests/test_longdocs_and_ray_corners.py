"""Long documents and Ray, corner cases: each test fails on the code before its fix.

References are independent of the code under test: the tokenizer's own ids and character offsets of one call,
the document's own slices, Ray's own rows."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tokenpool.errors import OptionError  # noqa: E402
from tokenpool.model import document_tokens  # noqa: E402
from tokenpool.model.tokenization import CHARS_PER_TOKEN  # noqa: E402

# characters Python's str.isspace() (and splitlines) count as whitespace, but a BERT tokenizer drops as control
# characters: a word around one of them is one word
CONTROL_SPACES = "\x0b\x0c\x1c\x1d\x1e\x1f\x85"


def _one_call(encoder, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """The tokenizer's own ids and character offsets of ``text``, in one call, without special tokens."""
    encoded = encoder.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [tuple(pair) for pair in encoded["offset_mapping"]]


@pytest.mark.parametrize("char", list(CONTROL_SPACES))
def test_sliced_tokenisation_does_not_cut_inside_a_word_at_a_control_character(full, monkeypatch, char):
    """Long texts are tokenised in slices cut before whitespace; a control character Python calls whitespace
    is no word boundary for the tokenizer, so a cut there split one word in two (other tokens, other spans)."""
    slice_chars = 40
    monkeypatch.setattr(document_tokens, "SLICE_CHARS", slice_chars)
    # the first slice's second half holds one space, then a control character inside a long word
    word = f"electro{char}encephalography"
    text = " ".join(["ab cd ef gh ij kl mn op", word, *["xy"] * 30])
    assert text.index(" electro") in range(slice_chars // 2, slice_chars) and text.index(char) < slice_chars
    tokens = document_tokens.tokenize_document(full.tokenization, text)
    ids, offsets = _one_call(full, text)
    assert tokens.ids.tolist() == ids
    assert list(zip(tokens.starts.tolist(), tokens.ends.tolist(), strict=True)) == offsets


class _Recording:
    """A tokenizer that records the length of every text it is called with (and is otherwise the tokenizer)."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer, self.lengths = tokenizer, []

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def __call__(self, texts, *args, **kwargs):
        self.lengths.extend(len(t) for t in ([texts] if isinstance(texts, str) else texts))
        return self._tokenizer(texts, *args, **kwargs)


@pytest.mark.parametrize("side", ["right", "left"])
def test_truncate_mode_token_output_tokenises_only_what_it_can_keep(tiny_bert_folder, tmp_path, monkeypatch, side):
    """output="tokens" and token_spans in truncate mode read a text's first (left: last) max_length tokens; a
    huge text was tokenised whole first. Now the tokenizer sees at most max_length × CHARS_PER_TOKEN characters,
    and the tokens and spans are still the tokenizer's own of the whole text, cut as transformers cuts them."""
    import json
    import shutil

    from tokenpool import Encoder

    folder = shutil.copytree(tiny_bert_folder, tmp_path / side)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "truncation_side": side}))
    encoder = Encoder(folder, pooling="mean", max_length=16, normalize=False, device="cpu")
    text = " ".join(f"w{i}" for i in range(20_000))  # ~128,000 characters, 8 times the budget
    budget = 16 * CHARS_PER_TOKEN
    ids, offsets = _one_call(encoder, text)
    keep = slice(0, 14) if side == "right" else slice(len(ids) - 14, len(ids))
    want = encoder.tokenizer(text, truncation=True, max_length=16)["input_ids"]
    assert want[1:-1] == ids[keep]
    row = torch.tensor([want])
    with torch.no_grad():
        state = encoder.runner.model(input_ids=row, attention_mask=torch.ones_like(row)).last_hidden_state[0]
    recording = _Recording(encoder.tokenizer)
    monkeypatch.setattr(encoder.tokenization, "tokenizer", recording)
    (got_ids, spans), = encoder.token_spans([text], special_tokens=False)
    vectors = encoder.encode(text, output="tokens")
    assert max(recording.lengths) <= budget < len(text)
    assert got_ids.tolist() == ids[keep] and [tuple(p) for p in spans.tolist()] == offsets[keep]
    np.testing.assert_allclose(vectors, state.numpy(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ Ray


def test_cli_ray_refuses_id_field_by_the_jobs_own_default(run, monkeypatch):
    """`embed --ray` refuses an --id-field it would not read, judging "given" against the default the CLI fills
    in from EmbedJob's id_field, not against a second copy of that default (a literal "id")."""
    from dataclasses import fields

    import tokenpool.integrations.ray as ray_integration
    from tokenpool.jobs import EmbedJob

    calls = []
    monkeypatch.setattr(ray_integration, "embed_parquet", lambda *a, **k: calls.append((a, k)))
    field = next(f for f in fields(EmbedJob) if f.name == "id_field")
    monkeypatch.setattr(field, "default", "_id")
    code, _, err = run("embed", "in.parquet", "-o", "out", "--ray")
    assert code == 0, err
    assert len(calls) == 1
    code, _, err = run("embed", "in.parquet", "-o", "out", "--ray", "--id-field", "doc_id")
    assert code == 2 and "--id-field is not supported with --ray" in err
    assert len(calls) == 1


RAY_OPTIONS = {"pooling": "mean", "max_length": 16, "device": "cpu"}


def test_ray_refuses_a_column_named_like_its_row_numbers(ray_session, tiny, tmp_path):
    """tokenpool numbers the rows in a column of its own (`DOC_SOURCE`); a caller's column of that name was
    overwritten and dropped (token rows) or read as the row numbers (a string column: a traceback). Refused with
    one line naming it: on the driver when the schema is known, in the first batch when it is not."""
    import json

    import ray.data

    from tokenpool.integrations.ray import DOC_SOURCE, embed_dataset

    model = str(tiny)
    rows = [{"text": f"doc {i} words", DOC_SOURCE: f"mine-{i}"} for i in range(3)]
    for output in ("tokens", "vectors"):
        with pytest.raises(ValueError, match=f"column '{DOC_SOURCE}', a name tokenpool uses"):
            embed_dataset(ray.data.from_items(rows), model=model, output=output, **RAY_OPTIONS)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    ds = ray.data.read_json(str(source))
    assert ds.schema(fetch_if_missing=False) is None  # (else the driver's check above applies)
    with pytest.raises(Exception, match=f"column '{DOC_SOURCE}', a name tokenpool uses"):
        embed_dataset(ds, model=model, output="tokens", **RAY_OPTIONS).take_all()


def test_ray_refuses_options_it_would_ignore(ray_session, tiny, tmp_path):
    """Python callers of the Ray API could pass chunking, spans_column or calibration_size where nothing reads
    them (the command line refuses those flags): now an OptionError naming the option, before any actor starts
    (embed_parquet: before Ray or the calibration runs); the same options where they apply still pass."""
    import ray.data

    from tokenpool.errors import OptionError
    from tokenpool.integrations.ray import embed_dataset, embed_parquet

    model = str(tiny)
    ds = ray.data.from_items([{"text": "a few words", "marks": [[0, 1]]}])
    refused = [
        ({"chunking": "naive"}, "chunking='naive' would be ignored without chunks"),
        ({"chunks": "tokens:8", "spans_column": "marks"}, "spans_column='marks' would be ignored without chunks='spans'"),
    ]  # fmt: skip
    for options, message in refused:
        with pytest.raises(OptionError, match=message):
            embed_dataset(ds, model=model, **options, **RAY_OPTIONS)
        with pytest.raises(OptionError, match=message):
            embed_parquet("in.jsonl", str(tmp_path / "out"), model=model, **options, **RAY_OPTIONS)
    with pytest.raises(OptionError, match="calibration_size=50 would be ignored without precision='int8'"):
        embed_parquet("in.jsonl", str(tmp_path / "out"), model=model, calibration_size=50, **RAY_OPTIONS)
    with pytest.raises(OptionError, match="calibration_size=50 would be ignored with a calibration"):
        embed_parquet("in.jsonl", str(tmp_path / "out"), model=model, precision="int8", calibration_size=50,
                      calibration={"not": "read"}, **RAY_OPTIONS)  # fmt: skip
    assert not (tmp_path / "out").exists()
    embed_dataset(ds, model=model, chunks="spans", spans_column="marks", chunking="naive", **RAY_OPTIONS)
    embed_dataset(ds, model=model, chunking="late", spans_column="spans", **RAY_OPTIONS)  # the defaults


def test_ray_token_chunks_keep_a_column_named_spans(tiny_bert_folder):
    """Chunk rows leave out the columns chunking reads (the text, and the spans of chunks="spans"); with token
    chunks a column that happens to be named like the default spans column is the caller's data, and was
    dropped. It is carried to every chunk row like the other columns."""
    import pyarrow as pa

    from tokenpool.integrations.ray import EmbedBatch
    from tokenpool.model.options import EncoderOptions
    from tokenpool.model.request import EncodeRequest

    options = EncoderOptions(model=str(tiny_bert_folder), **RAY_OPTIONS)
    batch = EmbedBatch("text", "vec", options, EncodeRequest(chunks="tokens:4").check(options))
    text = "one two three four five six seven eight nine ten"
    out = batch(pa.table({"id": [7], "text": [text], "spans": ["the caller's notes"]}))
    n = len(out)
    assert n > 1 and out.column("id").to_pylist() == [7] * n
    assert out.column("spans").to_pylist() == ["the caller's notes"] * n
    assert "text" not in out.column_names
    starts, ends = out.column("start").to_pylist(), out.column("end").to_pylist()
    offsets = _one_call(batch.encoder, text)[1]
    assert list(zip(starts, ends, strict=True)) == [(offsets[a][0], offsets[min(a + 4, len(offsets)) - 1][1])
                                                    for a in range(0, len(offsets), 4)]  # fmt: skip


def test_encode_chunks_names_must_name_every_text(full):
    """A names list shorter than the texts was an IndexError from inside the chunk plan; a matching one names
    the document in messages."""
    texts = ["cats and dogs", "birds and fish", "a third text"]
    with pytest.raises(OptionError, match=r"names must name every text: 3 texts, 2 names given"):
        full.encode_chunks(texts, chunks="tokens:4:0", names=["a", "b"])
    with pytest.raises(OptionError, match=r"document second: span \[0, 0\]"):
        full.encode_chunks(texts[:2], chunks="spans", spans=[[(0, 4)], [(0, 0)]], names=["first", "second"])
