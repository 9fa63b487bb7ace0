"""What every encode call does with its texts before a model sees them (type and encodability checks, the
prompt, the progress bar), shared by the Encoder, long-document modes and evaluation."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from ..errors import OptionError, cut, lone_surrogate, shown_value
from .options import check_bool, spell

__all__ = [
    "DOCUMENT_PROMPT_NAMES", "QUERY_PROMPT_NAME", "as_texts", "check_encodable", "check_text",
    "check_prompt", "named_prompt", "resolve_prompt", "side_prompt", "progress",
]  # fmt: skip

logger = logging.getLogger("tokenpool.model.encoder")

# Document-side prompt names, in the order sentence-transformers' encode_document tries them.
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
QUERY_PROMPT_NAME = "query"


def as_texts(texts: Any, *, name: str = "texts") -> tuple[bool, list[str]]:
    """(was a single str, the texts as a list); TypeError naming the first non-string entry as ``name[i]``."""
    if isinstance(texts, str):
        check_text(texts, f"{name}[0]")
        return True, [texts]
    if isinstance(texts, (bytes, bytearray, memoryview, Mapping)) or not isinstance(texts, Iterable):
        raise TypeError(f"{name} must be a str or a list of str, got {type(texts).__name__}")
    if isinstance(texts, (set, frozenset)):  # (rows come back in input order: a set has none, its hashes decide)
        raise TypeError(f"{name} must be ordered (rows come back in input order): give a list, e.g. sorted(...), "
                        f"not a {type(texts).__name__}, whose order changes from one process to the next")
    if getattr(texts, "ndim", 1) != 1 and hasattr(texts, "shape"):  # (a DataFrame iterates over its column names)
        kind = "an array" if isinstance(texts, np.ndarray) else f"a {type(texts).__name__}"
        raise TypeError(f"{name} must be a str or a 1-D sequence of str, got {kind} of shape {tuple(texts.shape)}")
    items = texts.tolist() if isinstance(texts, np.ndarray) else list(texts)
    for index, text in enumerate(items):
        check_text(text, f"{name}[{index}]")
    return False, items


def check_text(text: Any, label: str) -> str:
    """``text`` when it is a str a tokenizer can encode; else TypeError / ValueError calling it ``label``."""
    if not isinstance(text, str):
        raise TypeError(f"{label} is {type(text).__name__} ({cut(shown_value(text))}), not str")
    check_encodable(label, text)
    return text


def check_encodable(label: str, text: str) -> None:
    """ValueError for a lone surrogate (e.g. from a JSON ``\\ud800`` escape) in the text ``label``: it is not
    text, no tokenizer can encode it."""
    found = lone_surrogate(text)
    if found is not None:
        raise ValueError(f"{label} holds {found}, which is not text")


def check_prompt(prompt: Any, prompt_name: Any) -> None:
    """At most one of ``prompt`` / ``prompt_name``; a prompt is a str a tokenizer can encode (`check_encodable`)."""
    if prompt is not None and prompt_name is not None:
        given = " and ".join(shown_value(value, short=True) for value in (prompt, prompt_name))
        raise ValueError(f"give either prompt or prompt_name, not both (got {given})")
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if prompt is not None:
        check_encodable("prompt", prompt)


def resolve_prompt(
    config: Any, prompt: str | None, prompt_name: str | None, *, where: Any = None, name: str | None = None
) -> str | None:
    """The prompt text of a call: ``prompt``, else the model's prompt named ``prompt_name``, else the model's
    default prompt (``config`` is a `PoolingConfig`: ``prompts``, ``default_prompt_name``), else None. An unknown
    ``prompt_name`` is an `OptionError` naming it as ``name`` (default: `spell`'s, ``--prompt-name`` in a
    command) and, with ``where``, the folder whose prompts were read; "query" / "document" are known to every
    model (`named_prompt`)."""
    check_prompt(prompt, prompt_name)
    if prompt is not None:
        return prompt
    prompts = config.prompts
    if prompt_name is not None:
        named = named_prompt(prompts, prompt_name)
        if named is None:
            source = "" if where is None else f"; config_sentence_transformers.json in {where}"
            known = ", ".join(sorted(prompts)) or "none"
            said = f"{name or spell('prompt_name')} {shown_value(prompt_name, short=True)}"
            raise OptionError(f"{said} is not one of the model's prompts ({known}{source})")
        return named
    return prompts.get(config.default_prompt_name)  # (no default prompt: None)


def named_prompt(prompts: Any, name: str) -> str | None:
    """The model's prompt ``name`` (``prompts``: its named prompts); "query" / "document" it does not name are the
    empty prompt, as sentence-transformers 6.x holds them for every model; None for another unknown name."""
    return prompts.get(name, "" if name in (QUERY_PROMPT_NAME, DOCUMENT_PROMPT_NAMES[0]) else None)


def side_prompt(config: Any, names: tuple[str, ...]) -> tuple[str | None, str | None]:
    """``(prompt, prompt_name)`` of a query or document side that gives neither: the first of ``names`` the
    model has a prompt for, else an empty prompt where the model sets a ``default_prompt_name`` (as
    sentence-transformers 6.x, whose ``encode_query`` / ``encode_document`` never fall back to the default
    prompt), else ``(None, None)``."""
    name = next((name for name in names if name in config.prompts), None)
    if name is not None:
        return None, name
    return ("" if config.default_prompt_name is not None else None), None


@contextlib.contextmanager
def progress(
    total: int, show: bool | None, batch_size: int, desc: str = "Encoding", name: str = "show_progress_bar"
) -> Iterator[Callable[[int], Any]]:
    """``update(n)`` for a progress bar over ``total`` texts (a no-op without one, or without tqdm).
    ``show=None``: a bar when logging shows INFO and the texts fill more than one batch; ``name``: the caller's."""
    if show is None:
        show = logger.getEffectiveLevel() <= logging.INFO and total > batch_size
    bar = None
    if check_bool(name, show):  # ("no" is no False)
        with contextlib.suppress(ImportError):  # no tqdm: no bar
            from tqdm.auto import tqdm
            bar = tqdm(total=total, desc=desc, unit="text")
    try:
        yield (lambda n: None) if bar is None else bar.update
    finally:
        if bar is not None:
            bar.close()
