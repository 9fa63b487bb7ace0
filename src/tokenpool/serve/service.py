"""The service behind the endpoints: the served models (runner, names, batcher), the model-name policy, the
checks that need a model, the wait for the worker, and the finishing of raw pooled rows into answers."""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..core.chunking import BoundaryChunks, chunk_count
from ..core.quantize import CALIBRATED_PRECISIONS
from ..errors import ModelOutputError, OptionError, classify, one_line
from ..model.request import HTTP_NAMES, EncodeRequest
from ..model.texts import named_prompt
from .batcher import Batcher, Draining, Job, QueueFull
from .fields import EmbedRequest, Protocol, check_span_pairs, parse
from .http import ApiError, Request, draining_error, read_json, wait_disconnect
from .metrics import Metrics
from .runner import Runner, check_runner, share_cpus
from .settings import ServeSettings

logger = logging.getLogger("tokenpool.serve")

__all__ = ["Model", "Prepared", "ServeSettings", "Service"]

_BIG_REQUEST_CHARS = 32768  # count tokens off the event loop above this many characters
# the hint of a refusal of token ids: clients that tokenise with tiktoken send ids of OpenAI's vocabulary
_TIKTOKEN = (" (a client that tokenises with tiktoken sends another vocabulary's ids: LangChain's OpenAIEmbeddings "
             "sends text with check_embedding_ctx_length=False)")
_CHECKED_KEPT = 256  # distinct option combinations remembered per model
# a request's model options in the order a refusal is looked for (a calibration goes with its precision)
_OPTION_GROUPS = (("truncate_dim",), ("normalize",), ("precision", "calibration"), ("prompt_name",))


class ModelView:
    """A runner as `EncodeRequest.check_encoder` reads a model, from the `Runner` protocol's attributes (any
    runner is checked alike; messages show its served name, never a folder)."""

    truncate_dim = None  # the served dimension is the whole `dimension`: a request's cut is its own

    def __init__(self, runner: Runner, name: str) -> None:
        self.model_path = name
        self.is_sparse = bool(runner.is_sparse)
        self.dimension = int(runner.dimension)
        self.normalize = bool(runner.normalize)
        self.max_active_dims = getattr(runner, "max_active_dims", None)  # (optional in `Runner`: `finish_rows` keeps them)
        self.strategies = tuple(runner.info.get("pooling", ()))
        self.config = SimpleNamespace(prompts=dict(runner.prompts), default_prompt_name=None)


@dataclass
class Prepared:
    """A request checked against its model; ``used``: the tokens the model reads (after truncation, special
    tokens and prompt included), ``truncated``: the tokens cut."""

    texts: list[str]
    prompt: str
    tokens: Any
    request: EncodeRequest
    lengths: list[int]
    truncated: int
    used: int


