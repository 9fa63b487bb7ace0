"""The calibration that travels with an int8/uint8 output: a sidecar ``OUT.calibration.json``, and parquet
schema metadata (with the precision and dimension of every compact output)."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.quantize import Calibration
from ..errors import shown_name
from .formats import format_for_suffix
from .readers import parquet_file
from .workdir import beside
from .writers import WRITERS

__all__ = [
    "CALIBRATION_SUFFIX", "calibration_file_for", "calibration_uri_for", "read_calibration",
    "parquet_metadata", "rows_metadata",
]  # fmt: skip

CALIBRATION_SUFFIX = ".calibration.json"
META_PRECISION = b"tokenpool.precision"
META_DIMENSION = b"tokenpool.dimension"
META_CALIBRATION = b"tokenpool.calibration"
META_VOCABULARY = b"tokenpool.vocabulary_size"


def calibration_file_for(output: str | os.PathLike[str]) -> Path:
    """Where an int8/uint8 output's calibration is written: ``<output>.calibration.json``."""
    return beside(output, CALIBRATION_SUFFIX)


def calibration_uri_for(output_uri: str) -> str:
    """`calibration_file_for` of an output named by a URI that pathlib would mangle (``s3://b/out`` →
    ``s3:/b/out``) or a local path: ``<output_uri>.calibration.json``, a folder output's trailing slash
    dropped. The name Ray's ``embed_parquet`` writes and ``tokenpool embed --ray`` reports."""
    return output_uri.rstrip("/") + CALIBRATION_SUFFIX


def read_calibration(output: str | os.PathLike[str]) -> Calibration:
    """The calibration of an int8/uint8 output written by ``tokenpool embed``: for parquet its
    ``tokenpool.calibration`` schema metadata (written with the rows, so it always describes them), else its
    sidecar file (a job killed while placing its output leaves none, never an earlier run's)."""
    sidecar = calibration_file_for(output)
    shown = shown_name(str(output))  # not `where`: an output named "-" is a file, not stdin
    if format_for_suffix(str(output), WRITERS) == "parquet" and Path(output).is_file():
        metadata = parquet_file(output).schema_arrow.metadata or {}
        if META_CALIBRATION in metadata:
            return Calibration.from_json(metadata[META_CALIBRATION], f"{shown} (parquet metadata)")
    if sidecar.is_file():
        return Calibration.load(sidecar)
    raise FileNotFoundError(f"{shown}: no calibration beside it ({shown_name(sidecar.name)}) or in its metadata")


def parquet_metadata(
    precision: str, dimension: int, calibration: Calibration | None = None
) -> dict[bytes, bytes]:
    """Schema metadata of a dense output: precision, model dimension and (int8/uint8) the calibration."""
    metadata = {META_PRECISION: precision.encode(), META_DIMENSION: str(int(dimension)).encode()}
    if calibration is not None:
        metadata[META_CALIBRATION] = calibration.to_json().encode()
    return metadata


def rows_metadata(
    precision: str, dimension: int, *, sparse: bool = False, calibration: Calibration | None = None
) -> dict[bytes, bytes] | None:
    """Schema metadata of pooled rows, for `tokenpool embed`'s parquet and Ray's alike: sparse rows name their
    vocabulary, codes their precision, dimension and calibration (`parquet_metadata`), float32 vectors none."""
    if sparse:
        return {META_VOCABULARY: str(int(dimension)).encode()}
    return None if precision == "float32" else parquet_metadata(precision, dimension, calibration)
