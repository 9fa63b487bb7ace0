"""Optimised and int8 variants of an exported ONNX model, each recording how it was made and what quality it kept.

`make_variant` writes a new file (never over one) from a folder's fp32 ONNX file: ``optimize`` (fp32 fusions)
and/or ``quantize="int8"``, refused below its quality guard unless ``force``; the record goes into the file's
metadata (``RECORD_KEY``) and ``<file>.json``. Needs onnx and onnxruntime only — no torch."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import importlib.util
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..core.pooling import finish_vectors
from ..errors import CorpusError, ModelFolderError, OptionError
from .folders import file_digest, transformer_dir
from .onnx import (
    RECORD_KEY,
    cached_export_path,
    export_sources,
    link_into_place,
    linked_beside,
    record_weights,
    unlink_if_same,
    work_folder,
)
from .options import spell

__all__ = [
    "Recipe", "QualityRefused", "make_variant", "export_fp32", "export_step", "optimize_onnx",
    "quantize_onnx", "select_nodes", "node_layers", "cosine_summary", "cosine_figures", "read_record",
    "record_path", "recorded_path", "OPTIMIZE_MIN_COSINE", "DEFAULT_MIN_COSINE", "DEFAULT_BATCH_SIZE", "RECORD_KEY",
    "KEEP_FP32_FORMS", "CHECK_TEXTS", "check_free", "check_optimizable", "variant_min_cosine",
]  # fmt: skip

logger = logging.getLogger(__name__)

OPTIMIZE_MIN_COSINE = 0.99999  # an fp32 graph rewrite must give the same vectors
DEFAULT_MIN_COSINE = 0.95  # 1st-percentile cosine a quantised file must keep against its fp32 source
DEFAULT_BATCH_SIZE = 32  # texts per pass when a variant and its source are scored
# Architectures whose exported graphs onnxruntime.transformers' BERT fusions apply to (self-attention encoders
# with post-LayerNorm); anything else is refused rather than rewritten blindly.
OPTIMIZER_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "mpnet")
ACTIVATIONS = ("dynamic", "static")
KEEP_FP32_FORMS = (
    "embeddings", "softmax", "last:N", "first:N", "op:TYPE", "a node name or glob (e.g. '*layer.5/*')"
)
# operators quantised per mode: the matrix products (and fused attention) that carry the arithmetic, and the
# embedding tables (int8 storage); everything else (LayerNorm, GELU, softmax) stays fp32
_DYNAMIC_OPS = ("MatMul", "Attention", "Gather", "EmbedLayerNormalization")
_STATIC_OPS = ("MatMul", "Gather")
# the operators of a quantized graph (dynamic, QDQ, fused int8, 4/8-bit blocks): not a variant's source
_QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                  "DynamicQuantizeMatMul", "QAttention", "QLinearMatMul", "QGemm", "QEmbedLayerNormalization", "MatMulNBits")  # fmt: skip
_LAYER = re.compile(r"(?:^|[/._])(?:layers?|blocks?|h)[/._](\d+)(?=[/._]|$)")
# texts the optimised graph is checked on when no calibration texts are given: lengths that need padding,
# truncation, unicode, an empty text
CHECK_TEXTS = (
    "",
    "A man is playing a guitar.",
    "Ünïcödé café — naïve façade, 日本語のテキスト, emoji 🤗",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "In vitro studies show that the protein binds its receptor with high affinity. " * 40,
    "tab\tnew\nline",
    "[CLS] [SEP] literal special tokens",
    "short",
)


class QualityRefused(OptionError):
    """A variant that does not keep the required quality against its source (not written; ``force`` writes it)."""


@dataclass(frozen=True)
class Recipe:
    """What to make: ``optimize`` (fusions, fp32) and/or ``quantize="int8"`` with ``activations`` dynamic or
    static (min/max only: histogram calibrators need one batch shape; not after ``optimize``), keeping
    ``keep_fp32``'s nodes fp32."""

    optimize: bool = False
    quantize: str | None = None
    activations: str = "dynamic"
    keep_fp32: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.quantize not in (None, "int8"):
            raise OptionError(f"quantize must be 'int8' or None, got {self.quantize!r}")
        if self.activations not in ACTIVATIONS:
            raise OptionError(f"activations must be one of {ACTIVATIONS}, got {self.activations!r}")
        if not self.optimize and self.quantize is None:
            raise OptionError(f"nothing to make: ask for {spell('optimize')} and/or {spell('quantize', 'int8')}")
        if self.quantize is None and (self.keep_fp32 or self.activations != "dynamic"):
            raise OptionError(f"{spell('keep_fp32')} and {spell('activations', 'static')} apply to "
                              f"{spell('quantize', 'int8')} only")  # fmt: skip
        if self.optimize and self.activations == "static":  # (no QuantizeLinear at all: weights only, mislabelled)
            raise OptionError(f"{spell('activations', 'static')} cannot follow {spell('optimize')}: onnxruntime's "
                              "static quantiser finds no type for the fused nodes' outputs and quantises the "
                              "weights only; quantise the unfused graph, or use dynamic activations")  # fmt: skip
        if not isinstance(self.keep_fp32, (tuple, list)):  # (a str would be one spec per character)
            raise OptionError(f"{spell('keep_fp32')} must be a list of specs, got {self.keep_fp32!r:.60}")
        object.__setattr__(self, "keep_fp32", tuple(self.keep_fp32))  # (hashable, one file name per list)
        for spec in self.keep_fp32:
            _check_spec(spec)

    def file_name(self) -> str:
        """``model_opt.onnx``, ``model_qint8.onnx``, ``model_qint8_static.onnx``, ... (the default name);
        nodes kept in fp32 add ``_keep`` and 8 hex digits of their specs, so two recipes never share a name."""
        parts = ["model"] + (["opt"] if self.optimize else [])
        if self.quantize:
            parts.append("qint8" + ("_static" if self.activations == "static" else ""))
        if self.keep_fp32:
            parts.append("keep" + hashlib.sha256(json.dumps(list(self.keep_fp32)).encode()).hexdigest()[:8])
        return "_".join(parts) + ".onnx"


