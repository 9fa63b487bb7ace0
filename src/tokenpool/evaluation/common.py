"""What the evaluations share: one forward pass over texts, pooled several ways (STS pairs, retrieval queries,
truncated documents and naive chunks all go through `encode_every_way`)."""

from __future__ import annotations

import io
import math
import numbers
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..core.durable import write_whole
from ..core.pooling import finish_vectors
from ..core.sparse import CSRBuilder, keep_largest, sparsify
from ..core.strategies import split_names
from ..errors import CorpusError, OptionError
from ..model.texts import progress as progress_bar

__all__ = [
    "Label", "check_budget", "check_number", "check_truncating", "encode_every_way", "number_label", "plot_file",
    "pooling_name", "pooling_of", "pyplot", "split_option", "text_table", "unit_rows"
]  # fmt: skip

Label = str | None  # a pooling strategy ("mean", "mean+max") or None: the encoder's own pooling


def encode_every_way(
    encoder: Any, texts: Sequence[str], labels: Sequence[Label], *, batch_size: int = 64,
    prompt: str | None = None, prompt_name: str | None = None, progress: bool = False,
    desc: str = "encoding", max_batch_tokens: int | None = None, sparse_rows: bool = False,
) -> dict[Label, Any]:  # fmt: skip
    """Run the model once over ``texts`` and pool every batch with each label → {label: float32 (N, D)}, or
    {label: `SparseRows`} with ``sparse_rows`` and a sparse model (None: the encoder's own pooling)."""
    check_truncating(encoder)
    vectors: dict[Label, Any] = {}
    as_rows = sparse_rows and getattr(encoder, "is_sparse", False)
    limit = getattr(encoder, "max_active_dims", None)  # a SparseEncoder's, as encode keeps
    budget = {} if max_batch_tokens is None else {"max_batch_tokens": max_batch_tokens}
    with progress_bar(len(texts), progress, batch_size, desc, name="progress") as update:
        for batch in encoder.iter_token_batches(
            texts, batch_size=batch_size, prompt=prompt, prompt_name=prompt_name, **budget
        ):
            rows = np.asarray(batch.indices)
            for label in labels:
                pooled = np.asarray(encoder.pool_batch(batch, pooling_of(encoder, label)))
                if label not in vectors:
                    shape = (len(texts), pooled.shape[1])
                    vectors[label] = CSRBuilder(*shape) if as_rows else np.zeros(shape, dtype=np.float32)
                if as_rows:
                    vectors[label].add(rows, sparsify(pooled, top_k=limit))
                else:
                    vectors[label][rows] = pooled if limit is None else keep_largest(pooled, limit)
            update(len(rows))
    return {label: v.build() for label, v in vectors.items()} if as_rows else vectors


def check_truncating(encoder: Any) -> None:
    """`OptionError` unless ``encoder`` reads one window per text (``long_documents="truncate"``): what every
    evaluation scores (retrieval reads long documents through its own modes, not the encoder's)."""
    mode = getattr(encoder, "long_documents", "truncate")
    if mode != "truncate":
        raise OptionError(
            f"evaluation pools one forward pass per text several ways, so it needs an encoder with "
            f"long_documents='truncate' (got {mode!r}); retrieval reads long documents through its modes "
            f"(windows, late-128, ...)"
        )


def pooling_of(encoder: Any, label: Label) -> Any:
    """What ``encoder.pool_batch`` pools ``label`` with: None (the encoder's own pooling) for None, and for the
    label of the encoder's own strategies when it adds Dense modules or a truncate_dim (tables mark that row
    as the model's pooling, so it must hold the model's vectors); else the strategy names."""
    own = "+".join(getattr(encoder, "strategies", ()))
    beyond = bool(getattr(encoder, "post_modules", ())) or getattr(encoder, "truncate_dim", None) is not None
    if label is None or (label == own and beyond):
        return None
    return label.split("+") if "+" in label else label


def pooling_name(label: Label, quote: bool = True) -> str:
    """How messages and headings name ``label``: ``pooling 'mean'``, or the encoder's own pooling for None."""
    return "the encoder's own pooling" if label is None else f"pooling {label!r}" if quote else f"pooling {label}"


def check_budget(max_batch_tokens: Any) -> dict[str, int]:
    """``{"max_batch_tokens": n}`` for the document modes ({} without a budget); a bad value is refused as
    `Encoder.encode` refuses it."""
    from ..model.batching import check_max_batch_tokens

    try:
        budget = check_max_batch_tokens(max_batch_tokens)
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    return {} if budget is None else {"max_batch_tokens": budget}


