"""``bench ensemble``: score an ensemble of finished CNN runs on their common test subjects and log it as
one more MLflow run that ``bench report`` shows as a row.

The members must have been scored on the same split (and fold) and the same test subjects. The ensemble
averages their softmax on each subject's grid (``bench.predict.model``), optionally over the 8 axis
flips, and writes what a run writes (``predictions/``, ``metrics.csv``, ``summary.json``, the
per-subject table), tagged like a row: architecture ``ensemble:NAME``, framework/preprocess/... the
members' values joined with ``+``, the members' split, fold and sweep (its parent run). It reads the members'
subjects from their own outputs (``bench.predict.members``) and sends the store no more than its strictest member
did (``tracking.*`` switches, recorded as its params).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import ConfigError, DataError
from bench.evaluation.evaluate import evaluate_case, mean_test_metrics, summarize, write_summary
from bench.io import read_volume, write_volume
from bench.predict.inputs import Scan
from bench.predict.members import hidden, member_summary, strictest
from bench.predict.model import LoadedModel, ensemble_probabilities, flip_warnings, labels_of
from bench.privacy import Privacy, run_filter
from bench.tracking.models import download_model, run_record
from bench.tracking.runs import DESCRIPTION_TAG, PARENT_ID_TAG, Tracker, flatten

JOINED_TAGS = ("framework", "preprocess", "optimizer", "loss", "sampling", "profile", "data")


def _same(records: Sequence[dict[str, Any]], what: str, value: Any) -> Any:
    values = [value(r) for r in records]
    if any(v != values[0] for v in values):
        shown = ", ".join(f"{r['run_id']}: {v}" for r, v in zip(records, values, strict=True))
        raise ConfigError(f"the runs differ in {what} ({shown}); an ensemble is scored on one set of subjects",
                          fix="pass runs of the same split and fold")
    return values[0]


def ensemble_tags(name: str, records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Tags that make the ensemble a report row (see ``bench.evaluation.runs.CONFIG_KEYS``)."""
    tags = {k: "+".join(sorted({r["tags"].get(k, "") for r in records} - {""})) for k in JOINED_TAGS}
    first = records[0]["tags"]
    members = ",".join(r["run_id"] for r in records)
    tags.update({"table_row": "", "architecture": f"ensemble:{name}", "seed": "0", "label": name,
                 "split": first.get("split", ""), "fold": first.get("fold", ""),
                 "brainbench.ensemble.members": members,
                 DESCRIPTION_TAG: f"ensemble {name}: mean softmax of runs {members}"})
    return tags


def run_ensemble(run_ids: Sequence[str], name: str, uri: str, runs_dir: Path, *, flips: bool = False,
                 out: Path | None = None, outputs_dirs: Sequence[Path] = (),
                 data_root: Path | None = None) -> tuple[str | None, dict[str, Any]]:
    """Score and log the ensemble of ``run_ids``; return (its MLflow run id or None if already logged, summary).
    ``outputs_dirs``: where to look for the members' outputs (besides ``<runs_dir>/outputs``); ``data_root``: their
    data root on this machine, for members whose outputs are not here (``bench.predict.members``)."""
    if len(set(run_ids)) < 2:
        raise ConfigError(f"--runs {' '.join(run_ids)}: an ensemble needs at least two different runs")
    with tempfile.TemporaryDirectory(prefix="bench-ensemble-") as tmp:
        return _run(run_ids, name, uri, runs_dir, Path(tmp), flips, out, outputs_dirs, data_root)


def _check_files(test_ids: Sequence[str], files: dict[str, Any], run_id: str) -> None:
    """Every test subject's scan and reference is here (checked before the ensemble's run is opened)."""
    for subject in test_ids:
        entry = files[subject]
        for path in [*(entry.get("channels") or [entry["image"]]), entry["label"]]:
            if path is None or not Path(path).is_file():
                raise DataError(f"test subject {subject} of run {run_id}: file does not exist", path=path,
                                fix="run bench ensemble where the members' data is (or pass --data-root: "
                                "their data.root on this machine)")