def _check_spec(spec: Any) -> None:
    if not isinstance(spec, str) or not spec.strip():
        raise OptionError(f"a {spell('keep_fp32')} entry must be a non-empty string, got {spec!r}")
    head, _, tail = spec.partition(":")
    if head in ("last", "first") and not (tail.isascii() and tail.isdigit() and int(tail) > 0):
        raise OptionError(f"{spell('keep_fp32', spec)}: {head}:N needs a positive layer count N")
    if head == "op" and not tail:
        raise OptionError(f"{spell('keep_fp32', spec)}: op:TYPE needs an operator type, e.g. op:Softmax")


def node_layers(graph: Any) -> dict[str, int]:
    """Each node's transformer layer: the number in its name (``layer.5``, ``layers.5``, ``h.5``), else (fused
    nodes such as ``Attention_3``) the lowest layer of the nodes reading its outputs; some nodes have none."""
    consumers = _readers(graph)
    layers: dict[str, int] = {}
    for node in reversed(list(graph.node)):  # topological order reversed: readers come first
        found = _LAYER.search(node.name)
        if found:
            layers[node.name] = int(found.group(1))
            continue
        below = [layers[c.name] for out in node.output for c in consumers.get(out, ()) if c.name in layers]
        if below:
            layers[node.name] = min(below)
    return layers


def select_nodes(graph: Any, specs: Sequence[str]) -> dict[str, list[str]]:
    """Node names per keep-fp32 spec (see `KEEP_FP32_FORMS`); a spec matching no node is an `OptionError`."""
    layers = node_layers(graph)
    depth = max(layers.values(), default=-1) + 1
    initializers = {init.name: len(init.dims) for init in graph.initializer}
    chosen: dict[str, list[str]] = {}
    for spec in specs:
        _check_spec(spec)
        head, _, tail = spec.partition(":")
        if head in ("last", "first"):
            count = int(tail)
            keep = range(depth - count, depth) if head == "last" else range(count)
            names = [n.name for n in graph.node if layers.get(n.name) in keep]
        elif head == "op":
            names = [n.name for n in graph.node if n.op_type == tail]
        elif spec == "embeddings":
            names = [n.name for n in graph.node if _is_embedding(n, initializers)]
        elif spec == "softmax":
            names = _softmax_path(graph)
        else:
            names = [n.name for n in graph.node if n.name and fnmatch.fnmatchcase(n.name, spec)]
        if not names:
            raise OptionError(
                f"{spell('keep_fp32')} {spec!r} matches no node of this graph ({len(graph.node)} nodes, {depth} layers "
                f"found); forms: {', '.join(KEEP_FP32_FORMS)}"
            )
        chosen[spec] = names
    return chosen