def check_number(
    name: str, value: Any, *, high: float = math.inf, allowed: str = "a finite number >= 0", error: type = ValueError
) -> float:
    """``value`` as a float when it is a finite real number (numpy's too: ``np.int64(60)`` from a config) in
    [0, ``high``]; else ``error`` naming ``name`` and the value (a bool, NaN, a negative number, a string)."""
    number = math.nan
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        try:
            number = float(value)
        except OverflowError:  # an int past float's range (10**400) is no finite number either
            number = math.inf
    if not 0 <= number <= high or not math.isfinite(number):
        raise error(f"{name} must be {allowed}, got {value!r:.60}")
    return number


def split_option(spec: str, what: str, valid: Iterable[str]) -> list[str]:
    """The stripped names of a comma-separated option ([] when it names none), an empty name among others an
    `OptionError` as `split_names` refuses it ("truncate,,bm25", "k1=1.2,,b=0.3" and "int8,,binary" dropped the
    empty item without a word, where "mean,,cls" was refused)."""
    try:
        return split_names(spec, what=what, valid=valid, separators=",")
    except ValueError as err:
        raise OptionError(str(err)) from None


def number_label(value: float) -> str:
    """``value`` as a table label shows it: the shortest ``%g`` form that reads back as ``value`` (``60``, ``0.5``,
    ``1234567``, not ``1.23457e+06``: two settings that differ were labelled alike)."""
    return next(text for digits in range(6, 18) if float(text := f"{value:.{digits}g}") == value)


def unit_rows(vectors: Any, dtype: Any = np.float64) -> np.ndarray:
    """``vectors`` as ``dtype`` rows of unit L2 length (a zero row stays zero), by the core finishing step:
    the one normalisation every evaluation (cosine, STS, precisions, search) uses."""
    return finish_vectors(np.asarray(vectors, dtype=dtype), normalize=True)


def text_table(columns: Sequence[tuple[str, int, str]], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a plain-text table, columns two spaces apart: the titles, a rule, then one line per row of
    cells (text). Each column is ``(title, width, align)``, ``align`` ``"<"`` or ``">"``."""

    def line(cells: Sequence[str]) -> str:
        return "  ".join(f"{cell:{align}{width}}" for cell, (_, width, align) in zip(cells, columns, strict=True))

    return [line([title for title, _, _ in columns]), "  ".join("-" * width for _, width, _ in columns), *map(line, rows)]


def pyplot(path: str | None = None) -> Any:
    """matplotlib's pyplot on the file-only Agg backend; without matplotlib a `CorpusError` naming the extra.
    Called before a model loads too, with the plot's ``path``, so that ``--plot`` fails early: a folder that does
    not exist or cannot be written, or a suffix matplotlib cannot write, is refused then, not after the run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CorpusError("--plot needs matplotlib: pip install 'tokenpool[plot]'") from None
    if path is None:
        return plt
    if not path:  # ('' drew no chart without a word)
        raise CorpusError("--plot '': name an image file, e.g. scores.png")
    from matplotlib.backend_bases import FigureCanvasBase

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise CorpusError(f"--plot {path}: the folder {folder} does not exist or cannot be written")
    if os.path.isdir(path):
        raise CorpusError(f"--plot {path}: is a folder; name an image file")
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    kinds = FigureCanvasBase.get_supported_filetypes()  # what savefig writes, without making a figure
    if suffix not in kinds:
        raise CorpusError(f"--plot {path}: matplotlib writes {', '.join('.' + k for k in sorted(kinds))}")
    return plt


@contextmanager
def plot_file(path: str, size: tuple[float, float], title: str = "") -> Iterator[Any]:
    """Axes of a new figure titled ``title``, laid out and saved to ``path`` when the block ends, whole or not at
    all (a write that failed part-way left a truncated image under the name, the earlier file lost): a write
    error is one `CorpusError` line; the figure is closed either way."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=size)
    try:
        # a file name that is not UTF-8 (surrogate escapes) shown as the messages show it: matplotlib refuses it
        ax.set_title(title.encode("utf-8", "backslashreplace").decode("utf-8"), fontsize=9)
        yield ax
        with warnings.catch_warnings():  # a letter the font lacks (a CJK model name) is a box, not 8 lines
            warnings.filterwarnings("ignore", r"Glyph \d+ .* missing from", UserWarning)
            fig.tight_layout()
            image = io.BytesIO()
            fig.savefig(image, dpi=120, format=os.path.splitext(path)[1].lstrip(".").lower() or None)
        write_whole(path, image.getvalue())
    except OSError as exc:
        raise CorpusError(f"{path}: cannot write the plot ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
