"""Storage-ready outputs of an `Encoder` (sparse rows for SPLADE models, compact precisions for dense ones):
its batches through the core's math (`tokenpool.core.quantize`, `tokenpool.core.sparse`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..core.quantize import WHOLE_WEIGHTS_ID, Calibration
from ..core.sparse import SparseRows
from .folders import add_file_bytes, display_name, transformer_dir
from .modules import read_post_modules
from .request import EncodeRequest

__all__ = ["model_fingerprint", "calibrate", "check_output_options", "encode_sparse_rows", "sparse_tokens"]

logger = logging.getLogger(__name__)

# what transformers loads: model*.safetensors, pytorch_model*.bin
_WEIGHT_PREFIXES = ("model", "pytorch_model")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_SAMPLES = 16
_SAMPLE_BYTES = 4096
_FINGERPRINTS: dict[tuple[Any, ...], str] = {}


def model_fingerprint(encoder_or_folder: Any) -> str | None:
    """The id of the model's weight files (transformers weights, else ``.onnx`` files and the external weights
    beside each; None without any; then those of its Dense / LayerNorm modules): a sha256 of every byte of each,
    and its size, the same for every copy. ``"sha256:…"`` when every file is at most 64 KiB (the id earlier
    versions gave: their 16 samples of 4 KiB read all of such a file), else `WHOLE_WEIGHTS_ID` ``"sha256:whole:…"``
    (earlier versions sampled 64 KiB of a larger file: `Calibration.check` refuses their ids, saying so)."""
    folder = Path(getattr(encoder_or_folder, "model_path", encoder_or_folder))
    weights_dir = folder / transformer_dir(folder) if folder.is_dir() else folder
    files = _weight_files(weights_dir)
    if not files:
        from .onnx import onnx_data_files

        graphs = sorted(p for d in (weights_dir, weights_dir / "onnx") if d.is_dir() for p in d.glob("*.onnx"))
        files = [p for graph in graphs for p in (graph, *onnx_data_files(graph))]
    if not files:
        return None
    if folder.is_dir():  # a Dense / LayerNorm head after pooling changes the vectors too
        files += [p for module in read_post_modules(folder) for p in _weight_files(folder / module.path)]
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key in _FINGERPRINTS:
        return _FINGERPRINTS[key]
    digest, whole = hashlib.sha256(), False
    for path in files:
        whole = _add_file(digest, path) or whole
    return _FINGERPRINTS.setdefault(key, (WHOLE_WEIGHTS_ID if whole else "sha256:") + digest.hexdigest())


def _add_file(digest: Any, path: Path) -> bool:
    """Add ``path``'s suffix, size and every byte to ``digest``: a file of at most 16 × 4 KiB as 16 overlapping
    samples of 4 KiB (as earlier versions did), a larger one streamed, 1 MiB at a time (then True)."""
    size = path.stat().st_size
    digest.update(f"{path.suffix}:{size};".encode())
    if size > _SAMPLES * _SAMPLE_BYTES:
        add_file_bytes(digest, path)
        return True
    with open(path, "rb") as fh:
        for i in range(_SAMPLES):
            fh.seek(max(0, (size - _SAMPLE_BYTES) * i // max(1, _SAMPLES - 1)))
            digest.update(fh.read(_SAMPLE_BYTES))
    return False


def _weight_files(folder: Path) -> list[Path]:
    """The transformers-style weight files directly in ``folder`` (none if it is no folder), sorted."""
    found = folder.iterdir() if folder.is_dir() else ()
    return sorted(p for p in found if p.is_file() and p.suffix in _WEIGHT_SUFFIXES
                  and p.name.startswith(_WEIGHT_PREFIXES))  # fmt: skip


def check_output_options(encoder: Any, precision: str, calibration: Calibration | None) -> str:
    """The canonical precision after checking it fits ``encoder`` and ``calibration`` (an `EncodeRequest`
    check, for callers that have only these two options)."""
    return EncodeRequest(precision=precision, calibration=calibration).check_encoder(encoder).precision


def calibrate(
    encoder: Any, texts: str | Iterable[str], *, batch_size: int = 32, prompt: str | None = None,
    prompt_name: str | None = None, show_progress_bar: bool | None = None, source: str | None = None,
    truncate_dim: int | None = None, normalize: bool | None = None,
) -> Calibration:  # fmt: skip
    """Per-dimension ranges of ``encoder``'s vectors for ``texts`` (at least 2; a sample of the corpus);
    ``source``: where the texts came from, recorded with the ranges (``"first 1000 texts of corpus.jsonl"``);
    ``truncate_dim`` / ``normalize``: as `Encoder.encode`'s, for the vectors of encodes given the same."""
    if getattr(encoder, "is_sparse", False):
        raise ValueError(
            f"{display_name(encoder)} is a sparse (SPLADE) model; int8/uint8 calibration is for dense models"
        )
    items = [texts] if isinstance(texts, str) else texts
    vectors = encoder.encode(
        items, batch_size=batch_size, prompt=prompt, prompt_name=prompt_name,
        show_progress_bar=show_progress_bar, truncate_dim=truncate_dim, normalize=normalize,
    )  # fmt: skip
    return Calibration.for_encoder(encoder, vectors, normalize=normalize, source=source, prompt=prompt,
                                   prompt_name=prompt_name)  # fmt: skip


def encode_sparse_rows(encoder: Any, texts: list[str], request: EncodeRequest) -> SparseRows:
    """CSR parts of ``encoder``'s SPLADE vectors for ``texts``, in input order, one dense batch at a time, with
    the sparse-row options of a corpus job's ``request`` (batch size, prompt, top_k / threshold, token budget,
    long-document mode): the one place the CLI's job and Ray's batches take them from."""
    kept = ("batch_size", "prompt", "prompt_name", "top_k", "threshold", "max_batch_tokens", "long_documents")
    return encoder.run(EncodeRequest(output="sparse", **{name: getattr(request, name) for name in kept}), texts)


def sparse_tokens(encoder: Any, indices: Any) -> list[str | None]:
    """The vocabulary entries of column ``indices`` (for inspecting a sparse row); None for a column past the
    tokenizer's vocabulary (a model's logits padded to a multiple of 8 or 64), as sentence-transformers' decode."""
    ids = [int(i) for i in np.asarray(indices).reshape(-1)]
    size = int(encoder.dimension)
    bad = [i for i in ids if not 0 <= i < size]
    if bad:
        raise ValueError(f"token indices {bad[:5]} are outside the vocabulary 0..{size - 1}")
    return [None if token is None else str(token) for token in encoder.tokenizer.convert_ids_to_tokens(ids)]
