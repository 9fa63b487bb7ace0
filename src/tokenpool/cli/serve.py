"""``tokenpool serve``: serve a model folder over HTTP (OpenAI and TEI endpoints, dynamic batching); the
server (`tokenpool.serve`) and the model load only when the command runs."""

from __future__ import annotations

import argparse
import os
import re
from typing import Any, NoReturn

from ..errors import OptionError, refuse_empty_model
from ..model.options import EncoderOptions, spelled_as
from ..serve.settings import HOST, LOG_LEVEL, LOG_LEVELS, PORT, ServeSettings
from . import common

__all__ = ["add_parser", "run_serve"]

API_KEY_ENV = "TOKENPOOL_API_KEY"
MODELS_HELP = (
    "model folder or Hub id (default: the bundled all-MiniLM-L6-v2); repeat as NAME=FOLDER_OR_HUB_ID[,OPTION=VALUE"
    "...] to serve several models, each with its own options (e.g. --model sparse=./splade,pooling=splade "
    "--model dense=./e5,prompt-name=query,dim=256); an option not given is the command line's"
)

# the routes `serve.app.ROUTES` marks public, as --api-key's help names them (not imported: the server loads only
# when the command runs; test_serve_s45 checks that they agree)
PUBLIC_PATHS = "/health, /ping and /"

# the numeric ServeSettings fields as flags: (group, flag, kind, metavar, help); each default is the field's own,
# filled in where the help says "{}"
NUMBERS = (
    ("batching", "--max-batch-tokens", "count", "N", "padded tokens one forward pass may compute (default: {})"),
    ("batching", "--max-batch-requests", "count", "N",
     "requests one forward pass may combine; 1 turns dynamic batching off (default: {})"),
    ("batching", "--max-wait-ms", "seconds", "MS", "how long a pass waits for more requests when it is not full (default: {})"),
    ("batching", "--max-wait-busy-ms", "seconds", "MS", "the same wait while the requests a pass has just "
     "answered have not come back: passes fill under many clients, and a lone client never waits it (default: {})"),
    ("batching", "--workers", "count", "N", "forward passes run at once, each on its share of the torch "
     "threads (default: 2 for torch on a CPU with 2+ threads: one pass computes while the other does its Python work; "
     "else 1)"),
    ("batching", "--max-queue", "count", "N", "inputs that may wait; beyond it requests get 429 with Retry-After (default: {})"),
    ("limits", "--max-inputs", "count", "N", "inputs per request (default: {}, as OpenAI)"),
    ("limits", "--max-input-chars", "count", "N", "characters per input (default: {})"),
    ("limits", "--max-document-chars", "count", "N",
     "characters per whole document (late_chunking, /embed_documents, long_documents windows; default: {})"),
    ("limits", "--max-chunks", "count", "N",
     "chunk vectors one request may produce (/embed_documents, late_chunking); beyond it 413 (default: {})"),
    ("limits", "--max-body-bytes", "count", "N", "request body size in bytes (default: {})"),
    ("limits", "--read-timeout", "seconds", "S", "a request's headers, then its body, must each arrive within S "
     "seconds; connections that send nothing are closed after S (default: {})"),
    ("limits", "--drain-timeout", "seconds", "S", "on SIGTERM, wait at most this long for running requests (default: {})"),
)  # fmt: skip


def _add_model_options(parser: argparse.ArgumentParser, models_help: str | None = None) -> None:
    """The options of one served model: pooling, the model group, --calibration (for the command and for each
    --model NAME=...,OPTION=VALUE list)."""
    common.add_encoder_options(parser.add_argument_group("pooling"), common.POOLING_OPTIONS)
    common.add_model_group(parser, batch_size=ServeSettings().batch_size, max_batch_tokens=False, models_help=models_help)
    parser.add_argument("--calibration", metavar="FILE", help="calibration JSON (OUT.calibration.json "
                        "of tokenpool embed --precision int8, or Encoder.calibrate) for requests with precision "
                        "int8/uint8")  # fmt: skip