class Model:
    """One served model: its runner, the names clients may send, its batcher and metrics."""

    def __init__(self, runner: Runner, names: tuple[str, ...], settings: ServeSettings, metrics: Metrics) -> None:
        self.runner = runner
        self.names = names
        self.name = names[0]
        self.settings = settings
        self.metrics = metrics.for_model(self.name)
        self.batcher = Batcher(runner, settings, self.metrics)
        self.view = ModelView(runner, self.name)
        # the side a request naming no truncation_direction is cut on: the model's, as `Encoder.encode` cuts it
        self.truncation_side: str = getattr(runner, "truncation_side", "right")
        # tokenises at once, or answers None while another thread holds the tokenizer (optional in `Runner`)
        self._try_tokenize = getattr(runner, "try_tokenize", runner.tokenize)
        self._checked: dict[tuple, EncodeRequest] = {}  # checked options, by their values (event-loop thread only)

    def _error(self, req: EmbedRequest, message: str, param: str, *, size: bool = False) -> ApiError:
        p = req.protocol
        status, kind = (p.size_status, "too_large") if size else (p.status, "invalid_request")
        return ApiError(status, message, kind=kind, param=param)

    async def prepare(self, req: EmbedRequest) -> Prepared:
        """The server's limits, the request's options as one checked `EncodeRequest`, then each text tokenised
        once (off the event loop when large): inputs over the window are cut on the request's side when it
        truncates, else refused; whole documents are never cut."""
        s, name = self.settings, req.protocol.texts
        self._check_sizes(req)
        request = self._options(req)
        prompt = self._prompt(req)
        texts = [" ".join(req.texts)] if req.late_chunking else req.texts
        # (TEI's --auto-truncate; "long_documents": "truncate" asks for the cut by name, as `Encoder.encode` cuts)
        default = req.protocol.truncate or s.auto_truncate or req.long_documents == "truncate"
        truncate = not req.whole_documents and (default if req.truncate is None else req.truncate)
        truncation = (req.truncation_direction or self.truncation_side) if truncate else None
        tokens = await self._tokenize_inputs(req, texts, prompt, truncation)
        # plain ints: a request has few texts, and numpy costs more than it saves on a handful
        counts, lengths = np.asarray(tokens.counts).tolist(), np.asarray(tokens.lengths).tolist()
        if req.late_chunking or req.chunks is not None:
            await self._check_chunk_count(req, counts, prompt)
        limit = self.runner.max_length
        index = next((k for k, count in enumerate(counts) if count > limit), None)
        if index is not None and not truncate and not req.whole_documents:
            raise self._error(req, f"'{req.input_name(index)}' has {counts[index]} tokens but the model takes at "
                              f'most {limit}; send "truncate": true to cut it', name, size=True)  # fmt: skip
        used = sum(lengths)
        if req.token_vectors and used > s.max_batch_tokens:  # (one vector per token: ~10 bytes of JSON a float)
            raise self._error(req, f"this request has {used} tokens, and /embed_all answers a vector for each; this "
                              f"server takes at most {s.max_batch_tokens} per request (--max-batch-tokens)", name,
                              size=True)  # fmt: skip
        return Prepared(texts, prompt, tokens, request, lengths, sum(counts) - used, used)

    def _check_sizes(self, req: EmbedRequest) -> None:
        """--max-inputs (texts, or /decode's lists of ids), then what whole documents need (`_check_documents`),
        then --max-input-chars per text, or --max-document-chars per document."""
        s, name = self.settings, "ids" if req.ids is not None else req.protocol.texts
        count = len(req.ids if req.ids is not None else req.texts)
        if count > s.max_inputs:
            what = "lists of token ids" if req.ids is not None else "inputs"
            raise self._error(req, f"'{name}' has {count} {what}; this server takes at most {s.max_inputs} per request "
                              "(--max-inputs)", name, size=True)  # fmt: skip
        if req.id_inputs:
            self._check_id_inputs(req, req.id_inputs)
        if req.whole_documents:
            self._check_documents(req)
            limit, per = s.max_document_chars, " per document (--max-document-chars)"
        else:
            limit, per = s.max_input_chars, " (--max-input-chars)"
        lengths = [len(" ".join(req.texts))] if req.late_chunking else [len(text) for text in req.texts]
        for index, length in enumerate(lengths):
            if length > limit:
                what = ("the document " if req.late_chunking else "") + req.document_name(index)
                unit = "token ids" if isinstance(req.texts[index], list) else "characters"
                raise self._error(req, f"{what} has {length} {unit}; this server takes at most {limit}{per}",
                                  name, size=True)  # fmt: skip

    def _check_id_inputs(self, req: EmbedRequest, at: list[int]) -> None:
        """Inputs sent as token ids: a runner that reads them (``tokenize_ids``), no prompt_name and no whole
        documents (both are about text); their vocabulary is `_check_vocabulary`'s, with their tokenisation."""
        name, first = req.protocol.texts, req.input_name(at[0])
        if getattr(self.runner, "tokenize_ids", None) is None:
            raise self._error(req, f"'{first}' holds token ids, which the runner of {self.name} cannot read: send "
                              f"text{_TIKTOKEN}", name)  # fmt: skip
        if req.whole_documents:
            mode = "late_chunking" if req.late_chunking else "long_documents"
            raise self._error(req, f"token ids ('{first}') do not go with '{mode}', which reads documents as text; "
                              "send text", mode)  # fmt: skip
        if req.prompt_name is not None:
            raise self._error(req, f"'prompt_name' does not go with token ids ('{first}'): ids are the model's whole "
                              "input, as /tokenize shows it, and get no prompt; send the prompt's tokens in them "
                              "(/tokenize with this prompt_name gives them)", "prompt_name")  # fmt: skip

    def _check_vocabulary(self, req: EmbedRequest, at: list[int]) -> None:
        """Every id of the inputs at ``at`` within the model's vocabulary (the runner's ``vocabulary_size``, where it
        has one): an id past it would be dropped by the tokenizer, or fail the embedding lookup."""
        size = getattr(self.runner, "vocabulary_size", None)
        for index in () if size is None else at:
            row = req.texts[index]
            if max(row) >= size:
                bad = next(k for k, token in enumerate(row) if token >= size)
                raise self._error(req, f"'{req.input_name(index)}[{bad}]' is {row[bad]}, not a token id of {self.name} "
                                  f"(its ids are 0 to {size - 1}): token ids are the served model's own{_TIKTOKEN}",
                                  req.protocol.texts)  # fmt: skip

    async def _tokenize_inputs(self, req: EmbedRequest, texts: list[Any], prompt: str, truncation: str | None) -> Any:
        """`_tokenize` of the texts and `Runner.tokenize_ids` of the inputs sent as token ids, in input order."""
        at = req.id_inputs
        if not at:
            return await self._tokenize(req, texts, prompt, truncation)
        words = [k for k, text in enumerate(texts) if isinstance(text, str)]
        rows = [texts[k] for k in at]

        def cut() -> Any:
            self._check_vocabulary(req, at)
            return self.runner.tokenize_ids(rows, truncation)

        parts = [cut() if sum(map(len, rows)) <= _BIG_REQUEST_CHARS else await self._in_thread(req, cut)]
        if words:
            parts.insert(0, await self._tokenize(req, [texts[k] for k in words], prompt, truncation))
        return type(parts[0]).concat(parts).select(np.argsort(words + at, kind="stable"))

    def _prompt(self, req: EmbedRequest) -> str:
        """The prompt in front of each text: the request's ``prompt_name`` (checked by `_options`), else the
        model's default prompt."""
        if req.prompt_name is None:
            return self.runner.default_prompt
        return named_prompt(self.runner.prompts, req.prompt_name)

    async def tokens(self, req: EmbedRequest) -> list[tuple[str, Any, Any, list[str | None]]]:
        """TEI's /tokenize: each text with its prompt in front, as /embed tokenises it but never truncated → per
        text ``(prompt + text, ids, spans, vocabulary entries)`` (`Runner.token_spans`, `Runner.token_texts`);
        the request's limits and prompt checked as /embed checks them."""
        self._check_sizes(req)
        self._options(req)
        texts = [self._prompt(req) + text for text in req.texts]
        spans, texts_of = self._part("token_spans"), self._part("token_texts")

        def run() -> list[tuple[str, Any, Any, list[str | None]]]:
            rows = spans(texts, req.add_special_tokens)
            return [(text, ids, where, texts_of(ids.tolist())) for text, (ids, where) in zip(texts, rows, strict=True)]

        return await self._in_thread(req, run)

    async def decode(self, req: EmbedRequest) -> list[str]:
        """TEI's /decode: each list of ids as text (`Runner.decode`); an id outside the model's vocabulary
        (which the tokenizer would drop without a word) is refused, named as the client sent it."""
        self._check_sizes(req)
        rows, decode, texts_of = req.ids or [], self._part("decode"), self._part("token_texts")

        def run() -> list[str]:
            for index, row in enumerate(rows):
                unknown = next((k for k, text in enumerate(texts_of(row)) if text is None), None)
                if unknown is not None:
                    raise self._error(req, f"'{req.input_name(index)}[{unknown}]' is {row[unknown]}, not a token id "
                                      f"of {self.name}", "ids")  # fmt: skip
            return decode(rows, req.skip_special_tokens)

        return await self._in_thread(req, run)

    def _part(self, name: str) -> Callable[..., Any]:
        """The runner's method ``name`` (a tokenizer part optional in `Runner`, or `Runner.embed_documents`, which
        `check_runner` leaves to the routes that need it), or a 501 naming what it lacks."""
        method = getattr(self.runner, name, None)
        if method is None:
            raise ApiError(501, f"the runner of {self.name} has no {name}: it cannot answer this endpoint",
                           kind="internal")  # fmt: skip
        return method

    async def _in_thread(self, req: EmbedRequest, run: Callable[[], Any]) -> Any:
        """``run()`` (tokenizer work) off the event loop, which never waits for the tokenizer's lock; what the
        tokenisation refuses is the request's fault (`_refusal`)."""
        try:
            return await asyncio.to_thread(run)
        except ApiError:
            raise
        except Exception as err:
            raise self._refusal(req, err) from None

    def _options(self, req: EmbedRequest) -> EncodeRequest:
        """The request's model options as a checked `EncodeRequest`, the same check `Encoder.encode` runs
        (cached per distinct options: most requests repeat a few combinations)."""
        calibration = self.runner.calibration if req.precision in CALIBRATED_PRECISIONS else None
        key = (req.dimensions, req.normalize, req.precision, req.prompt_name, id(calibration))
        checked = self._checked.get(key)
        if checked is None:
            options = {"truncate_dim": req.dimensions, "normalize": req.normalize, "precision": req.precision,
                       "calibration": calibration, "prompt_name": req.prompt_name}  # fmt: skip
            def check(groups: tuple[tuple[str, ...], ...]) -> EncodeRequest:
                given = {name: options[name] for names in groups for name in names}
                return EncodeRequest(**given, caller="http").check_encoder(self.view)

            try:  # all at once; when refused, field by field, so that the refusal names the field that made it
                checked = check(_OPTION_GROUPS)  # (a calibration's: 'precision'): the first group whose addition fails
            except (OptionError, ValueError, TypeError):
                for count, (first, *_) in enumerate(_OPTION_GROUPS, 1):
                    try:
                        check(_OPTION_GROUPS[:count])
                    except (OptionError, ValueError, TypeError) as err:
                        raise self._error(req, one_line(err), HTTP_NAMES.get(first, first)) from None
                raise
            if len(self._checked) >= _CHECKED_KEPT:
                self._checked.clear()
            self._checked[key] = checked
        return checked

    def _check_documents(self, req: EmbedRequest) -> None:
        """What documents read whole need (a late-chunking request's inputs together are one document)."""
        name = req.protocol.texts
        mode = "'late_chunking': true" if req.late_chunking else "'long_documents': \"windows\""
        cutting = "truncate" if req.truncate else "truncation_direction" if req.truncation_direction else None
        if cutting:  # it would be ignored: say so rather than answer vectors of more than the client asked for
            said = "'truncate': true" if req.truncate else f"'truncation_direction': \"{req.truncation_direction}\""
            raise self._error(req, f"{said} does not go with {mode}: the texts are read whole through "
                              f"windows and nothing is cut; leave '{cutting}' out", cutting)  # fmt: skip
        if req.late_chunking and req.long_documents is not None:  # EncodeRequest's rule, spelled for /embed
            raise self._error(req, f"'long_documents': \"{req.long_documents}\" does not go with {mode}: its inputs are "
                              "chunks of one document, each pooled from its own tokens in it; send one of the two",
                              "long_documents")  # fmt: skip
        if self.runner.is_sparse:
            raise self._error(req, f"{self.name} is a sparse (SPLADE) model; whole documents are read by dense ones",
                              name)  # fmt: skip
        try:
            spec = req.chunk_spec
        except ValueError as err:
            raise self._error(req, str(err), "chunks") from None
        if (req.spans is not None) != (spec == "spans"):  # (" SPANS" too: as parse_chunks reads it)
            raise self._error(req, "'spans' goes with \"chunks\": \"spans\", and only with it", "spans")
        if req.spans is not None and len(req.spans) != len(req.texts):
            raise self._error(req, f"'spans' has {len(req.spans)} lists for {len(req.texts)} documents; it needs one "
                              "list of [start, end] spans per document", "spans")  # fmt: skip
        # the TEI routes embed "" (as sentence-transformers does; TEI refuses it), but it is no chunk of a text; nor is
        # whitespace (no token, as in `chunk_plan`)
        chunked = req.late_chunking or req.chunks is not None
        blank = next((k for k, text in enumerate(req.texts) if not text.strip()), None) if chunked else None
        if blank is not None:
            what = "only whitespace" if req.texts[blank] else "an empty string"
            why = ("with late_chunking each input is a chunk of one document and needs text" if req.late_chunking
                   else "it has no chunk to embed")  # fmt: skip
            raise self._error(req, f"'{req.input_name(blank)}' is {what}; {why}", name)

    async def _check_chunk_count(self, req: EmbedRequest, counts: list[int], prompt: str) -> None:
        """At most --max-chunks chunk vectors per request, counted before any forward pass (for
        "boundaries:MAX", the fewest it could make: MAX tokens each)."""
        spec = None if req.late_chunking else req.chunk_spec  # (parsed once, by `_check_documents`)
        if spec is None or spec == "spans":
            count = len(req.texts) if req.late_chunking else sum(map(len, req.spans or ()))
        else:
            count = sum(chunk_count(tokens, spec) for tokens in await self._body_lengths(req, counts, prompt))
        limit = self.settings.max_chunks
        if count > limit:
            what = f"at least {count}" if isinstance(spec, BoundaryChunks) else str(count)
            param = req.protocol.texts if req.chunks is None else "chunks"
            raise self._error(req, f"this request makes {what} chunks; this server takes at most {limit} per request "
                              "(--max-chunks): send larger chunks or fewer documents", param, size=True)  # fmt: skip
        check_span_pairs(req)  # (now that they are few)

    async def _body_lengths(self, req: EmbedRequest, counts: list[int], prompt: str) -> list[int]:
        """Each document's body tokens: behind a prompt (which may join the first word), or where the model appends
        an EOS that a document may end with already (``appends_eos``), the runner's ``body_lengths`` (optional in
        `Runner`: a second tokenisation), else its ``counts`` less the tokens of an empty text."""
        exact = getattr(self.runner, "body_lengths", None) if prompt or getattr(self.runner, "appends_eos", False) else None
        if exact is None:
            bare = int(np.asarray((await self._tokenize(req, [""], prompt, None)).counts)[0])
            return [max(n - bare, 0) for n in counts]
        return await self._in_thread(req, lambda: exact(req.texts, prompt))

    async def _tokenize(self, req: EmbedRequest, texts: list[str], prompt: str, truncation: str | None) -> Any:
        """`Runner.tokenize`, off the event loop when large or when another thread holds the tokenizer (a large
        request, a worker's document: the loop, and every request with it, would wait for it); what it refuses
        (a prompt that leaves no room for the text) is the request's fault: the protocol's status, not a 500."""
        try:
            if sum(map(len, texts)) <= _BIG_REQUEST_CHARS:
                tokens = self._try_tokenize(texts, prompt, truncation)
                if tokens is not None:
                    return tokens
            return await asyncio.to_thread(self.runner.tokenize, texts, prompt, truncation)
        except Exception as err:
            raise self._refusal(req, err) from None

    def _refusal(self, req: EmbedRequest, err: Exception) -> Exception:
        """What the tokenisation raised, as the request's refusal (the protocol's status) when it is bad input,
        else as it is (a 500)."""
        if classify(err) != "bad_input":
            return err
        logger.info("a request's texts were refused by the tokenisation: %s", one_line(err))
        return self._error(req, one_line(err), "prompt_name" if req.prompt_name else req.protocol.texts)

    async def name_tokenless_input(self, req: EmbedRequest) -> None:
        """After a late-chunking request was refused in its pass: name an input that has no token (a
        zero-width space, say) rather than the library's "document 0: span [s, e] covers no token"."""
        counts = await asyncio.to_thread(self.runner.tokenize, ["", *req.texts], "", None)
        bare, *inputs = np.asarray(counts.counts).tolist()  # "": the special tokens alone
        index = next((k for k, count in enumerate(inputs) if count <= bare), None)
        if index is not None:
            raise self._error(req, f"'{req.input_name(index)}' ({req.texts[index]!r:.40}) has no token (the tokenizer "
                              "drops its characters); with late_chunking each input is a chunk of one document and "
                              "needs text", req.protocol.texts)  # fmt: skip

    def job(self, req: EmbedRequest, prepared: Prepared) -> Job:
        """The batcher's job: the inputs, or (whole documents) `Runner.embed_documents` on a few documents at
        a time. Late chunking embeds the inputs joined by a space as one document, each a chunk (Jina's)."""
        if req.token_vectors:  # /embed_all: a pass's worth of inputs at a time (`document_pass`), each an array
            vectors = self._part("token_vectors")

            def some(taken: list[int], _stop: Callable[[], bool]) -> list[np.ndarray]:
                out = vectors(prepared.tokens.select(taken))
                bad = next((k for k, rows in enumerate(out) if not np.isfinite(rows).all()), None)
                if bad is not None:
                    raise ModelOutputError(req.input_name(taken[bad]), index=taken[bad])
                return out

            return Job(prepared.lengths, run=some)
        if not req.whole_documents:  # dense rows are finished in the worker, a pass's alike ones in one call
            finish = None if self.runner.is_sparse else functools.partial(self.finish, request=prepared.request)
            return Job(prepared.lengths, prepared.tokens, finish=finish, finish_key=id(prepared.request))
        chunks, spans, chunking = req.chunks, req.spans, req.chunking
        if req.late_chunking:
            starts = np.cumsum([0] + [len(text) + 1 for text in req.texts[:-1]]).tolist()
            chunks, chunking = "spans", "late"
            spans = [[[start, start + len(text)] for start, text in zip(starts, req.texts, strict=True)]]
        s, texts, prompt, embed_documents = self.settings, prepared.texts, prepared.prompt, self._part("embed_documents")
        options = {"chunks": chunks, "chunking": chunking, "batch_size": s.batch_size,
                   "max_batch_tokens": s.max_batch_tokens}  # fmt: skip

        def run(taken: list[int], should_stop: Callable[[], bool]) -> Any:
            """The documents at these positions, named as sent in the library's messages ("document NAME: ..."),
            stopping when ``should_stop``."""
            some, names = None if spans is None else [spans[i] for i in taken], list(map(req.document_name, taken))
            return embed_documents([texts[i] for i in taken], prompt, spans=some, names=names, should_stop=should_stop,
                                   **options)  # fmt: skip

        return Job(prepared.lengths, run=run)

    def finish(self, rows: np.ndarray, request: EncodeRequest) -> np.ndarray:
        """Raw pooled rows → the answer: the request's (checked `EncodeRequest`'s) Matryoshka cut, normalisation,
        a sparse model's ``max_active_dims`` (after normalisation, as sentence-transformers keeps it) and precision.
        Row by row: rows of requests with the same options may be finished together; a sparse row may come
        compacted to its non-zeros (none of these steps reads a zero)."""
        return np.ascontiguousarray(request.codes(request.finish_rows(rows, self.runner)))

    def answer(self, job: Job, request: EncodeRequest) -> np.ndarray:
        """A job's rows as answered: finished by the worker (`Job.finish`), else finished here."""
        if job.finish is not None:
            return job.rows
        if job.run is not None:
            return self.finish(job.rows.vectors, request)
        dense = np.zeros((len(job.rows), self.runner.width), dtype=np.float32)
        for row, (indices, values) in zip(dense, job.rows, strict=True):
            row[indices] = values
        return self.finish(dense, request)