def _readers(graph: Any) -> dict[str, list[Any]]:
    """The nodes that read each tensor, by tensor name."""
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _is_embedding(node: Any, initializers: dict[str, int]) -> bool:
    if node.op_type == "EmbedLayerNormalization" or "embed" in node.name.lower():
        return True
    return node.op_type == "Gather" and initializers.get(node.input[0]) == 2


_PASS_THROUGH = ("Add", "Sub", "Div", "Mul", "Where", "Cast", "Dropout", "Identity", "Transpose", "Reshape")


def _softmax_path(graph: Any) -> list[str]:
    """The attention probabilities' path: fused attention nodes, each Softmax, the matrix product that makes its
    scores (through elementwise steps) and the one that reads its probabilities."""
    producer = {out: node for node in graph.node for out in node.output}
    readers = _readers(graph)
    chosen = [n.name for n in graph.node if n.op_type in ("Attention", "MultiHeadAttention", "QAttention")]
    for node in (n for n in graph.node if n.op_type == "Softmax"):
        chosen.append(node.name)
        back = producer.get(node.input[0])
        while back is not None and back.op_type in _PASS_THROUGH:
            back = producer.get(back.input[0])
        if back is not None and back.op_type in ("MatMul", "FusedMatMul"):
            chosen.append(back.name)
        ahead = list(readers.get(node.output[0], ()))
        while ahead and ahead[0].op_type in _PASS_THROUGH:
            ahead = list(readers.get(ahead[0].output[0], ()))
        chosen.extend(a.name for a in ahead if a.op_type in ("MatMul", "FusedMatMul"))
    return list(dict.fromkeys(chosen))


@contextlib.contextmanager
def _quiet_onnxruntime() -> Iterator[None]:
    """onnxruntime's optimiser and quantiser log advice through the root logger (and would install a handler
    on it): keep that out of the user's output while they run."""
    root, guard = logging.getLogger(), logging.NullHandler()
    if not root.handlers:
        root.addHandler(guard)
    saved = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(saved)
        root.removeHandler(guard)  # (nothing when it was not added)


def check_optimizable(model_config: Any) -> str:
    """The model type of ``model_config`` (`tokenpool.model.onnx.read_model_config`), an `OptionError` when
    `optimize_onnx` does not know its graphs (`OPTIMIZER_MODEL_TYPES`): checked before any export runs."""
    model_type = str(getattr(model_config, "model_type", ""))
    if model_type not in OPTIMIZER_MODEL_TYPES:
        raise OptionError(
            f"optimize knows the graphs of {', '.join(OPTIMIZER_MODEL_TYPES)} models; this one is "
            f"{model_type or 'of unknown type'!r} (export without --optimize, or quantize alone)"
        )
    return model_type


def optimize_onnx(source: Path, target: Path, model_config: Any) -> dict[str, Any]:
    """Fuse ``source``'s graph with onnxruntime.transformers' BERT optimiser (fp32) into ``target``; returns the
    step's record (architecture, heads, width, fused operators)."""
    model_type = check_optimizable(model_config)
    raw = getattr(model_config, "raw", {}) or {}
    heads = int(raw.get("num_attention_heads") or raw.get("n_heads") or 0)
    width = int(model_config.hidden_size)
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    with _quiet_onnxruntime():  # opt_level 0: the Python fusions only, so the file stays portable across CPUs
        optimized = optimize_model(
            str(source), model_type="bert", num_heads=heads, hidden_size=width,
            optimization_options=FusionOptions("bert"), opt_level=0,
        )  # fmt: skip
        fused = {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}
        optimized.save_model_to_file(str(target))
    tool = "onnxruntime.transformers.optimizer (bert fusions, opt_level 0)"
    return {
        "step": "optimize", "tool": tool, "model_type": model_type, "num_heads": heads, "hidden_size": width,
        "fused": fused,
    }  # fmt: skip