def add_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve", help="serve embeddings over HTTP (OpenAI /v1/embeddings, TEI /embed), with dynamic batching",
        description="Serve a model folder over HTTP: OpenAI-compatible POST /v1/embeddings and GET /v1/models "
        "(also without /v1, as infinity serves them), TEI-compatible POST /embed, /embed_sparse, /embed_all, /similarity, "
        "/tokenize, /decode, / (TEI's compatibility route), GET /info, /health, /ping, /, tokenpool's POST "
        "/embed_documents (chunk vectors), and GET /metrics (Prometheus). Requests from many clients are batched "
        "together. SIGTERM drains: running requests finish, new ones get 503, then the server exits 0.",
    )  # fmt: skip
    _add_model_options(serve, models_help=MODELS_HELP)
    server = serve.add_argument_group("server")
    defaults = ServeSettings()
    server.add_argument("--host", default=HOST,
                        help=f"address to listen on (default: {HOST}, this machine only)")  # fmt: skip
    server.add_argument("--port", type=common.int_in("a port number (0-65535)", 0, 65535), default=PORT,
                        help=f"TCP port (default: {PORT}; 0 picks a free one)")  # fmt: skip
    server.add_argument("--served-model-name", dest="served_model_names", action="append", metavar="NAME",
                        type=common.utf8_text, help="model id clients send "
                        "as 'model' (repeat for aliases; default: the folder's name, its parent's for a folder "
                        "named 'model', a Hub id's org/name)")  # fmt: skip
    server.add_argument("--strict-model-name", action="store_true", default=defaults.strict_model_name,
                        help="answer 404 to a 'model' the server does not serve, as OpenAI does (default: with "
                        "one model, any name is that model and the response says which answered)")  # fmt: skip
    server.add_argument("--auto-truncate", action="store_true", default=defaults.auto_truncate, help="TEI routes "
                        "cut an input over the model's window unless its request sends \"truncate\": false, as TEI "
                        "does by default since v1.9 (default: refused, 413, unless the request sends \"truncate\": "
                        "true)")  # fmt: skip
    server.add_argument("--api-key", metavar="KEY", default=defaults.api_key, help="require 'Authorization: Bearer "
                        f"KEY' on every endpoint but the health checks (GET {PUBLIC_PATHS}; default: ${API_KEY_ENV})")  # fmt: skip
    server.add_argument("--log-level", choices=LOG_LEVELS, default=LOG_LEVEL, help=f"(default: {LOG_LEVEL})")
    groups = {name: serve.add_argument_group(name) for name in ("batching", "limits")}
    kinds = {"count": common.positive_int, "seconds": common.non_negative_number}
    for group, flag, kind, metavar, text in NUMBERS:
        default = getattr(defaults, flag[2:].replace("-", "_"))
        groups[group].add_argument(flag, type=kinds[kind], default=default, metavar=metavar,
                                   help=text.format(f"{default:g}" if isinstance(default, float) else default))  # fmt: skip
    serve.set_defaults(func=run_serve)


def _check_installed() -> None:
    missing = []
    for module in ("starlette", "uvicorn", "httptools", "prometheus_client", "orjson"):  # (httptools: uvicorn[standard])
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(f"tokenpool serve needs {', '.join(missing)}: pip install 'tokenpool[serve]'")


def settings_from(args: argparse.Namespace) -> Any:
    """The `ServeSettings` the command-line options describe (ValueError for inconsistent ones)."""
    given = args.api_key is not None
    key = args.api_key if given else os.environ.get(API_KEY_ENV)
    if key == "":  # `--api-key "$KEY"` (or TOKENPOOL_API_KEY=$KEY) with KEY unset: serving without a key was not asked
        source, instead = ("--api-key", "leave the option out") if given else (API_KEY_ENV, f"unset {API_KEY_ENV}")
        raise OptionError(f"{source} is empty; give the key clients must send (or {instead})")
    numbers = {name: getattr(args, name) for name in (flag[2:].replace("-", "_") for _, flag, *_ in NUMBERS)}
    with spelled_as({} if given else {"api_key": API_KEY_ENV}):  # (a key from the environment: named so)
        return ServeSettings(api_key=key, served_model_names=tuple(args.served_model_names or ()),
                             strict_model_name=args.strict_model_name, auto_truncate=args.auto_truncate,
                             batch_size=args.batch_size, **numbers)  # fmt: skip


class _SpecParser(common.Parser):
    """The parser of one ``--model NAME=FOLDER,OPTION=VALUE...``: a refusal names that --model option and the
    OPTION as written (``keys``: flag → OPTION), not a flag the user did not type."""

    def __init__(self, spec: str, keys: dict[str, str]) -> None:
        super().__init__(prog="tokenpool serve", add_help=False)
        self.spec, self.keys = spec, keys

    def error(self, message: str) -> NoReturn:
        said = re.sub(r"argument (--[\w-]+)(/--[\w-]+)?", lambda found: self.keys.get(found[1], found[0]), message)
        super().error(f"--model {self.spec!r}: {said}")


