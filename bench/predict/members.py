"""``bench ensemble``'s members as they ran, and what the ensemble may send.

A member's ``summary.json`` names its test subjects and their files. The copy in the run's own outputs folder
(``<paths.outputs>/<experiment>/<run name>-<config hash>/``) is never filtered and is read when it is on this
machine; the store's copy is filtered when the run was made with ``tracking.log_paths=false`` (files as
``<data.root>/...``) or ``tracking.hash_subject_ids=true`` (ids as ``sub-<hash>``), and is then read against a data
root given on the command line (``--data-root``): placeholders resolved, hashed ids matched back by hashing that
root's subjects with the same salt. The ensemble sends no more than its strictest member did.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.data.discovery import discover
from bench.errors import DataError
from bench.privacy import HASHED_ID, HIDDEN, SALT_ENV, SALT_FILE, hashed_id, known_salt
from bench.spec import TrackingSpec
from bench.tracking.runs import TAG_HASH

SWITCH_PARAMS = "tracking."
"""The params a run records its switches as (``tracking.log_images``, ...)."""
DEFAULT_SWITCHES = TrackingSpec(uri=None, experiment="", sweep="").record()
"""The switches of a run that set none (and of one made before they were recorded)."""


def switches(params: Mapping[str, str]) -> dict[str, bool]:
    """A run's privacy switches as its params record them (one made before they were recorded: the defaults)."""
    return {key: params.get(f"{SWITCH_PARAMS}{key}", str(default)) == "True"
            for key, default in DEFAULT_SWITCHES.items()}


def strictest(records: Sequence[Mapping[str, Any]]) -> dict[str, bool]:
    """The switches that send no more than any member sent: a switch that any member turned from its default
    (``log_images=false``, ``log_paths=false``, ``hash_subject_ids=true``) is turned for the ensemble."""
    found = [switches(r["params"]) for r in records]
    return {key: default if all(f[key] == default for f in found) else not default
            for key, default in DEFAULT_SWITCHES.items()}


def member_summary(record: Mapping[str, Any], runs_dir: Path, *, outputs_dirs: Sequence[Path] = (),
                   data_root: Path | None = None) -> dict[str, Any]:
    """The member's ``summary.json`` with its subjects' real ids and files: its own outputs folder's (looked for in
    ``outputs_dirs``, the folder the store's copy records and ``<runs_dir>/outputs``), else the store's when that
    is unfiltered, else the store's read against ``data_root``.

    Raises:
        DataError: A filtered summary with no local copy and no ``data_root``; one that ``data_root`` does not
            explain; hashed ids and no salt here, or another salt than the run's.
    """
    stored: dict[str, Any] = record["summary"]
    recorded = str(stored.get("spec", {}).get("outputs_dir") or "")
    places = [*outputs_dirs, *([Path(recorded)] if recorded and not hidden(recorded) else []), runs_dir / "outputs"]
    folder = f"{record['name']}-{record['tags'].get(TAG_HASH, '')}"
    on = switches(record["params"])
    for outputs in dict.fromkeys(places):
        local = _read(outputs / record["experiment"] / folder / "summary.json")
        if local is not None and local.get("run", {}).get("mlflow_run_id") == record["run_id"]:
            if on["hash_subject_ids"]:
                _check_salt(record, local, runs_dir)
            return local
    if on["log_paths"] and not on["hash_subject_ids"]:
        return stored
    if data_root is None:
        sent = "<data.root>/... paths" if not on["log_paths"] else "hashed subject ids"
        raise DataError(
            f"run {record['run_id']} ({record['name']}) sent the store its summary.json with {sent} (tracking."
            f"{'log_paths=false' if not on['log_paths'] else 'hash_subject_ids=true'}), and its own is in none of "
            f"{', '.join(str(p / record['experiment'] / folder) for p in dict.fromkeys(places))}",
            fix="run bench ensemble where the members' outputs are (--runs-dir: their paths.runs, or --sweep with "
            "their overrides), or pass --data-root: their data.root on this machine")
    return _read_against(record, data_root, runs_dir)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def hidden(text: str) -> bool:
    """Whether ``text`` is a path as a filter left it (``<data.root>/...``, ``***/name``), not one to open."""
    return text.startswith(("<", HIDDEN))


