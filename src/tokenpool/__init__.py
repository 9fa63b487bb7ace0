"""tokenpool: turn token-level transformer outputs into sentence embeddings, correctly, on any array library.

The pooling core (`pool`, `Pooling`, `pool_packed`) needs only numpy and array-api-compat; the model-running
parts (`Encoder`) import torch and transformers when first used, never at `import tokenpool`."""

from __future__ import annotations

from ._version import __version__
from .core.strategies import Pooling
from .errors import lazy_names

# Public names served from modules that are imported on first access, to keep `import tokenpool` light
# (the command line's --help then loads no numpy either).
_LAZY = {
    "pool": "tokenpool.core.pooling", "pool_packed": "tokenpool.core.packed", "pack": "tokenpool.core.packed",
    "unpack": "tokenpool.core.packed", "PoolingConfig": "tokenpool.model.configs",
    "read_pooling_config": "tokenpool.model.configs", "Encoder": "tokenpool.model.encoder",
    "TokenBatch": "tokenpool.model.encoder", "evaluate_retrieval": "tokenpool.evaluation.retrieval",
    "Calibration": "tokenpool.core.quantize", "quantize": "tokenpool.core.quantize",
}  # fmt: skip

__all__ = ["Pooling", "__version__", *_LAZY]
__getattr__, __dir__ = lazy_names(globals(), _LAZY)