def quantize_onnx(
    source: Path, target: Path, recipe: Recipe, *, calibration: Sequence[dict[str, np.ndarray]] = ()
) -> dict[str, Any]:
    """Quantise ``source`` to int8 into ``target`` as ``recipe`` says (static needs ``calibration``: model feeds);
    returns the step's record, with the nodes kept in fp32."""
    import onnx
    from onnxruntime import quantization as ortq

    graph = onnx.load(str(source), load_external_data=False).graph
    kept = select_nodes(graph, recipe.keep_fp32)
    excluded = sorted({name for names in kept.values() for name in names})
    dynamic = recipe.activations == "dynamic"
    if not (dynamic or calibration):
        raise OptionError("static activations need calibration texts")
    ops = list(_DYNAMIC_OPS if dynamic else _STATIC_OPS)
    options = {"DefaultTensorType": onnx.TensorProto.FLOAT}  # fused (com.microsoft) nodes defeat shape inference
    if not dynamic:
        # one batch's outputs at a time, each batch's ranges merged (CalibMaxIntermediateOutputs drops batches
        # without taking their ranges: onnxruntime #18893)
        options.update(ActivationSymmetric=False, WeightSymmetric=True, CalibStridedMinMax=1)
    common = dict(
        per_channel=True, reduce_range=False, weight_type=ortq.QuantType.QInt8, nodes_to_exclude=excluded,
        op_types_to_quantize=ops, extra_options=options,
    )  # fmt: skip
    with _quiet_onnxruntime():
        if dynamic:
            ortq.quantize_dynamic(str(source), str(target), **common)
        else:
            ortq.quantize_static(
                str(source), str(target), _feeds_reader(calibration), quant_format=ortq.QuantFormat.QDQ,
                activation_type=ortq.QuantType.QUInt8, calibrate_method=ortq.CalibrationMethod.MinMax,
                **common,
            )  # fmt: skip
    ranges = f"uint8 with min/max ranges calibrated on {len(calibration)} batches (QDQ)"
    return {
        "step": "quantize",
        "weights": "int8, symmetric, one scale per output channel",
        "activations": "uint8 per batch at run time (dynamic)" if dynamic else ranges,
        "operators": ops,
        "keep_fp32": {spec: len(names) for spec, names in kept.items()},
        "nodes_kept_fp32": excluded,
    }


def _feeds_reader(feeds: Sequence[dict[str, np.ndarray]]) -> Any:
    """An onnxruntime CalibrationDataReader over prepared model feeds."""
    from onnxruntime.quantization import CalibrationDataReader

    class Feeds(CalibrationDataReader):
        rest = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.rest, None)

        def __len__(self) -> int:
            return len(feeds)

        def set_range(self, start_index: int, end_index: int) -> None:  # (the strided calibration's batches)
            self.rest = iter(feeds[start_index:end_index])

    return Feeds()


def cosine_summary(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Row-wise cosine of two dense (N, D) arrays in float64, summarised by `cosine_figures`."""
    a, b = (np.asarray(array, dtype=np.float64) for array in (reference, candidate))
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"cosine_summary needs two (N, D) arrays of one shape, got {a.shape} and {b.shape}")
    a, b = finish_vectors(a, normalize=True), finish_vectors(b, normalize=True)  # the one L2 normalisation
    return cosine_figures(np.einsum("ij,ij->i", a, b), ~a.any(axis=1), ~b.any(axis=1))


def cosine_figures(
    cosines: np.ndarray, reference_zero: np.ndarray, candidate_zero: np.ndarray
) -> dict[str, float]:
    """``{"texts", "min", "p1", "median"}`` of a candidate's row ``cosines`` against a reference (p1: the 1st
    percentile); the one rule for comparing two runtimes' outputs: a zero row (``*_zero`` masks) against a
    zero row is 1.0, against a non-zero one 0.0; never NaN."""
    cosines = np.asarray(cosines, dtype=np.float64)
    if cosines.ndim != 1 or cosines.size == 0:
        raise ValueError(f"cosine_figures needs a non-empty row of cosines, got shape {cosines.shape}")
    either = np.logical_or(reference_zero, candidate_zero)
    cos = np.where(either, np.where(np.logical_and(reference_zero, candidate_zero), 1.0, 0.0), cosines)
    figures = {"min": cos.min(), "p1": np.percentile(cos, 1), "median": np.median(cos)}
    return {"texts": int(cos.size), **{name: float(value) for name, value in figures.items()}}


# a figure ×100 of one encoder on data the caller read (STS Spearman, BEIR nDCG@10: `tokenpool.evaluation.runtimes`)
Scorer = Callable[[Any], float]


@dataclass
class _Check:
    """What a variant is scored on: texts (cosines) and the caller's scorers (name → figure of an encoder)."""

    texts: list[str]
    scorers: Mapping[str, Scorer] = field(default_factory=dict)
    batch_size: int = DEFAULT_BATCH_SIZE
    names: dict[str, str] = field(default_factory=dict)
    trust_remote_code: bool = False  # the export's: a tokenizer_config.json auto_map (its tokenizer.json is run)


