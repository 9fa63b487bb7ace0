"""Review of stop 58's model/jobs branch: a chunk job with empty_documents='whole' checks a blank record's spans
with the other records, before the model loads, as `Encoder.encode_chunks` checks them."""

from __future__ import annotations

import json

import pytest

from tokenpool.errors import CorpusError, OptionError
from tokenpool.jobs import EmbedJob, EncodeRequest, check_job


def _job(tmp_path, spans) -> EmbedJob:
    records = [{"text": "hello world", "spans": [[0, 5]]}, {"text": "  ", "spans": spans}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    request = EncodeRequest(chunks="spans", empty_documents="whole")
    return EmbedJob(str(src), str(tmp_path / "out.npy"), request)


@pytest.mark.parametrize("spans", [None, [[0, 5]], "[0, 1]"])
def test_a_blank_records_bad_spans_are_refused_by_the_check(small, tmp_path, spans):
    """encode_chunks(["  "], chunks="spans", spans=[s], empty_documents="whole") refuses these spans; the job's
    check (which runs before the model loads) passed them, so the run failed only when it reached the record."""
    with pytest.raises(OptionError, match="document 0"):
        small.encode_chunks(["  "], chunks="spans", spans=[spans], empty_documents="whole")
    with pytest.raises(CorpusError, match=r"in\.jsonl, line 2"):
        check_job(_job(tmp_path, spans))


def test_a_blank_record_embedded_whole_may_have_no_spans(tmp_path):
    """An empty list is accepted for a blank text embedded whole (docs/long-documents.md), as encode_chunks does."""
    check_job(_job(tmp_path, []))
