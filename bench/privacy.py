"""What a run may send to the tracking store: ``tracking.log_images``, ``tracking.log_paths`` and
``tracking.hash_subject_ids`` (clinical data on a shared server).

A ``Privacy`` is the filter ``bench.tracking`` applies to everything it sends (params, tags, dataset inputs,
tables, artifacts): image files dropped, absolute paths replaced by placeholders (``<data.root>/IBSR_01/...``),
subject ids replaced by a salted hash (``sub-<12 hex>``). The salt is ``$BENCH_ID_SALT`` when set (one secret for
every machine that logs to a store), else a random one written once to ``<paths.runs>/subject-id.salt`` (0600):
the same subject has the same hash in every run that shares it, so reports still pair subjects. Local outputs are
never filtered. Pure: this module imports no MLflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.data.discovery import discover

SALT_ENV = "BENCH_ID_SALT"
SALT_FILE = "subject-id.salt"
HIDDEN = "***"
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".png", ".jpg", ".jpeg", ".svg", ".pdf", ".gif")
"""Files ``tracking.log_images=false`` keeps out of the store: volumes and pictures of any kind."""
TEXT_SUFFIXES = (".json", ".csv", ".log", ".txt", ".yaml", ".yml", ".md")
"""Files whose text is filtered before they are sent (any other file, such as weights, is sent as it is)."""
_ABSOLUTE = re.compile(r"(?<![\w.>~/:\-])/(?:[^\s/'\"<>,;:()\[\]{}]+/)+[^\s/'\"<>,;:()\[\]{}]*")
"""An absolute path of two or more parts that no known prefix covered (``/home/me/scans/x.nii.gz``)."""
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
ID_COLUMNS = ("id", "case", "subject")
"""Table columns of subject ids: hashed even when the ids look like numbers."""


HASH_PREFIX, HASH_DIGITS = "sub-", 12
HASHED_ID = re.compile(rf"{HASH_PREFIX}[0-9a-f]{{{HASH_DIGITS}}}")
"""A subject id as :func:`hashed_id` stores it."""


def hashed_id(subject: str, salt: str) -> str:
    """The stored name of ``subject``: ``sub-`` and 12 hex digits of sha256(salt:subject)."""
    return HASH_PREFIX + hashlib.sha256(f"{salt}:{subject}".encode()).hexdigest()[:HASH_DIGITS]


def known_salt(runs_dir: Path) -> str | None:
    """``$BENCH_ID_SALT``, else the salt of ``<runs_dir>/subject-id.salt`` if there is one (creates nothing)."""
    if os.environ.get(SALT_ENV):
        return os.environ[SALT_ENV]
    path = Path(runs_dir) / SALT_FILE
    return path.read_text().strip() if path.is_file() else None


def subject_salt(runs_dir: Path) -> str:
    """``$BENCH_ID_SALT``, else the salt of ``<runs_dir>/subject-id.salt`` (created once, mode 0600)."""
    if os.environ.get(SALT_ENV):
        return os.environ[SALT_ENV]
    path = Path(runs_dir) / SALT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(handle, "w") as out:  # two workers racing: the loser reads the winner's file above
        out.write(secrets.token_hex(32) + "\n")
    return path.read_text().strip()


def run_filter(switches: Mapping[str, bool], *, data_root: str | None, folders: Mapping[str, str],
               subjects: Iterable[str], runs_dir: Path) -> Privacy:
    """The filter of a run with ``switches`` (``TrackingSpec.record()``'s keys: ``bench.run``'s own, ``bench
    ensemble``'s the strictest of its members'): ``data_root`` as ``<data.root>``, ``folders`` (placeholder ->
    folder) and the home folder as ``~``; ``subjects`` and, when ids are hashed, every subject the data root holds
    (loaded by this run or not), hashed with the salt of ``runs_dir`` (:func:`subject_salt`)."""
    subjects = set(subjects)
    if switches["hash_subject_ids"] and data_root is not None:
        subjects |= {found.id for found in discover(data_root).subjects}
    places = {**({"<data.root>": data_root} if data_root is not None else {}), **folders, "~": str(Path.home())}
    return Privacy.build(log_images=switches["log_images"], log_paths=switches["log_paths"],
                         hash_ids=switches["hash_subject_ids"], folders=places, subjects=subjects,
                         salt=subject_salt(runs_dir) if switches["hash_subject_ids"] else None)


@dataclass(frozen=True)
class Privacy:
    """A filter for what leaves for the store; the default one lets everything through unchanged.

    Attributes:
        log_images: Image files (``IMAGE_SUFFIXES``) are sent.
        prefixes: ``(absolute path, placeholder)`` pairs, longest path first; with any, every other absolute path
            is hidden too (``***/<file name>``).
        ids: ``(subject id, hashed id)`` pairs.
    """

    log_images: bool = True
    prefixes: tuple[tuple[str, str], ...] = ()
    ids: tuple[tuple[str, str], ...] = ()

    @classmethod
    def build(cls, *, log_images: bool, log_paths: bool, hash_ids: bool, folders: Mapping[str, str],
              subjects: Iterable[str], salt: str | None) -> Privacy:
        """The filter for a run: ``folders`` maps a placeholder (``<data.root>``) to its folder; ``subjects`` are
        the data's ids (hashed with ``salt`` when ``hash_ids``)."""
        prefixes: dict[str, str] = {}
        if not log_paths:
            for placeholder, folder in folders.items():
                for form in (str(folder).rstrip("/"), str(Path(folder).resolve())):
                    if form.startswith("/") and len(form) > 1:
                        prefixes.setdefault(form, placeholder)
        pairs = ((s, hashed_id(s, salt or "")) for s in sorted(set(subjects), key=lambda s: (-len(s), s)))
        return cls(log_images, tuple(sorted(prefixes.items(), key=lambda p: -len(p[0]))),
                   tuple(pairs) if hash_ids else ())

    @property
    def active(self) -> bool:
        return not self.log_images or bool(self.prefixes or self.ids)

    def text(self, value: str) -> str:
        """``value`` with known folders as placeholders, other absolute paths hidden, subject ids hashed."""
        if not self.active:
            return value
        if self.prefixes:
            for folder, placeholder in self.prefixes:
                value = value.replace(folder, placeholder)
            value = _ABSOLUTE.sub(lambda m: f"{HIDDEN}/{m.group(0).rstrip('/').rsplit('/', 1)[-1]}", value)
        return self._ids_in(value)

    def _ids_in(self, value: str) -> str:
        for subject, hashed in self.ids:
            edge = "A-Za-z0-9." if _NUMBER.match(subject) else "A-Za-z0-9"  # an id "7" is not the 7 of "0.7"
            value = re.sub(rf"(?<![{edge}]){re.escape(subject)}(?![{edge}])", hashed, value)
        return value

    def cell(self, value: str) -> str:
        """One JSON string or text cell: a subject id as its hash, other text as ``text``."""
        exact = dict(self.ids).get(value)
        return exact if exact is not None else self.text(value)

    def value(self, data: Any) -> Any:
        """``data`` (JSON-like) with every string and mapping key filtered; numbers untouched."""
        if not self.active:
            return data
        if isinstance(data, str):
            return self.cell(data)
        if isinstance(data, Mapping):
            return {self.cell(str(k)) if isinstance(k, str) else k: self.value(v) for k, v in data.items()}
        if isinstance(data, (list, tuple)):
            return [self.value(v) for v in data]
        return data

    def frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with its id columns (``ID_COLUMNS``) hashed, its text cells and column names filtered; numbers
        (also as text, in a table read as strings) are left as they are."""
        if not self.active:
            return frame
        out = frame.rename(columns=lambda c: self.cell(c) if isinstance(c, str) else c)
        for column in out.columns:
            ids = str(column).lower() in ID_COLUMNS
            if ids or not pd.api.types.is_numeric_dtype(out[column]):
                out[column] = out[column].map(lambda v, ids=ids: self._table_cell(v, ids))
        return out

    def _table_cell(self, value: Any, ids: bool) -> Any:
        if not isinstance(value, str) or (not ids and _NUMBER.match(value)):
            return value
        return self.cell(value)

    def sends(self, path: Path) -> bool:
        """Whether the file ``path`` may go to the store."""
        return self.log_images or not str(path).lower().endswith(IMAGE_SUFFIXES)

    def rewrites(self, path: Path) -> bool:
        """Whether ``path`` is sent as a filtered copy (a text file while paths or ids are hidden)."""
        return bool(self.prefixes or self.ids) and str(path).lower().endswith(TEXT_SUFFIXES)

    def copy(self, path: Path, folder: Path) -> Path:
        """A filtered copy of the text file ``path`` in ``folder`` (same name); JSON and CSV filtered cell by cell."""
        target = Path(folder) / Path(path).name
        name = str(path).lower()
        if name.endswith(".json"):
            try:
                target.write_text(json.dumps(self.value(json.loads(Path(path).read_text())), indent=2) + "\n")
                return target
            except ValueError:
                pass
        if name.endswith(".csv") and Path(path).stat().st_size:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            self.frame(table).to_csv(target, index=False)
            return target
        target.write_text(self.text(Path(path).read_text(errors="replace")))
        return target
