"""``tokenpool embed --token-vectors``: every token's vector of every record (`.rows.token_rows`), exactly
`Encoder.encode(texts, output="tokens")` and `Encoder.token_spans(texts)`; tokens are looked up before
blocking, so blocks and chunks end at ``block_tokens`` tokens (memory: about two blocks' token vectors).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..io.readers import is_regular_file, iter_records
from ..io.rows import Parts
from .chunks import check_row_output
from .rows import record_id, token_parts, token_rows
from .skeleton import EmbedJob, Item, JobFormats, Kind, check_index, id_checked

SPAN_GROUP = 64  # records whose tokens are looked up in one call (the tokenizer only: no model)


def check(job: EmbedJob, formats: JobFormats) -> None:
    """The token-row options and the sidecar ``OUT.tokens.jsonl`` (an .npy output replaces it)."""
    check_row_output(formats.output, "--token-vectors")
    check_index(job, formats.output, token_rows(0))
    if is_regular_file(job.input):  # (stdin: each id is checked as the run reads it)
        records = iter_records(job.input, formats.input, field=job.field, column=job.column, extras=(job.id_field,))
        for _ in id_checked(records, job):
            pass


class Tokens(Kind):
    """`token_rows`: the token vectors, ids and spans of each block's kept records."""

    def __init__(self, encoder: Any, job: EmbedJob, out_fmt: str) -> None:
        super().__init__(encoder, job, out_fmt)
        self.extras = (job.id_field,)
        self.block_weight = self.chunk_weight = job.block_tokens
        self.width = int(encoder.runner_width)  # the model's own outputs, before any pooling
        self.schema = token_rows(self.width)

    def options(self) -> dict[str, Any]:
        job = self.job
        return {"output": "tokens", "special_tokens": job.request.special_tokens is not False,
                "id_field": job.id_field, "block_tokens": int(job.block_tokens)}  # fmt: skip

    def prepare(self, items: Iterator[Item], manifest: dict[str, Any]) -> Iterator[Item]:
        """Each record with the ids and spans of its tokens (None when --skip-empty drops it)."""
        job, r = self.job, self.job.request
        while group := list(itertools.islice(items, SPAN_GROUP)):
            wanted = [k for k, item in enumerate(group) if not (job.skip_empty and not item[1].strip())]
            found: dict[int, Any] = {}
            if wanted:
                spans = self.encoder.token_spans(
                    [group[k][1] for k in wanted], prompt=r.prompt, prompt_name=r.prompt_name,
                    special_tokens=r.special_tokens is not False, long_documents=r.long_documents,
                )  # fmt: skip
                found = dict(zip(wanted, spans, strict=True))
            yield from ((*item, found.get(k)) for k, item in enumerate(group))

    def weight(self, item: Item) -> int:
        return 0 if item[3] is None else len(item[3][0])

    def encode(self, kept: list[tuple[int, Item]]) -> Parts:
        texts = [item[1] for _, item in kept]
        ids = [record_id(item[2][0], self.job.place, item[0]) for _, item in kept]
        states = self.encoder.run(self.job.request, texts, show_progress_bar=False) if kept else []
        docs = np.array([i for i, _ in kept], dtype=np.int64)
        return token_parts(docs, ids, [item[3] for _, item in kept], list(states), self.width)