def joined(parts: list[tuple[list[int], Any]]) -> Any:
    """A whole-document job's parts, ``(positions, their ChunkEmbeddings)``, as one `ChunkEmbeddings` in
    document order (each document's chunks in their order, with their token counts when naive)."""
    doc = np.concatenate([np.asarray(taken, dtype=np.int64)[rows.doc] for taken, rows in parts])
    order = np.argsort(doc, kind="stable")
    names = ("chunk", "start", "end", "vectors", "tokens", "truncated")
    columns = {name: np.concatenate([getattr(rows, name) for _, rows in parts])[order]
               for name in names if getattr(parts[0][1], name) is not None}  # fmt: skip
    return replace(parts[0][1], doc=doc[order], **columns)


def in_input_order(parts: list[tuple[list[int], list[Any]]], count: int) -> list[Any]:
    """A job's parts, ``(positions, one result per position)``, as one list of ``count`` results in input order."""
    out: list[Any] = [None] * count
    for taken, results in parts:
        for position, result in zip(taken, results, strict=True):
            out[position] = result
    return out


def packed(rows: np.ndarray, req: EmbedRequest) -> Any:
    """Rows as JSON values: float lists, or base64 of their little-endian bytes for ``encoding_format: base64``
    and for every compact precision (codes are always sent packed)."""
    if req.encoding_format != "base64" and req.precision == "float32":
        return rows
    little = rows.astype(rows.dtype.newbyteorder("<"), copy=False)
    return [base64.b64encode(row.tobytes()).decode() for row in little]