def _encoder(root: Path, onnx_file: Path, check: _Check) -> Any:
    from .encoder import Encoder

    return Encoder(root, runtime="onnx", onnx_file=onnx_file, trust_remote_code=check.trust_remote_code)


def _quality(root: Path, reference: Path, candidate: Path, check: _Check) -> dict[str, Any]:
    """Cosines of ``candidate``'s vectors against ``reference``'s on the check texts, and the figures of the
    check's scorers for both with their ratio."""
    encoders = [_encoder(root, reference, check), _encoder(root, candidate, check)]
    vectors = [encoder.encode(check.texts, batch_size=check.batch_size) for encoder in encoders]
    out: dict[str, Any] = {"cosine": cosine_summary(*vectors)}
    if check.scorers:
        before, after = ({name: float(score(e)) for name, score in check.scorers.items()} for e in encoders)
        out["scores"] = {  # the ratio: the variant's figure as a fraction of fp32's (None when fp32 scored 0)
            name: {"fp32": fp32, "variant": after[name], "ratio": after[name] / fp32 if fp32 else None}
            for name, fp32 in before.items()
        }
    out.update(check.names)
    return out


def record_path(target: Path) -> Path:
    """The JSON record written beside an exported file: ``model_qint8.onnx`` → ``model_qint8.onnx.json``."""
    return target.with_name(target.name + ".json")


def check_free(target: Path) -> None:
    """A `CorpusError` when ``target`` or its record (`record_path`) exists (checked before any export runs;
    tokenpool never replaces a file), a `NotADirectoryError` when its folder cannot be one."""
    for path in (target, record_path(target)):
        if path.exists() or path.is_symlink():
            raise CorpusError(f"{path} already exists; tokenpool never replaces it (delete it first to re-export)")
    _check_folder(target.parent)


def _check_folder(folder: Path) -> None:
    """A `NotADirectoryError` when ``folder`` or one of its parents is there but is not a folder."""
    blocked = [path for path in (folder, *folder.parents) if not path.is_dir() and (path.exists() or path.is_symlink())]
    if blocked:  # (the topmost: what a mkdir would trip on first)
        raise NotADirectoryError(f"cannot write into {str(blocked[-1])!r}: not a folder")


@contextlib.contextmanager
def _new_folders(folder: Path) -> Iterator[None]:
    """Make ``folder`` and its missing parents; when the job then fails, remove those it made (deepest first,
    and only while empty), so a refused export leaves no folder behind and never deletes one it did not make."""
    _check_folder(folder)  # (else the error named a temporary file)
    made: list[Path] = []
    try:
        for path in reversed([folder, *folder.parents]):  # top down; only the ones this call creates are noted
            if not path.is_dir():
                with contextlib.suppress(FileExistsError):
                    path.mkdir()
                    made.append(path)
        yield
    except BaseException:
        for path in reversed(made):  # deepest first
            with contextlib.suppress(OSError):  # not empty (someone else's file) or already gone: left alone
                path.rmdir()
        raise