def _flags_of(spec: str, pairs: list[str]) -> tuple[list[str], dict[str, str]]:
    """The OPTION=VALUE pairs of ``--model spec`` as the command line's flags, one per pair (true / false: the
    switch or its ``--no-`` form) → (those flags, each flag given → the OPTION as written, for messages)."""
    argv, keys = [], {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        flag = "--" + key.strip().replace("_", "-")
        keys[flag] = key.strip()
        if not sep or flag in ("--model", "--batch-size", "--help"):
            raise OptionError(f"--model {spec!r}: {pair!r} is not OPTION=VALUE of a model option")
        if value.lower() in ("true", "false"):
            argv.append(flag if value.lower() == "true" else "--no-" + flag[2:])
        else:  # one token: a switch given another value is named ("ignored explicit argument 'maybe'")
            argv.append(f"{flag}={value}")
    return argv, keys


def _model_specs(args: argparse.Namespace) -> list[tuple[str | None, argparse.Namespace]]:
    """(name or None, options) per --model: NAME=FOLDER[,OPTION=VALUE...] names a model and gives it its own
    options, parsed by the same flags as the command line (whose values are the defaults)."""
    out = []
    for spec in args.model or [None]:
        name, _, rest = (spec or "").partition("=")  # (NAME may hold "/": "org/model", as OpenAI clients send)
        if not rest or name.startswith((".", "/", "~")) or os.path.exists(spec):  # a path holding "="
            out.append((None, argparse.Namespace(**{**vars(args), "model": spec, "spelled": {}})))
            continue
        if not name:  # "=FOLDER" would serve a model clients must call ""
            raise OptionError(f"--model {spec!r}: the model NAME is empty; give --model NAME=FOLDER_OR_HUB_ID")
        try:  # (a name that is not UTF-8 cannot be written in a JSON response: every request would get 500)
            common.utf8_text(name)
        except argparse.ArgumentTypeError as err:
            raise OptionError(f"--model {spec!r}: the model NAME: {err}") from None
        folder, comma, listed = rest.partition(",")  # a comma ends a value only before OPTION=: a prompt may hold commas
        pairs = re.split(r",(?=\s*[\w-]+=)", listed) if comma else []
        argv, keys = _flags_of(spec, pairs)
        # full names only: an abbreviation (batch=3, mod=X) would slip past the refusals in `_flags_of`
        parser = _SpecParser(spec, keys)
        _add_model_options(parser)
        options, unknown = parser.parse_known_args(argv, argparse.Namespace(**{**vars(args), "model": folder}))
        if unknown:  # named as the list wrote them (precision=int8), not as the flags they became (--precision=int8)
            named = ", ".join(pair.strip() for pair, flag in zip(pairs, argv, strict=True) if flag in unknown)
            parser.error(f"unrecognized arguments: {named} (OPTION must be a model option of tokenpool serve)")
        keys.setdefault("--runtime", "runtime")  # (its runtime is the list's to fix, not the command line's)
        options.spelled = {dest: f"--model {name}=...,{keys[flag]}" for dest, flag in parser.flags().items()
                           if flag in keys}  # fmt: skip
        given = {item.partition("=")[0] for item in argv}
        if "--prompt" in given:  # the model's own prompt, of either kind, replaces the command line's
            options.prompt_name = None
        elif "--prompt-name" in given:
            options.prompt = None
        out.append((name, options))
    if len(out) > 1 and any(name is None for name, _ in out):
        raise OptionError("several --model options each need a name: --model NAME=FOLDER_OR_HUB_ID")
    names = [name for name, _ in out]
    twice = next((name for k, name in enumerate(names) if name in names[:k]), None)
    if twice is not None:  # the models are keyed by name: the first one would be dropped without a word
        raise OptionError(f"two --model options are named {twice!r}; each served model needs its own name")
    return out


def _runner(options: argparse.Namespace, name: str | None, settings: Any) -> Any:
    """Load one model as a server runner (its prompt, calibration and window checked)."""
    from ..core.quantize import Calibration
    from ..model.request import EncodeRequest
    from ..serve.runner import EncoderRunner

    with spelled_as(options.spelled):  # (a --model NAME=... option named as written there)
        encoder = common.build_encoder(EncoderOptions.from_mapping(options))
        EncodeRequest(caller="cli").check_encoder(encoder)  # what every encode would refuse (--dim on a SPLADE model)
        prompt = common.prompt_text(options, encoder)
    if settings.max_batch_tokens < encoder.max_length:
        raise OptionError(f"--max-batch-tokens {settings.max_batch_tokens} is below the model's window of "
                          f"{encoder.max_length} tokens: one long input would not fit a forward pass")
    calibration = None if options.calibration is None else Calibration.load(options.calibration)
    return EncoderRunner(encoder, name=name, default_prompt=prompt, calibration=calibration)


def run_serve(args: argparse.Namespace) -> int:
    """Load the models, bind the port, serve until SIGTERM; every setup problem is raised before serving."""
    _check_installed()
    specs = _model_specs(args)
    for _, options in specs:
        refuse_empty_model(options.model)
        with spelled_as(options.spelled):  # a bad pooling, runtime, size...: refused before anything loads
            EncoderOptions.from_mapping(options).check()
    settings = settings_from(args)
    settings.check_keyed(any(name is not None for name, _ in specs))  # before any model loads
    from ..serve.server import bind, serve_forever

    sock = bind(args.host, args.port)  # before loading the model: a taken port fails fast
    try:
        runners = {name: _runner(options, name, settings) for name, options in specs}
    except BaseException:
        sock.close()
        raise
    served = runners.get(None, runners)
    with spelled_as(None):  # (what a request is told names its JSON fields, not this command's flags)
        return serve_forever(served, settings, host=args.host, port=args.port, log_level=args.log_level, sock=sock)
