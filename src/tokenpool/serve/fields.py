"""The request fields both protocols take, each checked in one place: `FIELDS` maps a JSON field to its check,
and `parse` turns a body into an `EmbedRequest`; what depends on the model is `service.Model.prepare`'s."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ..core.chunking import CHUNKINGS, check_spans, parse_chunks
from ..core.quantize import PRECISIONS
from ..errors import OptionError, is_int, shown_value
from ..model.options import LONG_DOCUMENT_MODES
from .http import ApiError, cut, json_text, type_name

__all__ = ["DOCUMENTS", "OPENAI", "TEI", "EmbedRequest", "FIELDS", "Protocol", "check_span_pairs", "input_name",
           "named_model", "parse", "parse_decode", "parse_similarity"]


@dataclass(frozen=True)
class Protocol:
    """How one API answers: its error statuses, its texts field and its truncation default."""

    status: int  # a field of the wrong type or value
    size_status: int  # an input or request over a limit
    texts: str  # the field holding the texts
    truncate: bool  # inputs over the window are cut unless the request says otherwise
    empty_text: bool  # "" is a valid input (the TEI routes embed it; TEI itself refuses it: 400 Empty)
    mixes_ids: bool = False  # one request may hold texts and lists of token ids (TEI's inputs; OpenAI's may not)


OPENAI = Protocol(400, 400, "input", True, False)
TEI = Protocol(422, 413, "inputs", False, True, True)
DOCUMENTS = Protocol(422, 413, "documents", False, False)  # tokenpool's /embed_documents


@dataclass
class EmbedRequest:
    """An embedding request (or TEI's /tokenize, /decode, /similarity) after its field checks, whatever the
    protocol."""

    protocol: Protocol
    texts: list[Any] = field(default_factory=list)  # strings; on the embedding routes also lists of token ids
    model: str | None = None
    encoding_format: str = "float"
    dimensions: int | None = None
    normalize: bool | None = None
    truncate: bool | None = None
    truncation_direction: str | None = None  # "right" or "left"; None: the model's own side
    prompt_name: str | None = None
    precision: str = "float32"
    late_chunking: bool = False
    long_documents: str | None = None  # "truncate" or "windows"; None: truncate, as the request named none
    user: str | None = None
    modality: str = "text"  # infinity's clients send "modality": "text"; this server embeds text only
    chunks: str | None = None  # /embed_documents: "tokens:SIZE[:OVERLAP]", "boundaries:MAX[:OVERLAP]" or "spans"
    spans: list | None = None
    chunking: str = "late"
    return_text: bool = False
    single: bool = False  # the texts field was one string, not a list
    add_special_tokens: bool = True  # TEI's /tokenize
    ids: list[list[int]] | None = None  # TEI's /decode: the token ids of each text
    skip_special_tokens: bool = True  # TEI's /decode
    names: list[str] | None = None  # how messages name each input when not by its place in the texts field
    token_vectors: bool = False  # TEI's /embed_all: every token's vector, not one pooled vector per input

    @property
    def id_inputs(self) -> list[int]:
        """The positions of the inputs sent as token ids (lists of ints), not text."""
        return [k for k, item in enumerate(self.texts) if isinstance(item, list)]

    def input_name(self, index: int) -> str:
        """The input at ``index`` as messages name it (`input_name`, or its entry of ``names``)."""
        return self.names[index] if self.names is not None else input_name(self.protocol.texts, index, self.single)

    def document_name(self, index: int) -> str:
        """The text of input ``index`` as a message about the text names it: ``'documents[1]'``, quoted; with late
        chunking the one document all the inputs make, joined."""
        return f"('{self.protocol.texts}' joined for late chunking)" if self.late_chunking else f"'{self.input_name(index)}'"

    @cached_property
    def chunk_spec(self) -> Any:
        """``chunks`` as `core.chunking.parse_chunks` reads it (None: none sent), parsed once for the request's
        checks; ValueError naming the value as sent (JSON)."""
        if self.chunks is None:
            return None
        sent = shown_value(self.chunks, json_text, short=True)
        return parse_chunks(self.chunks, "'chunks'", f"'chunks': {sent}", json_text)

    @property
    def whole_documents(self) -> bool:
        """Whether the texts are read through windows (late chunking, chunks or windows), not one window each."""
        return self.late_chunking or self.chunks is not None or self.long_documents == "windows"


def input_name(name: str, index: int, single: bool) -> str:
    """How messages name one input: the field itself when the request sent one string, else ``name[index]``."""
    return name if single else f"{name}[{index}]"


def _fail(p: Protocol, name: str, what: str, value: Any) -> ApiError:
    got = "null" if value is None else f"{type_name(value)} {cut(json_text(value))}"  # (not 'null null')
    return ApiError(p.status, f"'{name}' must be {what}, got {got}", param=name)


def _texts(value: Any, name: str, p: Protocol) -> list[str]:
    """A string or a non-empty list of strings → the list; the error names the offending entry (token ids, which
    `_inputs` takes, are refused as such: this field takes text)."""
    single, items = _listed(value, name, p, "a string or a list of strings")
    if _all_ids(items):  # token ids (integers, or lists of them), as token-id clients send
        raise ApiError(p.status, f"'{name}' holds token ids ({name}[0] is an {type_name(items[0])}); this endpoint "
                       "takes text only, so send strings", param=name)  # fmt: skip
    for index, item in enumerate(items):
        _text(item, name, index, single, p)
    return items


def _inputs(value: Any, name: str, p: Protocol) -> list[str | list[int]]:
    """The embedding routes' inputs: a string, a list of strings, one input's token ids (a list of integers) or a
    list of such lists (OpenAI's four forms; TEI's also mix strings and lists of ids) → one entry per input, a
    string or a list of ids; each id an integer from 0 to `MAX_TOKEN_ID` (the vocabulary is the model's check:
    `service.Model.prepare`); the error names the offending entry as sent."""
    single, items = _listed(value, name, p, "a string, a list of strings, a list of token ids or a list of lists "
                            "of token ids")  # fmt: skip
    if _one_input_ids(value):
        return [_id_row(items, name, p)]
    ids = isinstance(items[0], list)  # OpenAI's forms are not mixed: the first input says which one this is
    for index, item in enumerate(items):
        if isinstance(item, list) and (p.mixes_ids or ids):
            items[index] = _id_row(item, f"{name}[{index}]", p)
        elif isinstance(item, str) and (p.mixes_ids or not ids):
            _text(item, name, index, single, p)
        else:  # (an integer among strings, a string among lists of ids)
            what = ("a string or a list of token ids" if p.mixes_ids or index == 0 else
                    "a list of token ids" if ids else "a string")  # fmt: skip
            raise _fail(p, f"{name}[{index}]", what, item)
    return items


def _one_input_ids(value: Any) -> bool:
    """Whether an inputs field is one input's token ids: a list whose first entry is an integer."""
    return isinstance(value, list) and bool(value) and is_int(value[0])


def _listed(value: Any, name: str, p: Protocol, what: str) -> tuple[bool, list]:
    """``(single, items)``: one string as a list of one (``single``), else a non-empty list."""
    if isinstance(value, str):
        return True, [value]
    if not isinstance(value, list):
        raise _fail(p, name, what, value)
    if not value:
        raise ApiError(400, f"'{name}' is an empty list; send at least one text", kind="empty", param=name)
    return False, list(value)


def _all_ids(items: list) -> bool:
    return all(is_int(item) or (isinstance(item, list) and all(map(is_int, item))) for item in items)


def _text(item: Any, name: str, index: int, single: bool, p: Protocol) -> None:
    """One text input: a string, empty only where the protocol embeds ""."""
    if not isinstance(item, str):
        raise _fail(p, f"{name}[{index}]", "a string", item)
    if not item and not p.empty_text:
        raise ApiError(p.status, f"'{input_name(name, index, single)}' is an empty string; every input needs text",
                       param=name)  # fmt: skip


Check = Callable[[Any, str, Protocol], Any]  # (value, field name, protocol) → the checked value


def _typed(what: str, valid: Callable[[Any], bool]) -> Check:
    """A check that passes a value ``valid`` accepts through unchanged, else names ``what`` it must be."""

    def check(value: Any, name: str, p: Protocol) -> Any:
        if not valid(value):
            raise _fail(p, name, what, value)
        return value

    return check


_string = _typed("a string", lambda value: isinstance(value, str))
_boolean = _typed("true or false", lambda value: isinstance(value, bool))
_integer = _typed("an integer", is_int)


def _spans(value: Any, name: str, p: Protocol) -> list:
    """One list of spans per document (each span is checked by `check_span_pairs`, whether it lies within its
    document with the document)."""
    if not isinstance(value, list):
        raise _fail(p, name, "a list (one per document) of lists of [start, end] pairs", value)
    bad = next((d for d, spans in enumerate(value) if not isinstance(spans, list)), None)
    if bad is not None:
        raise _fail(p, f"{name}[{bad}]", "a list of [start, end] pairs", value[bad])
    return value


def check_span_pairs(req: EmbedRequest) -> None:
    """Each span of ``req.spans`` a [start, end] pair of integers within its document (as `core.chunking.check_spans`
    needs), the first bad one named as the client sent it (``'spans[0][1]' ... got array [true,2]``). Run once the
    spans are within --max-chunks: a walk of the millions of pairs a 16 MB body holds would stall the event loop."""
    for d, spans in enumerate(req.spans or ()):
        bad = next((k for k, pair in enumerate(spans)
                    if not (isinstance(pair, list) and len(pair) == 2 and all(map(is_int, pair)))), None)  # fmt: skip
        if bad is not None:
            raise _fail(req.protocol, f"spans[{d}][{bad}]", "a [start, end] pair of integers", spans[bad])
        try:  # the bounds and "no spans" as the library checks them, named as the client sent them
            check_spans(spans, len(req.texts[d]), req.document_name(d), f"spans[{d}]")
        except OptionError as err:
            raise ApiError(req.protocol.status, str(err), param="spans") from None


def _choice(*options: str) -> Check:
    """A check for one of ``options``, case-insensitive (TEI sends "Right", OpenAI "float")."""

    def check(value: Any, name: str, p: Protocol) -> str:
        if isinstance(value, str) and value.lower() in options:
            return value.lower()
        raise _fail(p, name, " or ".join(map(json_text, options)), value)

    return check


MAX_TOKEN_ID = 2**32 - 1  # TEI reads token ids as u32


def _one_text_ids(value: list) -> bool:
    """Whether TEI's ``ids`` is one text's ids (a list holding no list, ``[]`` too) rather than a list of them."""
    return not any(isinstance(item, list) for item in value)


def _token_ids(value: Any, name: str, p: Protocol) -> list[list[int]]:
    """TEI's ``ids``: one text's token ids, or a non-empty list of such lists → one list per text; each list
    non-empty, each id an integer from 0 to `MAX_TOKEN_ID`; the error names the offending entry."""
    if not isinstance(value, list):
        raise _fail(p, name, "a list of token ids or a list of such lists", value)
    single = _one_text_ids(value)
    rows = [value] if single else value
    return [_id_row(row, input_name(name, index, single), p) for index, row in enumerate(rows)]


def _id_row(row: Any, shown: str, p: Protocol) -> list[int]:
    """One input's token ids: a non-empty list of integers from 0 to `MAX_TOKEN_ID` (no bool, no 2.0), the
    offending entry named as sent (``'input[1][3]'``)."""
    if not isinstance(row, list):
        raise _fail(p, shown, "a list of token ids", row)
    if not row:
        raise ApiError(400, f"'{shown}' is an empty list of token ids; send at least one", kind="empty",
                       param=shown.split("[", 1)[0])  # fmt: skip
    if set(map(type, row)) <= {int} and min(row) >= 0 and max(row) <= MAX_TOKEN_ID:  # (at C speed: a body may
        return row  # hold millions of ids, checked on the event loop)
    bad = next(k for k, item in enumerate(row) if not (is_int(item) and 0 <= item <= MAX_TOKEN_ID))
    raise _fail(p, f"{shown}[{bad}]", f"a token id (an integer from 0 to {MAX_TOKEN_ID})", row[bad])


_PAIR = ("source_sentence", "sentences")


def _sentence_pair(value: Any, name: str, p: Protocol) -> list[str]:
    """TEI's /similarity ``inputs``: an object of ``source_sentence`` (a string) and ``sentences`` (a non-empty
    list of strings) → ``[source_sentence, *sentences]``; the error names the offending entry."""
    if not isinstance(value, dict):
        raise _fail(p, name, "an object of 'source_sentence' (a string) and 'sentences' (a list of strings)", value)
    unknown = next((key for key in value if key not in _PAIR), None)
    if unknown is not None:
        raise ApiError(p.status, f"unrecognized field '{name}.{cut(unknown)}'; '{name}' takes {' and '.join(_PAIR)}",
                       param=name)  # fmt: skip
    missing = next((key for key in _PAIR if value.get(key) is None), None)
    if missing is not None:
        what = "a string" if missing == _PAIR[0] else "a list of strings"
        raise ApiError(p.status, f"'{name}.{missing}' is required: {what}", param=name)
    sentences, sentences_name = value["sentences"], f"{name}.sentences"
    if not isinstance(sentences, list):  # (TEI's sentences are a list, never one string)
        raise _fail(p, sentences_name, "a list of strings", sentences)
    return [_string(value["source_sentence"], f"{name}.source_sentence", p), *_texts(sentences, sentences_name, p)]


# field → (EmbedRequest attribute, check)
FIELDS: Mapping[str, tuple[str, Check]] = {
    "input": ("texts", _inputs),
    "inputs": ("texts", _inputs),
    "model": ("model", _string),
    "user": ("user", _string),
    "modality": ("modality", _choice("text")),
    "encoding_format": ("encoding_format", _choice("float", "base64")),
    "dimensions": ("dimensions", _integer),
    "normalize": ("normalize", _boolean),
    "truncate": ("truncate", _boolean),
    "truncation_direction": ("truncation_direction", _choice("right", "left")),
    "prompt_name": ("prompt_name", _string),
    "precision": ("precision", _choice(*PRECISIONS)),
    "late_chunking": ("late_chunking", _boolean),
    "long_documents": ("long_documents", _choice(*LONG_DOCUMENT_MODES)),
    "documents": ("texts", _texts),
    "chunks": ("chunks", _string),
    "spans": ("spans", _spans),
    "chunking": ("chunking", _choice(*CHUNKINGS)),
    "return_text": ("return_text", _boolean),
    "add_special_tokens": ("add_special_tokens", _boolean),
    "ids": ("ids", _token_ids),
    "skip_special_tokens": ("skip_special_tokens", _boolean),
}
SIMILARITY_CHECKS: Mapping[str, tuple[str, Check]] = {**FIELDS, "inputs": ("texts", _sentence_pair)}
TEXT_CHECKS: Mapping[str, tuple[str, Check]] = {**FIELDS, "inputs": ("texts", _texts)}  # /tokenize: text only
_REQUIRED = {_texts: "a string or a list of strings", _token_ids: "a list of token ids or a list of such lists",
             _inputs: "a string, a list of strings, or token ids (a list of integers, or a list of such lists)",
             _sentence_pair: "an object of 'source_sentence' and 'sentences'"}  # fmt: skip

EXTENSIONS = ("prompt_name", "normalize", "truncate", "truncation_direction", "precision", "late_chunking",
              "long_documents")  # fmt: skip
OPENAI_FIELDS = ("input", "model", "encoding_format", "dimensions", "user", "modality", *EXTENSIONS)
TEI_FIELDS = ("inputs", "model", "dimensions", *EXTENSIONS)
TEI_SPARSE_FIELDS = ("inputs", "model", "truncate", "truncation_direction", "prompt_name")
TEI_ALL_FIELDS = TEI_SPARSE_FIELDS  # /embed_all: TEI's EmbedAllRequest has the same fields
TOKENIZE_FIELDS = ("inputs", "model", "add_special_tokens", "prompt_name")  # TEI's, and "model"
DECODE_FIELDS = ("ids", "model", "skip_special_tokens")
SIMILARITY_FIELDS = ("inputs", "model", "truncate", "truncation_direction", "prompt_name")
DOCUMENT_FIELDS = ("documents", "model", "dimensions", "prompt_name", "normalize", "precision", "chunks", "spans",
                   "chunking", "return_text", "encoding_format")  # fmt: skip


# the Inference API's ``options`` (about its hosted models: loading, caching), each true or false: a loaded model
# with no cache has nothing to do with them
INFERENCE_API_OPTIONS = ("wait_for_model", "use_cache", "use_gpu")


def _unwrapped(data: Mapping[str, Any], p: Protocol, fields: Sequence[str] = ()) -> Mapping[str, Any]:
    """A TEI body in the Inference API's form, which TEI takes by ignoring the wrappers: its ``parameters`` object
    (LangChain's HuggingFaceEndpointEmbeddings sends ``{"inputs": [...], "parameters": {}}``) read as top-level
    fields, so none is dropped without a word (one given at both levels is refused), and its ``options``
    (HuggingFaceInferenceAPIEmbeddings sends ``{"wait_for_model": true, "use_cache": true}``) checked, then left;
    so is OpenAI's ``encoding_format`` where ``fields`` are /embed's: huggingface_hub's ``feature_extraction`` sends
    it and TEI ignores it (it answers floats, and the client reads floats only)."""
    if p is not TEI or not ("parameters" in data or "options" in data or "encoding_format" in data):
        return data
    options = data.get("options")
    if options is not None and not (isinstance(options, dict) and all(
            key in INFERENCE_API_OPTIONS and isinstance(value, bool) for key, value in options.items())):  # fmt: skip
        raise _fail(p, "options", f"an object of the Inference API's {', '.join(INFERENCE_API_OPTIONS)} (true or "
                    "false)", options)  # fmt: skip
    inner = {} if data.get("parameters") is None else data["parameters"]
    if not isinstance(inner, dict):
        raise _fail(p, "parameters", "an object of this endpoint's fields", inner)
    twice = next((name for name in inner if name in data), None)
    if twice is not None:
        raise ApiError(p.status, f"'{cut(twice)}' is given both at the top level and in 'parameters'; send it once",
                       param=cut(twice))  # fmt: skip
    merged = {**{name: value for name, value in data.items() if name not in ("parameters", "options")}, **inner}
    if fields == TEI_FIELDS and (encoding := merged.pop("encoding_format", None)) is not None:
        FIELDS["encoding_format"][1](encoding, "encoding_format", p)
    return merged


def named_model(data: Mapping[str, Any], p: Protocol) -> str | None:
    """The model a body names (TEI: in its ``parameters`` object too, as `parse` reads it), before any other
    check; None when it names none or sends no string."""
    name = _unwrapped(data, p).get("model")
    return name if isinstance(name, str) else None


def parse(data: Mapping[str, Any], p: Protocol, fields: Sequence[str],
          checks: Mapping[str, tuple[str, Check]] = FIELDS) -> EmbedRequest:  # fmt: skip
    """Check every field of ``data`` (TEI: its ``parameters`` too) against the endpoint's ``fields``, the first
    of which is required (its texts; /decode's ids), each by its entry of ``checks``."""
    data = _unwrapped(data, p, fields)
    unknown = [key for key in data if key not in fields]
    if unknown:
        named = cut(", ".join(repr(cut(key)) for key in unknown), 200)  # (a body's keys may be megabytes)
        raise ApiError(p.status, f"unrecognized request field(s) {named}; this endpoint takes {', '.join(fields)}",
                       param=cut(unknown[0]))  # fmt: skip
    first = fields[0]
    if data.get(first) is None:
        raise ApiError(p.status, f"'{first}' is required: {_REQUIRED[checks[first][1]]}", param=first)
    values = {checks[name][0]: checks[name][1](value, name, p)
              for name, value in data.items() if value is not None}
    single = isinstance(data[first], str) or (checks[first][1] is _inputs and _one_input_ids(data[first]))
    return EmbedRequest(protocol=p, single=single, **values)


def parse_decode(data: Mapping[str, Any]) -> EmbedRequest:
    """A TEI /decode body: ``ids`` (one text's token ids, or a list of them) and ``skip_special_tokens``;
    messages name a text's ids as sent (``ids``, ``ids[1]``)."""
    req = parse(data, TEI, DECODE_FIELDS)
    single = _one_text_ids(_unwrapped(data, TEI)["ids"])
    req.names = [input_name("ids", index, single) for index in range(len(req.ids or ()))]
    return req


def parse_similarity(data: Mapping[str, Any]) -> EmbedRequest:
    """A TEI /similarity body: ``inputs`` (``source_sentence``, ``sentences``) and its ``parameters``; the
    request's texts are the source sentence, then the sentences, named so in messages."""
    req = parse(data, TEI, SIMILARITY_FIELDS, SIMILARITY_CHECKS)
    req.names = ["inputs.source_sentence", *(f"inputs.sentences[{k}]" for k in range(len(req.texts) - 1))]
    return req