def _check_source(source: Path) -> None:
    """`ModelFolderError` naming ``source`` when it is not an ONNX model (read before any work: onnx's parse
    error names no file), or a quantized one."""
    import onnx

    try:
        model = onnx.load(str(source), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf and onnx raise their own types for a damaged file
        raise ModelFolderError(f"cannot read the ONNX file {source}: {err}") from None
    if not model.graph.node or not model.opset_import:  # an empty (or zero-byte) file parses as an empty model
        raise ModelFolderError(f"cannot read the ONNX file {source}: it holds no graph")
    if quantized := sorted({node.op_type for node in model.graph.node} & set(_QUANTIZED_OPS)):
        raise ModelFolderError(  # (its variant was scored against it, not fp32: "cosine vs its fp32 source 1.0")
            f"the ONNX file {source} is already quantized ({', '.join(quantized)} nodes); a variant starts from an "
            "fp32 file, and is scored against it"
        )


def _new_record(
    recipe: dict[str, Any], source: dict[str, Any], steps: list[dict[str, Any]], min_cosine: float | None,
    force: bool, libraries: Sequence[str],
) -> dict[str, Any]:  # fmt: skip
    """The record every export carries (before its quality figures and the written file are added), with
    tokenpool's version and each named library's (those not installed left out)."""
    versions = {"tokenpool": __version__}
    for name in libraries:
        with contextlib.suppress(ImportError):
            versions[name] = str(importlib.import_module(name).__version__)
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {
        "made": made, "versions": versions, "recipe": recipe, "source": source, "steps": steps, "quality": {},
        "min_cosine": min_cosine, "forced": force,
    }  # fmt: skip


def export_step(file: Path) -> dict[str, Any]:
    """The record's step for the fp32 export `tokenpool.model.onnx.export_onnx` made at ``file``."""
    return {"step": "export", "tool": "torch.onnx.export (TorchScript exporter, opset 17)", "file": recorded_path(file)}


def recorded_path(path: str | os.PathLike) -> str:
    """How a record names a file or folder (the model's, the calibration texts, --stsb / --beir data): its
    absolute path, as a record is read later, from anywhere."""
    return str(Path(path).absolute())


def export_fp32(folder: Path, target: Path, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """`export_onnx` of ``folder`` at ``target`` with a variant's record (the weights' digests as its source),
    in its metadata (with onnx) and ``record_path(target)``; never replaces a file; a failure leaves none."""
    from .onnx import export_onnx

    check_free(target)
    source = {"folder": recorded_path(folder), **export_sources(folder)}
    recipe = {f.name: f.default for f in fields(Recipe)}  # nothing asked beyond the export
    with _new_folders(target.parent), work_folder(target.parent) as work:
        made = export_onnx(folder, Path(work) / "model.onnx", trust_remote_code=trust_remote_code)
        libraries = ("torch", "transformers", "onnx")
        record = _new_record(recipe, source, [export_step(target)], None, False, libraries)
        stamped = made if importlib.util.find_spec("onnx") is None else Path(work) / "stamped.onnx"
        if stamped != made:  # (torch exports without onnx: the JSON record alone)
            _stamp(made, stamped, record)
        with linked_beside(sorted(set(Path(work).iterdir()) - {made, stamped}), target.parent):  # (> 2 GiB)
            _publish(stamped, target, record)
    return record


def make_variant(
    root: Path, source: Path, target: Path, recipe: Recipe, *, texts: Sequence[str] = (),
    texts_name: str | None = None, scorers: Mapping[str, Scorer] | None = None,
    sources: Mapping[str, str] | None = None, min_cosine: float | None = None, force: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE, source_step: dict[str, Any] | None = None, trust_remote_code: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Make ``recipe``'s variant of the fp32 file ``source`` (of the folder ``root``) at ``target``; returns
    its record. ``texts``: calibration texts (needed to quantise); ``scorers`` (name → figure of an encoder)
    score both files. `QualityRefused` (nothing written) when the variant loses too much, unless ``force``:
    ``min_cosine`` for the int8 step (`variant_min_cosine`), `OPTIMIZE_MIN_COSINE` for the optimised graph.
    ``trust_remote_code``: the scoring encoders' (a tokenizer_config.json ``auto_map``; no code runs)."""
    check_free(target)
    _check_source(source)
    min_cosine = variant_min_cosine(recipe, min_cosine)
    if recipe.quantize and not texts:
        raise OptionError("quantizing needs calibration texts (the quality guard and static ranges use them)")
    names = {**(sources or {}), **({"texts": texts_name} if texts_name else {})}
    check = _Check(list(texts) or list(CHECK_TEXTS), dict(scorers or {}), batch_size, names, trust_remote_code)
    source_record = {"file": recorded_path(source), "digest": file_digest(source), **_weights_of(source, root)}
    steps = [source_step] if source_step else []
    libraries = ("onnxruntime", "onnx")
    record = _new_record(asdict(recipe), source_record, steps, min_cosine, bool(force), libraries)
    with _new_folders(target.parent), work_folder(target.parent) as work:
        current = _run_steps(root, source, Path(work), recipe, check, record, min_cosine, force)
        _stamp(current, Path(work) / "stamped.onnx", record)
        _publish(Path(work) / "stamped.onnx", target, record)
    return record


def _weights_of(source: Path, root: Path) -> dict[str, Any]:
    """``{"weights": ...}``: the folder files (digests and stamps) tokenpool's record of the ONNX file ``source``
    says it was exported from — directly, or through its own source — for `check_export_source`; for the model's
    cached export without a record (the runtime's), its files now: that cache is keyed by their stats."""
    weights = record_weights(read_record(source))
    folder = root / transformer_dir(root)
    if weights is None and source.absolute() == cached_export_path(folder).absolute():
        weights = {"folder": recorded_path(folder), **export_sources(folder)}
    return {} if weights is None else {"weights": weights}


def variant_min_cosine(recipe: Recipe, min_cosine: float | None) -> float | None:
    """The 1st-percentile cosine ``recipe``'s int8 step must keep: ``min_cosine`` (within [0, 1]), or
    `DEFAULT_MIN_COSINE` when None; None without an int8 step, where a ``min_cosine`` given is an `OptionError`
    (the optimised graph's check is fixed: `OPTIMIZE_MIN_COSINE`)."""
    if min_cosine is not None and not 0.0 <= float(min_cosine) <= 1.0:
        raise OptionError(f"{spell('min_cosine')} must be within [0, 1], got {min_cosine!r}")
    if recipe.quantize is None and min_cosine is not None:
        raise OptionError(
            f"{spell('min_cosine', min_cosine)} applies to {spell('quantize', 'int8')} only; an "
            f"optimised fp32 graph must keep a min cosine of {OPTIMIZE_MIN_COSINE:g} against its source"
        )
    if recipe.quantize is None:
        return None
    return DEFAULT_MIN_COSINE if min_cosine is None else float(min_cosine)


def _run_steps(
    root: Path, source: Path, work: Path, recipe: Recipe, check: _Check, record: dict[str, Any],
    min_cosine: float | None, force: bool,
) -> Path:  # fmt: skip
    """Optimise, then quantise, in ``work``; each step's quality is checked against the file it started from."""
    from .onnx import read_model_config

    current = source
    if recipe.optimize:
        optimized = work / "optimized.onnx"
        config = read_model_config(root / transformer_dir(root))
        record["steps"].append(optimize_onnx(current, optimized, config))
        texts = list(dict.fromkeys([*check.texts, *CHECK_TEXTS]))
        last = recipe.quantize is None  # the file written: the caller's scorers (--stsb, --beir) score it
        sources = {name: value for name, value in check.names.items() if name != "texts"} if last else {}
        scored = replace(check, texts=texts, scorers=check.scorers if last else {}, names=sources)
        quality = record["quality"]["optimize"] = _quality(root, current, optimized, scored)
        quality["required"] = {"min": OPTIMIZE_MIN_COSINE}  # what was checked
        _guard(quality["cosine"]["min"], OPTIMIZE_MIN_COSINE, "min", "optimised", force)
        current = optimized
    if recipe.quantize:
        quantized = work / "quantized.onnx"
        feeds = _calibration_feeds(root, current, check) if recipe.activations == "static" else []
        record["steps"].append(quantize_onnx(current, quantized, recipe, calibration=feeds))
        quality = record["quality"]["quantize"] = _quality(root, current, quantized, check)
        quality["required"] = {"p1": min_cosine}
        _guard(quality["cosine"]["p1"], min_cosine, "1st-percentile", "int8", force, quality)
        current = quantized
    return current


def _guard(value: float, limit: float, what: str, variant: str, force: bool, quality: Any = None) -> None:
    if value >= limit:
        return
    message = f"the {variant} model's {what} cosine against its fp32 source is {value:.6f}, below {limit:g}"
    if force:
        logger.warning("%s; written anyway (force)", message)
        return
    error = QualityRefused(
        f"{message}: not written (keep more nodes in fp32 with {spell('keep_fp32')}, or pass {spell('force', True)} "
        "to write it anyway)"
    )
    error.quality = quality  # type: ignore[attr-defined]
    raise error


def _calibration_feeds(root: Path, onnx_file: Path, check: _Check) -> list[dict[str, np.ndarray]]:
    """The calibration texts tokenised as `Encoder.encode` tokenises them (the default prompt included,
    length-sorted batches), as model feeds."""
    encoder = _encoder(root, onnx_file, check)
    tokenized = encoder.tokenize(check.texts)  # the model's default prompt, as encode (and the guard) use it
    return [
        encoder.runner.feed(batch.input_ids, batch.attention_mask)
        for batch in encoder.tokenization.id_batches(tokenized.ids, check.batch_size)
    ]


def _stamp(source: Path, target: Path, record: dict[str, Any]) -> None:
    """Copy ``source`` to ``target`` with the record in its metadata (key `RECORD_KEY`), without the long list
    of fp32 node names (it is in the JSON)."""
    import onnx

    model = onnx.load(str(source), load_external_data=False)  # weight files beside it stay where they are
    kept = [prop for prop in model.metadata_props if prop.key != RECORD_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    steps = [{k: v for k, v in step.items() if k != "nodes_kept_fp32"} for step in record["steps"]]
    model.metadata_props.add(key=RECORD_KEY, value=json.dumps({**record, "steps": steps}, sort_keys=True))
    onnx.save(model, str(target))


def _publish(made: Path, target: Path, record: dict[str, Any]) -> None:
    """Write the JSON record beside the finished file ``made``, then link both into place (`link_into_place`:
    never replacing a file); when the record cannot go there, the file linked a moment before is removed."""
    record["file"] = {"path": recorded_path(target), "digest": file_digest(made), "bytes": made.stat().st_size}
    written = made.with_name(made.name + ".json")  # (in the work folder: a failed write is removed with it)
    written.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    link_into_place(made, target)
    linked = os.lstat(target)
    try:
        link_into_place(written, record_path(target))
    except BaseException:
        unlink_if_same(target, linked)  # the link made above, unless another file was put there meanwhile
        raise


def read_record(onnx_file: str | os.PathLike) -> dict[str, Any] | None:
    """The record tokenpool stored in an exported file's metadata, or None (a file tokenpool did not make)."""
    import onnx

    model = onnx.load(str(onnx_file), load_external_data=False)
    return next((json.loads(prop.value) for prop in model.metadata_props if prop.key == RECORD_KEY), None)


def format_record(record: dict[str, Any]) -> str:
    """The steps and quality figures of a record, a few lines for a terminal."""
    lines = []
    for step in record.get("steps", ()):
        if step.get("step") == "optimize":
            fused = ", ".join(f"{name} {count}" for name, count in step["fused"].items()) or "nothing"
            lines.append(f"  optimize ({step['model_type']}): fused {fused}")
        elif step.get("step") == "quantize":
            kept = ", ".join(f"{spec} ({count} nodes)" for spec, count in step["keep_fp32"].items()) or "none"
            lines.append(f"  quantize int8: activations {step['activations']}; kept fp32: {kept}")
    for name, quality in record.get("quality", {}).items():
        cos = quality["cosine"]
        on = quality.get("texts", "check texts")
        lines.append(
            f"  {name}: cosine vs its fp32 source over {cos['texts']} texts ({on}): min {cos['min']:.6f}, "
            f"1st percentile {cos['p1']:.6f}, median {cos['median']:.6f}"
        )
        for metric, values in quality.get("scores", {}).items():
            ratio = values["ratio"]
            kept = "no ratio: fp32 scored 0" if ratio is None else f"{100 * ratio:.2f}% of fp32"
            lines.append(f"  {name}: {metric} fp32 {values['fp32']:.2f}, variant {values['variant']:.2f} ({kept})")
    return "\n".join(lines)
