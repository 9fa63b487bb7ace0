"""Runners, the seam between tokenised batches and a model runtime: a `Runner` turns padded ids and a mask
(numpy) into token outputs (hidden states, or MLM logits for sparse models) as arrays of its own library;
`TorchRunner` runs a transformers model with torch, other runtimes implement the same few members."""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError, ModelFolderError, OptionError, one_line, require
from . import unpadded
from .folders import (
    SENTENCEPIECE_FILES,
    TOKENIZER_FILES,
    WEIGHT_FILES,
    check_files,
    in_hub_cache,
    onnx_weights_only,
)
from .options import DTYPE_NAMES, check_dtype, device_parts, parse_device, spell
from .safety import (
    check_bool_option,
    check_no_remote_code,
    check_regular_files,
    pickle_refusal,
    read_json_object,
)

# a config's position-table size under its family's name (BERT-likes, GPT-2, MPT), read by both runtimes
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len")
# families with relative positions and no table, whose config.json may still carry a stale n_positions (t5-base's 512)
RELATIVE_POSITION_TYPES = frozenset({"t5", "mt5", "umt5", "longt5", "switch_transformers"})

logger = logging.getLogger(__name__)

__all__ = [
    "Runner", "Runtime", "TORCH_RUNTIME", "TorchRunner", "load_config_and_tokenizer", "text_config",
    "resolve_device", "resolve_dtype", "forward_options", "set_torch_threads", "transformers_config",
]  # fmt: skip


def position_keys(model_type: Any) -> tuple[str, ...]:
    """The config keys that may hold ``model_type``'s position-table size (none for a relative-position family)."""
    return () if model_type in RELATIVE_POSITION_TYPES else POSITION_KEYS


@runtime_checkable
class Runner(Protocol):
    """What the Encoder needs from a model runtime."""

    device: str
    dtype: Any
    sparse: bool  # True: outputs are MLM logits (b×L×V), else hidden states (b×L×D)

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[Any, Any]:
        """(token outputs b×L×W, attention mask b×L) as arrays of the runner's library, on its device."""

    def inference(self) -> contextlib.AbstractContextManager[Any]:
        """A context in which pooling the outputs records no gradients."""

    def to_float32_numpy(self, array: Any) -> np.ndarray:
        """A host float32 numpy copy of an output of this runner's library (e.g. pooled vectors)."""


@dataclass(frozen=True)
class Runtime:
    """One model runtime of `tokenpool.model.runtimes.RUNTIMES`: its config and tokenizer reader (cheap,
    before any weights), its `Runner` factory, and what it cannot run (None: it can)."""

    name: str
    open: Callable[[Path, Any], tuple[Any, Any]]
    runner: Callable[[Path, Any, Any, bool], Runner]
    no_sparse: str | None = None  # why it cannot give MLM logits (SPLADE models)
    no_post_modules: str | None = None  # why it cannot run Dense / LayerNorm modules after pooling

    def check(self, *, sparse: bool, post_modules: bool, folder: Path) -> None:
        """`OptionError` when the folder needs what this runtime cannot run; `ModelFolderError` for a SPLADE folder of
        ONNX weights only, which no runtime runs (but a Hub snapshot, for the runtime that needs no torch weights)."""
        if sparse and (file := onnx_weights_only(folder)) and not (self.no_sparse and in_hub_cache(folder)):
            raise ModelFolderError(
                f"no runtime can run {folder}: splade pooling needs the MLM logits of torch weights (one of "
                f"{', '.join(WEIGHT_FILES)}), and it has only ONNX weights ({file}), which give none"
            )
        if sparse and self.no_sparse:
            raise OptionError(
                f"splade pooling is not supported by the {self.name} runtime ({self.no_sparse}): use {spell('runtime', 'torch')}"
            )
        if post_modules and self.no_post_modules:
            raise OptionError(
                f"{folder} has Dense/LayerNorm modules after pooling, which the {self.name} runtime does not run "
                f"({self.no_post_modules}): use {spell('runtime', 'torch')}"
            )


