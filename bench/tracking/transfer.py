"""Move finished runs between tracking stores: an export file of their records, without images or weights.

An export holds each FINISHED child run of one experiment (and its sweep's parent run): run name, start and end
time, params, tags, every metric's full history, and the small text records that ``bench report`` and ``bench
compare`` read (``EXPORTED_ARTIFACTS``). Predictions, overlays, checkpoints and logged models stay behind: an
export is small, can be published beside a results page or kept in git, and holds no image data.

Importing it into another store (a sqlite folder or a server) recreates those runs under the same experiment
name, tags and config hashes: a run whose hash is already FINISHED there is skipped, so importing twice adds
nothing, and a sweep pointed at the store afterwards skips the imported configurations (it resumes). This is how
sweeps run on machines that share no server (or in sessions that keep no disk) are merged into one table.
"""

from __future__ import annotations

import datetime
import functools
import gzip
import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from bench.errors import BenchError, DataError
from bench.io import write_atomic
from bench.tracking.calls import retry_call
from bench.tracking.runs import PARENT_ID_TAG, TAG_HASH, TAG_KIND, TAG_SWEEP, Tracker

EXPORT_FORMAT = "brainbench-runs"
EXPORT_VERSION = 1
EXPORTED_ARTIFACTS = ("summary.json", "metrics.csv", "history.csv", "per_subject_metrics.json")
"""The run's text records carried by an export (what report and compare read); nothing else leaves the store."""
_RUN_KEYS = ("run_name", "status", "start_time", "end_time", "params", "tags", "metrics", "artifacts")
_BATCH = 900  # MLflow takes at most 1000 metrics per log_batch call


@dataclass
class ImportResult:
    """What an import did: run names created, and those skipped because their hash was already FINISHED."""

    experiment: str
    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _paged(tracker: Tracker, filter_string: str) -> Iterator[Any]:
    """Every run of the tracker's experiment matching ``filter_string`` (all pages)."""
    token = None
    while True:
        try:
            page = retry_call(functools.partial(tracker.client.search_runs, [tracker.experiment_id], filter_string,
                                            max_results=1000, page_token=token))
        except MlflowException as exc:
            raise BenchError(f"MLflow cannot search with the filter {filter_string!r}: {exc.message}",
                             fix="write it as MLflow's search syntax, e.g. \"params.`data.fold` = '0'\"") from exc
        yield from page
        token = page.token
        if not token:
            return


def _run_record(tracker: Tracker, run: Any, artifacts: Sequence[str]) -> dict[str, Any]:
    """One run as a JSON-ready record: identity, params, tags, metric histories and the named text artifacts."""
    client = tracker.client
    metrics: dict[str, list[list[float]]] = {}
    for key in sorted(run.data.metrics):
        history = retry_call(functools.partial(client.get_metric_history, run.info.run_id, key))
        metrics[key] = [[m.step, m.timestamp, m.value] for m in sorted(history, key=lambda m: (m.step, m.timestamp))]
    texts: dict[str, str] = {}
    present = {info.path for info in retry_call(functools.partial(client.list_artifacts, run.info.run_id))}
    with tempfile.TemporaryDirectory() as scratch:
        for name in artifacts:
            if name in present:
                local = Path(retry_call(functools.partial(client.download_artifacts, run.info.run_id, name, scratch)))
                texts[name] = local.read_text()
    return {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
            "start_time": run.info.start_time, "end_time": run.info.end_time, "params": dict(run.data.params),
            "tags": dict(run.data.tags), "metrics": metrics, "artifacts": texts}


def export_runs(tracker: Tracker, filter_string: str = "") -> dict[str, Any]:
    """The experiment's FINISHED child runs (narrowed by an MLflow ``filter_string``) and their parents, as the
    export document (see the module docstring)."""
    where = f"tags.`{TAG_KIND}` = 'child' and attributes.status = 'FINISHED'"
    if filter_string.strip():
        where += f" and {filter_string}"
    children = sorted(_paged(tracker, where), key=lambda run: run.info.start_time)
    parent_ids = {run.data.tags.get(PARENT_ID_TAG) for run in children} - {None}
    parents = [run for run in _paged(tracker, f"tags.`{TAG_KIND}` = 'parent'") if run.info.run_id in parent_ids]
    return {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "experiment": tracker.experiment,
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "filter": filter_string,
        "parents": [_run_record(tracker, run, ()) for run in parents],
        "runs": [_run_record(tracker, run, EXPORTED_ARTIFACTS) for run in children],
    }