def _privacy(records: Sequence[dict[str, Any]], switches: dict[str, bool], runs_dir: Path) -> Privacy:
    """The ensemble's filter: ``switches`` over the first member's data root, subjects and folders."""
    summary = records[0]["summary"]
    spec = summary.get("spec", {})
    root = str(spec.get("data", {}).get("root") or "")
    folders = {placeholder: str(spec[key]) for placeholder, key in (("<paths.cache>", "cache_dir"),
               ("<paths.outputs>", "outputs_dir")) if spec.get(key) and not hidden(str(spec[key]))}
    return run_filter(switches, data_root=root if root and Path(root).is_dir() else None,
                      folders={**folders, "<paths.runs>": str(runs_dir)},
                      subjects=summary["run"]["subject_files"], runs_dir=runs_dir)


def _run(run_ids: Sequence[str], name: str, uri: str, runs_dir: Path, work: Path, flips: bool,
         out: Path | None, outputs_dirs: Sequence[Path], data_root: Path | None) -> tuple[str | None, dict[str, Any]]:
    records = [run_record(run_id, uri, work / run_id) for run_id in run_ids]
    records = [{**r, "summary": member_summary(r, runs_dir, outputs_dirs=outputs_dirs, data_root=data_root)}
               for r in records]
    _same(records, "split", lambda r: (r["tags"].get("split"), r["tags"].get("fold")))
    test_ids = _same(records, "test subjects", lambda r: r["summary"]["run"]["test_subjects"])
    files = records[0]["summary"]["run"]["subject_files"]
    _check_files(test_ids, files, records[0]["run_id"])
    switches = strictest(records)
    models = [LoadedModel.load(download_model(f"runs:/{r['run_id']}", uri, work / r["run_id"] / "model"),
                               label=f"runs:/{r['run_id']}") for r in records]
    labels = models[0].info.labels  # ensemble_probabilities refuses members with another label set
    for warning in flip_warnings(models) if flips else []:
        print(f"warning: {warning}", file=sys.stderr)
    config_hash = hashlib.sha256(json.dumps({"members": sorted(run_ids), "flips": flips}).encode()).hexdigest()[:12]
    tracker = Tracker(records[0]["experiment"], uri, runs_dir)
    parent = records[0]["tags"].get(PARENT_ID_TAG) or tracker.parent_run("ensembles")
    params = {"members": json.dumps(list(run_ids)), "tta": "flips" if flips else "none", "name": name,
              **flatten(switches, "tracking.")}
    child = tracker.start_child(parent, f"ensemble-{name}", config_hash, params, ensemble_tags(name, records),
                                privacy=_privacy(records, switches, runs_dir))
    if child is None:
        return None, {}
    out = out or runs_dir / "outputs" / records[0]["experiment"] / f"ensemble-{name}-{config_hash}"
    partial = out.with_name(f".{out.name}.partial")
    try:
        with child:
            shutil.rmtree(partial, ignore_errors=True)
            rows, seconds = [], []
            for subject in test_ids:
                started = time.perf_counter()
                channels = [Path(p) for p in files[subject].get("channels") or [files[subject]["image"]]]
                case = Scan(channels[0], subject, tuple(channels[1:])).load()
                label_map = case.image.with_array(labels_of(ensemble_probabilities(models, case, flips=flips), labels))
                seconds.append(time.perf_counter() - started)
                write_volume(label_map, partial / "predictions" / f"{subject}.nii.gz")
                label_path = Path(files[subject]["label"])
                rows.extend(evaluate_case(label_map, read_volume(label_path), subject, ref_path=label_path,
                                          labels=labels))
            table = pd.DataFrame(rows)
            table.to_csv(partial / "metrics.csv", index=False)
            summary = summarize(rows)
            summary["labels"] = labels.record()
            summary["run"] = {"name": f"ensemble-{name}", "config_hash": config_hash, "row": None, "label": name,
                              "members": list(run_ids), "tta": "flips" if flips else "none",
                              "seconds_per_volume": float(np.mean(seconds)), "split": records[0]["summary"]["run"].get("split"),
                              "test_subjects": list(test_ids), "subject_files": {s: files[s] for s in test_ids}}
            write_summary(summary, partial / "summary.json")
            child.log_metrics({"seconds_per_volume": summary["run"]["seconds_per_volume"], **mean_test_metrics(summary, labels)})
            child.log_table(table, "per_subject_metrics.json")
            for file in ("summary.json", "metrics.csv"):
                child.log_artifact(partial / file)
            child.log_artifacts(partial / "predictions", "predictions")
            if out.exists():
                shutil.rmtree(out)
            partial.rename(out)
            return child.run_id, summary
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    raise AssertionError("unreachable")  # pragma: no cover
