"""Device names read as torch reads them ("cpu", "cuda:1"), without importing torch: every runtime, the server's
model list and ``tokenpool bench`` read them here, so one spelling gets one message."""

from __future__ import annotations

import re
from typing import Any

from .errors import OptionError, shown_int, shown_value

__all__ = ["MAX_DEVICE_INDEX", "device_index_refusal", "device_parts"]

MAX_DEVICE_INDEX = 127  # torch's largest


def device_parts(device: Any, option: str = "device") -> tuple[str, int | None]:
    """``device`` (a string or a ``torch.device``) as (type, index), read as torch reads a device string ("cpu",
    "cpu:0", "cuda:1"), without torch: every runtime and ``tokenpool bench`` read device names here;
    `OptionError` else (an index above torch's named as ``option`` writes the option: `device_index_refusal`)."""
    found = re.fullmatch(r"([a-z_]+)(?::(0|[1-9][0-9]*))?", str(device)) if isinstance(device, str) or (
        type(device).__name__ == "device") else None  # fmt: skip
    if found is None:
        raise OptionError(f"unknown device {shown_value(device, short=True)}: a device type and optional index, e.g. 'cpu' or "
                          f"'cuda:1'")  # fmt: skip
    index = found.group(2) or "0"
    if len(index) > 3 or int(index) > MAX_DEVICE_INDEX:  # (torch keeps 8 bits of it: "cuda:300" is its cuda:44)
        shown = shown_int(int(index)) if len(index) < 4300 else f"(an index of {len(index)} digits)"  # (str→int's limit)
        raise device_index_refusal(option, f"{found.group(1)}:{shown}")
    return found.group(1), None if found.group(2) is None else int(index)


def device_index_refusal(option: str, shown: str) -> OptionError:
    """The refusal of a device index above torch's (``shown``: "cuda:300" or a bare "300"), the option named as
    written (``option``): ``device cuda:300``, ``--device cuda:300``, serve's ``--model a=...,device=cuda:300``."""
    joined = "=" if " " in option else " "  # (a KEY of a --model NAME=FOLDER,KEY=VALUE list, as `spell` has it)
    return OptionError(f"{option}{joined}{shown}: a device index is at most {MAX_DEVICE_INDEX}")