def _salt(record: Mapping[str, Any], runs_dir: Path) -> str:
    salt = known_salt(runs_dir)
    if salt is None:
        raise DataError(f"run {record['run_id']} ({record['name']}) sent its subject ids hashed, and there is no "
                        f"salt here to hash the ensemble's with (${SALT_ENV} is unset)", path=runs_dir / SALT_FILE,
                        fix=f"pass --runs-dir: the members' paths.runs, or set {SALT_ENV} to the members' salt")
    return salt


def _check_salt(record: Mapping[str, Any], local: Mapping[str, Any], runs_dir: Path) -> None:
    """The salt here hashes the member's test subjects as the store has them (else the ensemble's row would not
    pair its subjects with the members' in a report)."""
    salt = _salt(record, runs_dir)
    ours = sorted(hashed_id(s, salt) for s in local["run"]["test_subjects"])
    if ours != sorted(record["summary"]["run"]["test_subjects"]):
        raise DataError(f"run {record['run_id']} ({record['name']}) hashed its subject ids with another salt than "
                        f"this one (${SALT_ENV} or {runs_dir / SALT_FILE})",
                        fix=f"pass --runs-dir: the members' paths.runs, or set {SALT_ENV} to the members' salt")


def _read_against(record: Mapping[str, Any], data_root: Path, runs_dir: Path) -> dict[str, Any]:
    """The store's filtered summary with ``<data.root>`` as ``data_root`` and hashed ids as ``data_root``'s."""
    stored: dict[str, Any] = record["summary"]
    subjects = [found.id for found in discover(data_root).subjects]
    hashed = switches(record["params"])["hash_subject_ids"]
    names = {hashed_id(s, _salt(record, runs_dir)): s for s in subjects} if hashed else {}
    spec = stored.get("spec", {})
    recorded = str(spec.get("data", {}).get("root") or "")  # a path as it was where ids alone were hashed
    roots = ["<data.root>", *([recorded] if recorded and not hidden(recorded) else [])]

    def restore(text: str) -> str:
        for root in roots:
            if text == root or text.startswith(root.rstrip("/") + "/"):
                text = str(data_root) + text[len(root.rstrip("/")):]
                break
        return HASHED_ID.sub(lambda m: names.get(m.group(0), m.group(0)), text)

    run = stored["run"]
    tests = [names.get(s, s) for s in run["test_subjects"]]
    unknown = [s for s, found in zip(run["test_subjects"], tests, strict=True) if found not in subjects]
    if unknown:
        raise DataError(f"run {record['run_id']} ({record['name']}) tested {', '.join(unknown)}: none of --data-root's "
                        f"subjects{' (hashed with the salt here)' if hashed else ''}", path=data_root,
                        fix=f"pass the members' data.root, and {SALT_ENV} or --runs-dir as when they ran")
    entries = {names.get(k, k): v for k, v in run["subject_files"].items()}
    files = {s: {k: None if v is None else [restore(p) for p in v] if isinstance(v, list) else restore(v)
                 for k, v in entries[s].items()} for s in tests}
    for path in (p for entry in files.values() for v in entry.values() for p in (v if isinstance(v, list) else [v])):
        if path is not None and (hidden(path) or f"{HIDDEN}/" in path):
            raise DataError(f"run {record['run_id']} ({record['name']}) read {path}: outside its data root, so its "
                            "path is not in the store",
                            fix="run bench ensemble where the members' outputs are (--runs-dir: their paths.runs)")
    data = {**spec.get("data", {}), "root": str(data_root)}
    return {**stored, "spec": {**spec, "data": data}, "run": {**run, "test_subjects": tests, "subject_files": files}}