def load_config_and_tokenizer(folder: Path, *, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """The transformers model config and tokenizer of ``folder`` (cheap: read before any weights).
    ``auto_map`` is refused unless ``trust_remote_code``, which transformers always gets (no stdin prompt)."""
    import transformers

    trust = check_bool_option("trust_remote_code", trust_remote_code)
    check_no_remote_code(folder, trust)
    read_json_object(folder / "special_tokens_map.json")  # (a pipe there: transformers reads no file, the onnx runtime refuses)
    try:
        with quiet_transformers():
            model_config, tokenizer = (
                auto.from_pretrained(folder, local_files_only=True, trust_remote_code=trust)
                for auto in (transformers.AutoConfig, transformers.AutoTokenizer)
            )
    except OSError as err:
        raise FileNotFoundError(f"cannot load the config or tokenizer in {folder}: {one_line(err)}") from None
    except (ImportError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - transformers/tokenizers raise many types for a malformed file
        spm = [name for name in SENTENCEPIECE_FILES if (folder / name).is_file()]
        if spm and not (folder / "tokenizer.json").is_file():  # (without it, transformers' fallback: a parse error)
            require("sentencepiece", f"{folder}'s tokenizer ({spm[0]}) needs sentencepiece: pip install sentencepiece")
        raise ConfigError(f"cannot load the config or tokenizer in {folder}: {one_line(err)[:300]}") from None
    return model_config, tokenizer


# while `quiet_transformers` blocks run (in one thread or several): how many, and the caller's transformers
# level and progress bars from before the first, restored when the last ends (not by one ending meanwhile)
_QUIET_LOCK = threading.Lock()
_QUIET: dict[str, Any] = {"blocks": 0}


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' own warnings (multi-line load reports) off while a folder loads; tokenpool logs a summary.
    The caller's level (NOTSET too: following the root logger's) and bars are back when the last block ends."""
    from transformers.utils import logging as hf_logging  # (its callers have imported transformers)

    library = logging.getLogger("transformers")  # (the logger transformers' verbosity is the level of)
    with _QUIET_LOCK:
        if _QUIET["blocks"] == 0:
            hf_logging.get_verbosity()  # (transformers sets its default level on first use)
            _QUIET.update(level=library.level, bars=hf_logging.is_progress_bar_enabled())
        _QUIET["blocks"] += 1
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET["blocks"] -= 1
            if _QUIET["blocks"] == 0:
                library.setLevel(_QUIET["level"])
                if _QUIET["bars"]:
                    hf_logging.enable_progress_bar()


def text_config(model_config: Any) -> Any:
    """The text part of a (possibly multimodal) transformers config."""
    return model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config


class TorchRunner:
    """A transformers model on a torch device (``AutoModel``, or ``AutoModelForMaskedLM`` for sparse
    models); ``device`` and ``dtype`` come from `resolve_device` / `resolve_dtype` (checked before load)."""

    def __init__(
        self, folder: Path, model_config: Any, *, sparse: bool, device: str, dtype: Any,
        trust_remote_code: bool = False,
    ) -> None:  # fmt: skip
        import torch

        self.sparse = sparse
        self.device: str = device
        self.model, _ = load_weights(
            folder, model_config, sparse=sparse, dtype=dtype, trust_remote_code=trust_remote_code
        )
        self.model.eval().to(self.device)
        self._forward_options = forward_options(self.model)
        self.unpadded = unpadded.enable(self.model)  # padded batches run on their real tokens only
        self._column_positions = unpadded.column_positions(self.model)  # left padding would shift its positions
        self.dtype: torch.dtype = self.model.dtype
        self._caller_threads = 1  # the caller's torch threads, read with `parallel_passes` (in the caller's thread)
        # side-by-side passes need a thread count per calling thread: OpenMP's (torch's CPU wheels), not TBB's
        openmp = "parallel backend: OpenMP" in torch.__config__.parallel_info()
        self._own_thread_counts = device_parts(device)[0] == "cpu" and openmp  # ("cpu:0" too)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """An unpickled runner (an Encoder sent to a worker process): tokenpool's attention registered again
        in this process, where the model's config names it (`unpadded.enable`)."""
        self.__dict__.update(state)
        if self.unpadded:
            self.unpadded = unpadded.enable(self.model)

    @property
    def parallel_passes(self) -> int:
        """Passes `batching.run_passes` may run at once: 2 on a CPU with 2+ torch threads (OpenMP), else 1;
        read in the calling thread, whose threads the passes share (STS-B, 2 cores: 1.09x the texts/s)."""
        if not self._own_thread_counts:
            return 1
        import torch

        self._caller_threads = torch.get_num_threads()
        return 2 if self._caller_threads >= 2 else 1

    def pass_forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[Any, Any]:
        """`forward` as one of `parallel_passes` concurrent passes, on its share of the caller's threads. torch's
        OpenMP count belongs to the calling thread, but torch also keeps the last count set for threads that
        start later: it is set back to the caller's when the pass ends."""
        set_torch_threads(max(1, self._caller_threads // 2))
        try:
            return self.forward(input_ids, attention_mask)
        finally:
            set_torch_threads(self._caller_threads)

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[Any, Any]:
        import torch

        mask = torch.from_numpy(attention_mask).to(self.device)
        if self.model.training:  # (a caller's training loop set it: no dropout here, as sentence-transformers' encode)
            self.model.eval()
        with torch.inference_mode():
            if self.unpadded and unpadded.worth_it(attention_mask):  # (it moves only the real tokens' ids)
                return unpadded.forward(self.model, input_ids, attention_mask, self._forward_options, logits=self.sparse), mask
            ids = torch.from_numpy(input_ids).to(self.device)
            positions = self._positions(attention_mask)  # (left padding only)
            output = self.model(input_ids=ids, attention_mask=mask, **positions, **self._forward_options)
        return (output.logits if self.sparse else output[0]), mask

    def _positions(self, attention_mask: np.ndarray) -> dict[str, Any]:
        """``position_ids`` counted from each row's first real token for a left-padded batch of a model that
        numbers tokens by column (`unpadded.column_positions`); nothing otherwise."""
        if not (self._column_positions and unpadded.left_padded(attention_mask)):
            return {}
        import torch

        return {"position_ids": torch.from_numpy(unpadded.counted_positions(attention_mask)).to(self.device)}

    def inference(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        return torch.inference_mode()

    def to_float32_numpy(self, array: Any) -> np.ndarray:
        import torch

        return array.to(device="cpu", dtype=torch.float32).numpy()


def transformers_config(data: dict[str, Any]) -> Any:
    """The text config transformers builds from config.json's ``data``, whose sizes (hidden_size, vocab_size,
    position limit) are its defaults where none is saved, or a key it maps to one (Bloom's n_embed, T5Gemma2's
    nested ones); None without transformers or for a config it does not build (no width saved: refused).
    transformers imports torch (where installed) to build it; its log lines are quieted as on torch's
    runtime."""
    try:
        from transformers import AutoConfig
    except ImportError:
        return None
    try:
        options = {name: value for name, value in data.items() if name != "model_type"}
        with quiet_transformers():
            return text_config(AutoConfig.for_model(str(data.get("model_type")), **options))
    except Exception:  # (an unknown model_type, or a value its config class refuses: the torch runtime refuses it)
        return None


def set_torch_threads(threads: int) -> None:
    """The calling thread's torch (OpenMP) thread count, for all it runs next. torch sets a thread's count from
    the last one set by any thread at the thread's first use of torch, so that first use happens here, before
    the count is set, and not in the middle of the caller's next pass."""
    import torch

    torch.get_num_threads()
    torch.set_num_threads(threads)


# encoder-decoder families whose embedding models run the encoder alone, as sentence-transformers 6.3 loads
# (and saves) them (sentence-T5, GTR): AutoModel would build the whole seq2seq model, which asks for decoder inputs.
# model_type -> (the encoder's class, whether its config must say is_encoder_decoder=false, as sentence-transformers
# sets it for T5Gemma, whose encoder class refuses a whole checkpoint's config otherwise)
_ENCODER_ONLY = {
    "t5": ("T5EncoderModel", False), "mt5": ("MT5EncoderModel", False), "umt5": ("UMT5EncoderModel", False),
    "longt5": ("LongT5EncoderModel", False), "switch_transformers": ("SwitchTransformersEncoderModel", False),
    "prophetnet": ("ProphetNetEncoder", False), "blenderbot": ("BlenderbotEncoder", False),
    "blenderbot-small": ("BlenderbotSmallEncoder", False), "m2m_100": ("M2M100Encoder", False),
    "pegasus": ("PegasusEncoder", False), "pegasus_x": ("PegasusXEncoder", False), "marian": ("MarianEncoder", False),
    "t5gemma": ("T5GemmaEncoderModel", True),
}  # fmt: skip
# composite encoder-decoders whose encoder class takes the config's ``encoder`` and none of a whole checkpoint's
# tensor names (``encoder.*``, ``model.encoder.*``): the whole model loads, and its encoder alone runs
_WHOLE_THEN_ENCODER = frozenset({"t5gemma2"})


def _model_class(model_type: Any, sparse: bool) -> tuple[Any, bool]:
    """The transformers class that loads a folder of ``model_type`` — its encoder alone (`_ENCODER_ONLY`, from
    its modeling module, where some are not exported), else the MLM or the base model — and its table flag."""
    import transformers

    if sparse or model_type not in _ENCODER_ONLY:
        return (transformers.AutoModelForMaskedLM if sparse else transformers.AutoModel), False
    package, (name, encoder_only_config) = model_type.replace("-", "_"), _ENCODER_ONLY[model_type]
    return getattr(importlib.import_module(f"transformers.models.{package}.modeling_{package}"), name), encoder_only_config


def load_weights(
    folder: Path, model_config: Any, *, sparse: bool, dtype: Any, trust_remote_code: bool, **options: Any
) -> tuple[Any, Any]:
    """(the transformers model, its loading report); every failure to read the weights in one line, and weights
    that lack a tensor or hold one in another shape refused (`_check_loaded`). Code from the folder runs only
    with ``trust_remote_code`` (``auto_map`` refused otherwise, no stdin prompt); pickled weights load as
    tensors only. ``options`` go to ``from_pretrained``."""
    trust = check_bool_option("trust_remote_code", trust_remote_code)
    check_no_remote_code(folder, trust)
    import transformers

    dtype_key = "dtype" if unpadded.transformers_major() >= 5 else "torch_dtype"
    try:
        with quiet_transformers():
            if model_config is None:  # (the ONNX export) read as `from_pretrained` would: its type picks the class
                model_config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True,
                                                                       trust_remote_code=trust)  # fmt: skip
            model_class, encoder_only_config = _model_class(getattr(model_config, "model_type", None), sparse)
            if encoder_only_config:
                model_config.is_encoder_decoder = False
            model, loading = model_class.from_pretrained(
                folder,
                config=model_config,
                local_files_only=True,
                output_loading_info=True,
                ignore_mismatched_sizes=True,  # (refused below, naming the tensors, rather than by a silenced report)
                trust_remote_code=trust,
                weights_only=True,  # pickled weights: tensors only, never arbitrary objects
                **{dtype_key: dtype},
                **options,
            )
    except Exception as err:  # noqa: BLE001 - every failure to read the weights is reported in one line
        refusal = pickle_refusal(folder, err)
        if refusal is not None:
            raise refusal from None
        if isinstance(err, (OSError, ValueError, TypeError, KeyError)) or "Safetensor" in type(err).__name__:
            raise ModelFolderError(f"cannot load the model weights in {folder}: {one_line(err)[:300]}") from None
        if isinstance(err, AssertionError) and "padding_idx" in str(err).lower():  # (torch's nn.Embedding check)
            pad, vocab = getattr(model_config, "pad_token_id", None), getattr(model_config, "vocab_size", None)
            raise ModelFolderError(f"{folder / 'config.json'}: pad_token_id {pad!r:.40} is not one of the model's "
                                   f"{vocab!r:.40} token ids") from None  # fmt: skip
        raise
    _check_loaded(folder, loading, sparse=sparse)
    whole = getattr(model_config, "model_type", None) in _WHOLE_THEN_ENCODER and not sparse
    return (model.get_encoder() if whole else model), loading


def _check_loaded(folder: Path, loading: dict[str, Any], *, sparse: bool) -> None:
    """transformers fills weights a checkpoint lacks, or holds in another shape than config.json gives, with
    random values and only logs it: a `ModelFolderError` naming them instead (the pooler head is never used for
    token outputs, so its absence is fine)."""
    unused, absent = sorted(loading.get("unexpected_keys", ())), sorted(loading.get("missing_keys", ()))
    if unused or absent:
        logger.info(
            "loaded %s: %d checkpoint tensors unused (e.g. %s), %d not in the checkpoint (%s)",
            folder, len(unused), unused[:2], len(absent), absent[:2],
        )
    mismatched = sorted((key, tuple(saved), tuple(wanted)) for key, saved, wanted in loading.get("mismatched_keys", ()))
    if mismatched:
        key, saved, wanted = mismatched[0]
        raise ModelFolderError(
            f"the weights in {folder} do not have the shapes its config.json gives ({len(mismatched)} tensors): "
            f"{key} is {saved} in the checkpoint but {wanted} by config.json"
        )
    missing = [key for key in absent if "pooler" not in key]
    if missing:
        what = "an MLM head (a *ForMaskedLM checkpoint)" if sparse else "these weights"
        if any(key.startswith("encoder.") for key in unused):  # (a seq2seq checkpoint's: `_ENCODER_ONLY`)
            what += (" (it holds a whole encoder-decoder model; its encoder is read from a folder that holds the "
                     "encoder alone, as sentence-transformers saves it)")
        raise ModelFolderError(
            f"the weights in {folder} lack {len(missing)} tensors the model needs, e.g. {missing[:3]}; "
            f"{'splade pooling' if sparse else 'the model'} needs {what}"
        )


def resolve_device(device: Any) -> str:
    """None → "cuda" when a CUDA GPU is visible, else "cpu"; otherwise a device torch accepts and can put a
    tensor on — checked here, before any weights load, so that a device this machine lacks (mps, xpu, cuda:7)
    or "meta" (no data) is a one-line ValueError rather than a RuntimeError after loading."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    resolved = parse_device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asks for CUDA, but torch sees no CUDA GPU")
    if resolved.type != "cpu":
        try:
            torch.empty(0, device=resolved)
        except (RuntimeError, AssertionError, ImportError) as err:  # not compiled in, no such GPU index, no driver
            # (ImportError: a backend torch loads on first use, hpu's torch.hpu, not installed)
            raise ValueError(f"device {device!r} is not usable on this machine: {one_line(err)[:200]}") from None
    return str(resolved)


def resolve_dtype(dtype: Any) -> Any:
    """None → float32; "auto" → the dtype saved in the folder; a name or a torch floating dtype."""
    import torch

    checked = check_dtype(dtype)
    if checked is None:
        return torch.float32
    return checked if not isinstance(checked, str) or checked == "auto" else getattr(torch, DTYPE_NAMES[checked])


def forward_options(model: Any) -> dict[str, Any]:
    """Keyword arguments for the forward pass: no KV cache for decoders (nothing is generated)."""
    return {"use_cache": False} if "use_cache" in unpadded.forward_parameters(model) else {}


def _open_torch(folder: Path, options: Any) -> tuple[Any, Any]:
    """The transformers config and tokenizer, after the folder's files and the device and dtype are checked."""
    check_regular_files(folder, ("config.json", *WEIGHT_FILES, *TOKENIZER_FILES, "merges.txt", "added_tokens.json"))
    check_files(folder)
    resolve_device(options.device), resolve_dtype(options.dtype)  # bad values fail before anything is read
    return load_config_and_tokenizer(folder, trust_remote_code=options.trust_remote_code)


def _torch_runner(folder: Path, model_config: Any, options: Any, sparse: bool) -> TorchRunner:
    return TorchRunner(
        folder, model_config, sparse=sparse, device=resolve_device(options.device),
        dtype=resolve_dtype(options.dtype), trust_remote_code=options.trust_remote_code,
    )  # fmt: skip


TORCH_RUNTIME = Runtime("torch", _open_torch, _torch_runner)
