"""Stop 60, corpus jobs, readers/writers and Ray: paths given as `pathlib.Path`, ..."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TEXTS = ["a cat sleeps", "a dog barks", "red cars race", "the owl hoots", "", "green fish swim"]


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return source


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_a_job_of_paths_calibrates_as_a_job_of_strings(small, tmp_path, precision):
    """`EmbedJob(Path(...), Path(...))` ran every kind but int8/uint8, whose calibration named its sample with
    ``source.rstrip("/")``: an AttributeError after the sample was embedded. It now writes what the same job
    of strings writes (codes and calibration file), byte for byte."""
    from tokenpool.jobs import EmbedJob, EncodeRequest, embed_corpus

    source, request = _source(tmp_path), EncodeRequest(precision=precision, calibration_size=4)
    for name, kind in (("str", str), ("path", Path)):
        embed_corpus(small, EmbedJob(kind(source), kind(tmp_path / f"{name}.npy"), request), log=lambda m: None)
    assert (tmp_path / "path.npy").read_bytes() == (tmp_path / "str.npy").read_bytes()
    sidecar = "{}.npy.calibration.json"
    assert (tmp_path / sidecar.format("path")).read_bytes() == (tmp_path / sidecar.format("str")).read_bytes()
    assert np.load(tmp_path / "path.npy").shape == (len(TEXTS), int(small.dimension))


def test_ray_embed_parquet_takes_paths(ray_session, tiny_bert_folder, tmp_path):
    """`embed_parquet(Path(...), Path(...))` raised TypeError ("argument of type 'PosixPath' is not iterable")
    before Ray started. Paths are read as the strings they name: the same rows as a call with strings."""
    pytest.importorskip("transformers")
    import pyarrow.parquet as pq

    from tokenpool.integrations.ray import embed_parquet

    source, options = _source(tmp_path), {"model": str(tiny_bert_folder), "concurrency": 1, "max_length": 16}
    embed_parquet(str(source), str(tmp_path / "str"), **options)
    embed_parquet(source, tmp_path / "path", **options)
    assert pq.read_table(tmp_path / "path").equals(pq.read_table(tmp_path / "str"))
    assert (tmp_path / "path" / "_SUCCESS").is_file()
