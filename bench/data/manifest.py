"""What a run's data were: one row per subject with its split, files and their content digests.

Logged with each run (an MLflow dataset input per split, so the UI's Dataset column names the data and a
changed file changes the digest) and written to ``summary.json``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from bench.data.cohort import Cohort

CHUNK_BYTES = 1 << 20


def file_digest(path: Path | None) -> str:
    """sha256 of a file's bytes (``""`` for no file)."""
    if path is None:
        return ""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _channels_digest(first: Path | None, extra: tuple[Path, ...]) -> str:
    """The first channel's file digest; with more channel files, the digest of every channel file's digest (a
    changed second channel changes it too)."""
    if not extra:
        return file_digest(first)
    return hashlib.sha256(":".join(file_digest(p) for p in (first, *extra)).encode()).hexdigest()


def manifest(cohort: Cohort) -> pd.DataFrame:
    """One row per loaded subject: ``id, split, image, label, image_sha256, label_sha256`` (``image_sha256`` covers
    every input channel's file)."""
    rows = [
        {"id": case.id, "split": case.split, "image": str(case.image_path),
         "label": "" if case.label_path is None else str(case.label_path),
         "image_sha256": _channels_digest(case.image_path, case.extra_paths),
         "label_sha256": file_digest(case.label_path)}
        for case in cohort.cases
    ]
    return pd.DataFrame(rows, columns=["id", "split", "image", "label", "image_sha256", "label_sha256"])


def content_digest(frame: pd.DataFrame) -> str:
    """A digest of the subjects' ids and file contents (paths do not count), 16 hex digits."""
    digest = hashlib.sha256()
    for row in frame.sort_values("id").itertuples():
        digest.update(f"{row.id}:{row.image_sha256}:{row.label_sha256};".encode())
    return digest.hexdigest()[:16]
