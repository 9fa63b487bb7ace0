"""`Pool`: tokenpool's pooling as a ``torch.nn.Module``, for training embedders with correct masking
(importing this module imports torch; ``import tokenpool`` alone never does)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .core._backends import namespace
from .core.masks import register_torch_mask_check
from .core.pooling import check_options, check_truncate_dim, pool
from .core.strategies import Pooling, parse_combination
from .errors import check_int, is_int

__all__ = ["Pool"]

# torch's namespace found once here, not first inside a compiled forward, where array-api-compat's lru_cache'd
# type checks made Dynamo warn (13 times); on the meta device, whatever torch's default device (no CUDA start)
namespace(torch.empty(0, device="meta"))
register_torch_mask_check()  # (a compiled forward checks an integer mask's values with it, fullgraph too)


def _check_count(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not is_int(value):  # numpy's integers too, as `pool`
        raise TypeError(f"{name} must be an int or None, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


class Pool(torch.nn.Module):
    """Pools token states ``hidden`` (B×L×D) over the real tokens of ``attention_mask`` into B×D' vectors:
    differentiable, parameter-free and ``torch.compile``-friendly; the maths is `tokenpool.pool`."""

    def __init__(
        self, strategy: str | Pooling | Sequence[str | Pooling] = "mean", *, prompt_length: int | None = None,
        normalize: bool = False, truncate_dim: int | None = None, reduction: str = "max",
    ) -> None:
        super().__init__()
        self.strategies: tuple[Pooling, ...] = parse_combination(strategy)
        self.prompt_length = _check_count("prompt_length", prompt_length)
        self.truncate_dim = None if truncate_dim is None else check_truncate_dim(truncate_dim)
        check_options(normalize, reduction, self.strategies, truncate_dim=truncate_dim)  # as `pool` checks them
        self.normalize = bool(normalize)
        self.reduction = reduction

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None,
        prompt_length: int | torch.Tensor | Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Pool ``hidden`` with ``attention_mask`` (1 = real token); ``prompt_length`` overrides the module's."""
        if not isinstance(hidden, torch.Tensor):
            raise TypeError(f"Pool expects a torch.Tensor for hidden, got {type(hidden).__name__}")
        strategy = self.strategies[0] if len(self.strategies) == 1 else list(self.strategies)
        if prompt_length is None:
            prompt_length = self.prompt_length
        elif isinstance(prompt_length, int):
            _check_count("prompt_length", prompt_length)
        return pool(hidden, attention_mask, strategy, prompt_length=prompt_length, normalize=self.normalize,
                    truncate_dim=self.truncate_dim, reduction=self.reduction)  # fmt: skip

    def output_dim(self, hidden_dim: int) -> int:
        """Width of the pooled vectors for token states of width ``hidden_dim`` (strategies concatenate)."""
        width = len(self.strategies) * check_int(hidden_dim, "hidden_dim")  # (-5 or 3.0 gave a width of -5 or 3.0)
        if self.truncate_dim is not None and self.truncate_dim > width:
            raise ValueError(f"truncate_dim={self.truncate_dim} exceeds the pooled width {width}")
        return width if self.truncate_dim is None else self.truncate_dim

    def extra_repr(self) -> str:
        names = ", ".join(member.value for member in self.strategies)
        splade = Pooling.SPLADE in self.strategies
        shown = {"prompt_length": self.prompt_length, "normalize": True if self.normalize else None,
                 "truncate_dim": self.truncate_dim, "reduction": repr(self.reduction) if splade else None}
        parts = [f"strategy=[{names}]" if len(self.strategies) > 1 else f"strategy={names!r}"]
        return ", ".join(parts + [f"{key}={value}" for key, value in shown.items() if value is not None])
