"""BM25 with the bm25s library, as sparse rows: each document's BM25 term weights (bm25s's tokeniser,
optional English stop words and Snowball stemming; without Lucene's constant factor k1 + 1, which ranks the
same) against the queries' term counts, so that BM25 is searched exactly like a sparse model, in the same
memory budget. Texts are NFC-normalised first (a decomposed accent ends no word)."""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ..errors import OptionError, parse_number, require
from .common import check_number, number_label, split_option

__all__ = ["BM25Settings", "METHODS", "bm25_rows"]

METHODS = ("lucene", "robertson", "atire")  # bm25s's variants whose scores are term sums (Kamphuis et al.)


@dataclass(frozen=True)
class BM25Settings:
    """BM25's parameters. The defaults (bm25s's own, with English stop words, no stemmer) give SciFact
    nDCG@10 66.17 (BEIR: 66.5); ``k1=1.2, stopwords=none`` gives 65.96 (the 65.9 of shared/data/ir)."""

    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    stopwords: str = "en"  # "en" (bm25s's English list) or "none"
    stemmer: str = "none"  # a Snowball language of PyStemmer ("english", ...) or "none"

    def __post_init__(self) -> None:
        # (np.float32(1.2) from a config or a sweep is 1.2: stored as a float, so labels and JSON print it)
        # (bm25s's weights are float32: k1 = 1e300 rounded every one to 0 and retrieved nothing, without a word;
        # up to 1e20 they stay in float32's range, and long documents still rank differently at 1e6 and 1e8)
        object.__setattr__(self, "k1", check_number("BM25 k1", self.k1, high=1e20, allowed="a number with 0 <= k1 <= "
                                                    "1e20", error=OptionError))  # fmt: skip
        object.__setattr__(self, "b", check_number("BM25 b", self.b, high=1.0, allowed="a number with 0 <= b <= 1",
                                                   error=OptionError))  # fmt: skip
        if self.method not in METHODS:
            raise OptionError(f"BM25 method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.stopwords not in ("en", "none"):
            raise OptionError(f"BM25 stopwords must be 'en' or 'none', got {self.stopwords!r}")

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any] | BM25Settings | None) -> BM25Settings:
        """Settings from ``"k1=1.2,b=0.75,method=lucene,stopwords=en,stemmer=english"`` (any non-empty
        subset), a mapping of the same names, an instance, or None (the defaults)."""
        if spec is None or isinstance(spec, BM25Settings):
            return spec or cls()
        if not isinstance(spec, (str, Mapping)):
            raise TypeError(f"BM25 settings must be a 'name=value,…' string, a mapping, BM25Settings or None, "
                            f"got {type(spec).__name__}: {spec!r:.100}")  # fmt: skip
        known = [f.name for f in fields(cls)]
        if isinstance(spec, str):
            spec_text = spec
            pairs = [part.split("=", 1) for part in split_option(spec, "BM25 setting", known)]
            if not pairs or any(len(pair) != 2 for pair in pairs):  # ('' ran the defaults: leave it out for them)
                raise OptionError(f"BM25 settings are name=value pairs separated by commas, got {spec!r}")
            spec = {}
            for name, value in pairs:  # ("k1=1.2,b=0.3,k1=0.9" took the last k1 without a word)
                if name.strip() in spec:
                    raise OptionError(f"BM25 setting {name.strip()!r} is given twice in {spec_text!r}")
                spec[name.strip()] = value.strip()
        unknown = sorted(set(spec) - set(known))
        if unknown:
            raise OptionError(f"unknown BM25 setting {unknown[0]!r}; choose from {', '.join(known)}")
        values = dict(spec)
        for name in ("k1", "b"):  # text as a plain decimal (float() would read "1_2" as 12)
            if isinstance(text := values.get(name), str):
                values[name] = parse_number(text.strip(), special=True)
                if values[name] is None:
                    raise OptionError(f"BM25 {name} must be a number, got {text!r}")
        return cls(**values)

    def label(self) -> str:
        """How the table names these settings, e.g. ``k1=1.5 b=0.75 lucene stop=en stem=none``."""
        return f"k1={number_label(self.k1)} b={number_label(self.b)} {self.method} stop={self.stopwords} stem={self.stemmer}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def libraries(self) -> tuple[Any, Any]:
        """(bm25s, the stemmer or None): an ImportError naming the extra, or an unknown language, now."""
        bm25s = require("bm25s", "BM25 needs the bm25s library: pip install 'tokenpool[bm25]'")
        if self.stemmer == "none":
            return bm25s, None
        why = f"stemmer={self.stemmer!r} needs PyStemmer: pip install 'tokenpool[bm25]'"
        stemmers = require("Stemmer", why)
        known = stemmers.algorithms()
        if self.stemmer not in known:
            raise OptionError(f"unknown stemmer {self.stemmer!r}; choose from none, {', '.join(known)}")
        return bm25s, stemmers.Stemmer(self.stemmer)


def bm25_rows(documents: Sequence[str], queries: Sequence[str], settings: BM25Settings) -> tuple[Any, Any]:
    """(queries × terms term counts, documents × terms BM25 weights), float32 scipy CSR matrices over the
    corpus vocabulary: their dot products are the BM25 scores. Query terms absent from the corpus drop out."""
    import scipy.sparse

    bm25s, stemmer = settings.libraries()
    stopwords = None if settings.stopwords == "none" else settings.stopwords
    options = {"stopwords": stopwords, "stemmer": stemmer, "show_progress": False, "allow_empty": True}
    documents, queries = ([unicodedata.normalize("NFC", text) for text in texts] for texts in (documents, queries))
    corpus = bm25s.tokenize(documents, **options)
    # columns in the order terms first appear in the corpus (bm25s's own order without a stemmer): with one,
    # bm25s numbers terms in a set's order, which PYTHONHASHSEED changes, and with it each float32 sum's order
    order = list(dict.fromkeys(itertools.chain(itertools.chain.from_iterable(corpus.ids), sorted(corpus.vocab.values()))))
    term_of = {i: term for term, i in corpus.vocab.items()}
    vocabulary = {term_of[i]: column for column, i in enumerate(order)}
    if vocabulary:
        index = bm25s.BM25(k1=settings.k1, b=settings.b, method=settings.method)
        index.index(corpus, show_progress=False, create_empty_token=False)
        by_term = index.scores  # CSC of documents × terms
        shape = (len(documents), len(by_term["indptr"]) - 1)
        weights = scipy.sparse.csc_matrix((by_term["data"], by_term["indices"], by_term["indptr"]), shape=shape)
        docs = weights[:, order].tocsr().astype(np.float32)
    else:  # every document is empty (or stop words only): every score is 0
        docs = scipy.sparse.csr_matrix((len(documents), 0), dtype=np.float32)
    rows, cols = [], []
    for row, terms in enumerate(bm25s.tokenize(queries, return_ids=False, **options)):
        ids = [vocabulary[term] for term in terms if term in vocabulary]
        rows += [row] * len(ids)
        cols += ids
    counts = scipy.sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(queries), docs.shape[1])
    )
    counts.sum_duplicates()
    return counts, docs