@dataclass
class Service:
    """Everything one running server shares: its models, settings and metrics, the drain state."""

    runners: Runner | Mapping[str, Runner]
    settings: ServeSettings = field(default_factory=ServeSettings)
    metrics: Metrics = field(default_factory=Metrics)
    draining: bool = False
    drain_deadline: float | None = None  # (time.monotonic) when the drain began, plus --drain-timeout
    in_flight: int = 0
    started: int = field(default_factory=lambda: int(time.time()))
    # one future per request waiting for its model (`run` says what it is set to)
    _waiting: set[asyncio.Future[bool | None]] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        s = self.settings
        given = list(self.runners.items()) if isinstance(self.runners, Mapping) else [(None, self.runners)]
        s.check_keyed(isinstance(self.runners, Mapping))
        for key, runner in given:  # (before any part of one is read)
            check_runner(runner, key)
        if isinstance(self.runners, Mapping):
            named = [((name,), runner) for name, runner in given]
            if not named:  # every request would fail (500) while /health said 200
                raise OptionError("no model to serve: the mapping of model names to runners is empty")
        else:
            named = [(s.served_model_names or (self.runners.name,), self.runners)]
        share_cpus([runner for _, runner in named])  # before the batchers count their workers
        self.models = [Model(runner, names, s, self.metrics) for names, runner in named]
        self.by_name: dict[str, Model] = {}
        for model in self.models:
            for name in model.names:
                if not (isinstance(name, str) and name.strip()):  # (a mapping's key, a runner's name)
                    raise OptionError(f"a served model name must be a non-empty string, got {name!r}")
                if self.by_name.setdefault(name, model) is not model:
                    raise OptionError(f"two models are served as {name!r}")

    @property
    def names(self) -> list[str]:
        return list(self.by_name)

    def begin_drain(self) -> None:
        """Answer new embedding requests with 503 from now on; queued and running ones still finish, until
        `drain_deadline` (set once, at the first call: the one bound of the whole drain)."""
        self.draining = True
        if self.drain_deadline is None:
            self.drain_deadline = time.monotonic() + self.settings.drain_timeout

    def drain_left(self) -> float:
        """Seconds left of the drain (`drain_deadline`), 0 once it has passed; the whole timeout before a drain."""
        if self.drain_deadline is None:
            return self.settings.drain_timeout
        return max(0.0, self.drain_deadline - time.monotonic())

    def expire(self) -> None:
        """The drain timeout has passed: every request still waiting for a model is answered 503 now, not cut
        off without an answer when the server stops."""
        for future in self._waiting:
            _settle(future, False)

    @property
    def idle(self) -> bool:
        return self.in_flight == 0 and all(model.batcher.pending == 0 for model in self.models)

    def model_for(self, name: str | None, *, sparse: bool | None = None) -> Model:
        """The model a request names. With one model and no --strict-model-name any name (or none) is that
        model, as TEI does, else an unknown name is a 404; ``sparse``: the default is the first such one."""
        if name in self.by_name:
            return self.by_name[name]  # type: ignore[index]
        if name is None or (len(self.models) == 1 and not self.settings.strict_model_name):
            kind = [m for m in self.models if sparse is None or m.runner.is_sparse == sparse]
            return (kind or self.models)[0]
        raise ApiError(404, f"The model {name!r:.200} does not exist on this server; it serves "
                       f"{', '.join(self.by_name)}", kind="model_not_found", param="model", code="model_not_found")  # fmt: skip

    async def body(self, request: Request) -> dict[str, Any]:
        """The body as a JSON object, bounded in bytes and time."""
        return await read_json(request, self.settings.max_body_bytes, self.settings.read_timeout)

    async def request(self, request: Request, protocol: Protocol, fields: Sequence[str]) -> EmbedRequest:
        """The body (`body`) checked field by field for an endpoint (`parse`)."""
        return await self.parse(await self.body(request), protocol, fields)

    async def parse(self, data: dict[str, Any], protocol: Protocol, fields: Sequence[str]) -> EmbedRequest:
        """`fields.parse`, off the event loop when the inputs hold token ids, first or after texts (each id is
        checked, and a body may hold millions)."""
        inputs = data.get(protocol.texts)
        if isinstance(inputs, list) and not all(isinstance(item, str) for item in inputs):
            return await asyncio.to_thread(parse, data, protocol, fields)
        return parse(data, protocol, fields)

    async def run(self, request: Request, model: Model, job: Job, bad_input: int = 400) -> Job:
        """Queue a job on ``model``'s batcher and wait for it (its inputs dropped if the client goes away
        first); a job that failed on its input answers ``bad_input``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool | None] = loop.create_future()  # True: done; False: `expire`d; None: client gone
        job.deliver = lambda _job: loop.call_soon_threadsafe(_settle, future, True)
        if not model.batcher.started:  # queued, it would wait for ever for a worker that never comes
            raise ApiError(503, f"the model worker of {model.name} has not started: the ASGI server did not run this "
                           "app's lifespan startup, which starts it (uvicorn runs it unless --lifespan off; an app "
                           "mounted in another gets none: run it with start_server or serve_forever)",
                           kind="internal")  # fmt: skip
        if self.draining and self.drain_left() <= 0:  # (`expire` answered those waiting at the deadline)
            raise draining_error(stopped=True)
        try:
            model.batcher.submit(job)
        except QueueFull as err:
            raise ApiError(429, f"the server is busy ({err}); retry after {err.retry_after} s", kind="queue_full",
                           code="rate_limit_exceeded", headers={"Retry-After": str(err.retry_after)}) from None  # fmt: skip
        except Draining:
            if model.batcher.failure is not None:  # not a drain: the worker stopped, and no retry will help
                raise ApiError(503, f"the model worker of {model.name} has stopped (the server log has the details); "
                               "this server cannot embed until it is restarted", kind="internal") from None  # fmt: skip
            raise draining_error() from None
        gone = loop.create_task(wait_disconnect(request.receive))
        gone.add_done_callback(lambda _gone: _settle(future, None))
        self._waiting.add(future)
        outcome = None
        try:
            outcome = await future
        finally:
            self._waiting.discard(future)
            if not outcome:
                dropped = model.batcher.cancel(job)
                logger.info("client went away or drain timeout: dropped %d of its %d queued inputs", dropped,
                            len(job.lengths))  # fmt: skip
            gone.cancel()
        if outcome is None:
            raise ApiError(499, "the client closed the connection", kind="client_disconnected")
        if not outcome:
            raise draining_error(stopped=True)
        if job.error is not None:
            if classify(job.error) == "bad_input":  # e.g. a prompt that leaves no room for the text
                raise ApiError(bad_input, one_line(job.error))
            logger.error("the model failed on a request: %r", job.error)
            raise ApiError(500, "the model failed on this request (the server log has the details)", kind="internal")
        return job

    async def embed(self, request: Request, req: EmbedRequest,
                    model: Model | None = None) -> tuple[Model, Prepared, Job]:  # fmt: skip
        """A checked request through ``model`` (None: the dense one it names, `model_for`): (the model,
        prepared inputs, finished job)."""
        model = model or self.model_for(req.model, sparse=False)
        prepared = await model.prepare(req)
        try:
            job = await self.run(request, model, model.job(req, prepared), req.protocol.status)
        except ApiError as err:
            if req.late_chunking and err.status == req.protocol.status:  # refused by the model's pass
                await model.name_tokenless_input(req)
            raise
        if req.token_vectors:
            job.rows = in_input_order(job.rows, len(prepared.lengths))
        elif job.run is not None:
            rows = job.rows = joined(job.rows)
            if rows.tokens is not None:  # naive chunks: the tokens their texts were embedded from, and cut
                prepared = replace(prepared, used=int(rows.tokens.sum()), truncated=int(rows.truncated.sum()))
        if prepared.truncated:
            model.metrics.truncated(prepared.truncated)
        return model, prepared, job


def _settle(future: asyncio.Future[bool | None], outcome: bool | None) -> None:
    if not future.done():
        future.set_result(outcome)