def write_export(document: Mapping[str, Any], path: Path) -> None:
    """Write the export document as JSON (gzip-compressed when ``path`` ends in ``.gz``), atomically."""
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    data = gzip.compress(text.encode(), mtime=0) if path.suffix == ".gz" else text.encode()
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def read_export(path: Path) -> dict[str, Any]:
    """The export document in ``path``, checked: one ``DataError`` naming the file and the problem otherwise."""
    if not path.is_file():
        raise DataError("no such export file", path=path, fix="give the file written by `bench runs export`")
    raw = path.read_bytes()
    try:
        text = gzip.decompress(raw).decode() if raw[:2] == b"\x1f\x8b" else raw.decode()
        document = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, EOFError) as exc:
        raise DataError(f"not a brainbench runs export (unreadable JSON: {exc})", path=path,
                        fix="give the file written by `bench runs export`") from exc
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise DataError(f"not a brainbench runs export (its 'format' is not {EXPORT_FORMAT!r})", path=path,
                        fix="give the file written by `bench runs export`")
    if document.get("version") != EXPORT_VERSION:
        raise DataError(f"runs export version {document.get('version')!r} is not supported (this brainbench reads "
                        f"version {EXPORT_VERSION})", path=path, fix="export it again with this brainbench")
    for section in ("parents", "runs"):
        records = document.get(section)
        if not isinstance(records, list):
            raise DataError(f"runs export has no list {section!r}", path=path, fix="export it again")
        for index, record in enumerate(records):
            missing = [key for key in _RUN_KEYS if not isinstance(record, dict) or key not in record]
            if missing:
                raise DataError(f"{section}[{index}] lacks {', '.join(missing)}", path=path, fix="export it again")
            if section == "runs" and not record["tags"].get(TAG_HASH):
                raise DataError(f"runs[{index}] ({record['run_name']}) has no {TAG_HASH} tag", path=path,
                                fix="export brainbench runs only")
    if not isinstance(document.get("experiment"), str) or not document["experiment"]:
        raise DataError("runs export names no experiment", path=path, fix="export it again")
    return document


def _log_record(tracker: Tracker, run_id: str, record: Mapping[str, Any]) -> None:
    """Params, metric histories and text artifacts of ``record`` onto the new run ``run_id``."""
    client = tracker.client
    params = [Param(key, str(value)) for key, value in record["params"].items()]
    for start in range(0, len(params), 100):
        retry_call(functools.partial(client.log_batch, run_id, params=params[start:start + 100]))
    points = [Metric(key, float(value), int(timestamp), int(step))
              for key, history in record["metrics"].items() for step, timestamp, value in history]
    for start in range(0, len(points), _BATCH):
        retry_call(functools.partial(client.log_batch, run_id, metrics=points[start:start + _BATCH]))
    with tempfile.TemporaryDirectory() as scratch:
        for name, text in record["artifacts"].items():
            if name not in EXPORTED_ARTIFACTS:
                continue
            local = Path(scratch) / name
            local.write_text(text)
            tracker.log_artifact(run_id, local)


def _create(tracker: Tracker, record: Mapping[str, Any], tags: Mapping[str, str]) -> str:
    """A new run of ``record`` with ``tags``, its records logged and its original status and end time."""
    client = tracker.client
    run = retry_call(functools.partial(client.create_run, tracker.experiment_id, start_time=record["start_time"],
                                   tags=dict(tags), run_name=record["run_name"]))
    run_id = str(run.info.run_id)
    try:
        _log_record(tracker, run_id, record)
    except BaseException:
        retry_call(functools.partial(client.delete_run, run_id))  # never a half-imported run that looks real
        raise
    retry_call(functools.partial(client.set_terminated, run_id, record["status"], record["end_time"]))
    return run_id


def import_runs(tracker: Tracker, document: Mapping[str, Any]) -> ImportResult:
    """Recreate the export's runs in the tracker's experiment; runs whose config hash is FINISHED there are
    skipped. Parents are matched by their sweep name (created when missing)."""
    result = ImportResult(experiment=tracker.experiment)
    parents: dict[str, str] = {}
    for record in document["parents"]:
        sweep = record["tags"].get(TAG_SWEEP, "")
        parents[record["run_id"]] = tracker.parent_run(sweep, record["params"])
    for record in document["runs"]:
        config_hash = record["tags"][TAG_HASH]
        if tracker.finished_run(config_hash) is not None:
            result.skipped.append(record["run_name"])
            continue
        tags = {key: str(value) for key, value in record["tags"].items() if not key.startswith("mlflow.")
                or key in ("mlflow.note.content",)}
        parent = parents.get(record["tags"].get(PARENT_ID_TAG, ""))
        if parent is not None:
            tags[PARENT_ID_TAG] = parent
        tags["brainbench.imported_from"] = str(record["run_id"])
        _create(tracker, record, tags)
        result.imported.append(record["run_name"])
    return result
