"""Which MLflow runs make each report row: one split family per report, per (seed, fold) the newest
FINISHED run of a configuration, and the per-subject metrics they logged.

A configuration is what ran: its effective settings (the run's params, which are its record) without the seed
and the test fold, which pool (``identity_params``), together with the tag tuple ``CONFIG_KEYS`` (row, model,
data, optimizer, loss, framework, sampling, profile, label). Two configurations of one row that differ in any
other setting (``sampling.region``, ``train.precision``, a width) are two rows, each named by the settings that
tell it apart (``ConfigResult.variant``); nothing replaces anything. Runs without a ``fold`` tag are one fold.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError, ConfigError

FAILED_STATUSES = ("FAILED", "KILLED")
CONFIG_KEYS = ("row", "architecture", "preprocess", "optimizer", "loss", "framework", "sampling", "profile", "label")
POOLED_PARAMS = ("seed", "train.seed", "data.split.fold")
"""Params that differ between the runs of one configuration: its seeds and test folds pool."""
ENVIRONMENT_PARAMS = "env."
"""Params that say where a run ran (``env.version.torch``, ``env.host``, ``env.cpu``): not settings."""
PRIVACY_PARAMS = "tracking."
"""What a run sent to the store (``tracking.log_images``, ...): not a setting of the method, so not its identity."""
COST_METRICS = ("fit_seconds", "seconds_per_volume", "peak_memory_mb", "preprocess_seconds")


@dataclass
class ConfigResult:
    """All FINISHED runs of one configuration (over seeds and folds), with their per-subject metrics."""

    key: dict[str, str]
    label: str
    run_ids: list[str]
    seeds: list[str]
    per_subject: pd.DataFrame  # columns: run_id, seed, fold, case, class, dice, avd, hd, hd95, assd
    predictions: dict[str, Path]  # run_id -> local predictions folder (downloaded on demand)
    summary: dict[str, Any]  # the first run's summary.json
    folds: list[str] = field(default_factory=list)
    not_converged: int = 0  # runs whose epochs ran out while still improving (tag brainbench.convergence)
    unlearned: dict[str, int] = field(default_factory=dict)  # class -> runs whose validation Dice ended at 0
    params: dict[str, str] = field(default_factory=dict)  # the configuration's settings (identity_params)
    variant: str = ""  # the settings that tell it from another configuration of the same row ("" if none)
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per run: costs and where it ran

    @property
    def name(self) -> str:
        """``row: architecture framework`` (and the variant's settings), for figures."""
        name = f"{self.key['row'] or '-'}: {self.key['architecture']} {self.key['framework']}"
        return f"{name} · {self.variant}" if self.variant else name


def _tag(run: pd.Series, name: str, default: str = "") -> str:
    """A run's tag as text; a tag the run lacks (missing column, NaN, empty) gives ``default``."""
    value = run.get(f"tags.{name}")
    return default if value is None or (isinstance(value, float) and np.isnan(value)) or value == "" else str(value)


_FOLD_SPLIT = re.compile(r"^fold\d+of(\d+)-seed(\d+)$")


def split_family(run: pd.Series) -> str:
    """The split a run was scored on, its folds merged: ``holdout``, ``5-fold (fold_seed 0)``, ... (``""``
    for runs made before runs were tagged with their split)."""
    split = _tag(run, "split")
    found = _FOLD_SPLIT.match(split)
    return f"{found.group(1)}-fold (fold_seed {found.group(2)})" if found else split


def select_runs(tracker: Any, split: str | None = None, pooled: Sequence[str] = POOLED_PARAMS
                ) -> tuple[dict[tuple[str, ...], list[pd.Series]], str]:
    """The runs that make each configuration: per (seed, fold) the newest FINISHED one, all of one split.

    Rows are only comparable on the same subjects, so a report covers one split family: ``split``, or that
    of the newest run. Returns the groups and a note naming the runs of other splits it leaves out (``""``
    when none). ``pooled``: the params whose values differ between the runs of one configuration (default the
    seed and the test fold; without the seed, each seed is its own configuration). Queries only.
    """
    every_run = tracker.runs_frame(status=None)  # one query: the finished runs make the table, failed ones a note
    status = every_run["status"] if "status" in every_run else pd.Series(dtype=str)
    frame = every_run[status == "FINISHED"]
    if frame.empty:
        raise BenchError(f"MLflow experiment {tracker.experiment!r} has no finished runs",
                         fix="run `make reproduce-table1` (or python -m bench.run) first")
    frame = frame.sort_values("start_time", ascending=False).drop_duplicates("tags.brainbench.config_hash")
    families = [split_family(run) for _, run in frame.iterrows()]
    known = list(dict.fromkeys(families))  # newest first
    chosen = known[0] if split is None else split
    if chosen not in known:
        raise ConfigError(f"--split {split!r}: no finished run of that split in experiment {tracker.experiment!r}",
                          fix=f"splits here: {', '.join(repr(k) for k in known)}")
    keep = [family == chosen for family in families]
    left_out = {k: families.count(k) for k in known if k != chosen}
    note = "" if not left_out else (
        f"Split: {chosen or 'untagged (runs before split tags)'}; left out: "
        + ", ".join(f"{n} run{'s' * (n > 1)} of {k or 'untagged runs'}" for k, n in left_out.items())
        + " (rows are compared on the same subjects only; pick another with `bench report --split`).")
    frame = frame[keep]
    groups: dict[tuple[str, ...], dict[tuple[str, str], pd.Series]] = {}
    for _, run in frame.iterrows():  # newest first: the first run seen per (configuration, seed, fold) is kept
        groups.setdefault(_config_key(run, pooled), {}).setdefault(_seed_fold(run), run)
    failed = failed_note(every_run[status.isin(FAILED_STATUSES)], chosen, groups)
    note = "\n\n".join(filter(None, (note, failed)))
    return {key: [by_run[k] for k in sorted(by_run)] for key, by_run in groups.items()}, note


def log_report_files(tracker: Any, parent: str, paths: Iterable[Path]) -> None:
    """Log report files to the sweep's parent run; its PNGs only when no run of the experiment was made with
    ``tracking.log_images=false`` (a picture of its subjects' results stays on this machine)."""
    runs = tracker.runs_frame(status=None)
    column = f"params.{PRIVACY_PARAMS}log_images"
    private = column in runs.columns and bool((runs[column].astype(str) == "False").any())
    for path in paths:
        if not (private and path.suffix == ".png"):
            tracker.log_artifact(parent, path, "reports")


def identity_params(run: pd.Series, pooled: Sequence[str] = POOLED_PARAMS) -> dict[str, str]:
    """A run's settings as its params record them, without what pools across its configuration's runs
    (``pooled``: the seed and the test fold), without where it ran (``env.*``) and what it sent (``tracking.*``)."""
    out = {}
    for column, value in run.items():
        name = str(column)
        if not name.startswith("params.") or value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        name = name.removeprefix("params.")
        if name not in pooled and not name.startswith((ENVIRONMENT_PARAMS, PRIVACY_PARAMS)):
            out[name] = str(value)
    return dict(sorted(out.items()))


def _config_key(run: pd.Series, pooled: Sequence[str] = POOLED_PARAMS) -> tuple[str, ...]:
    """The configuration of a run: its tag tuple and its settings (a hash of ``identity_params``)."""
    tags = tuple(_tag(run, k if k != "row" else "table_row") for k in CONFIG_KEYS)
    settings = json.dumps(identity_params(run, pooled), sort_keys=True)
    return (*tags, hashlib.sha256(settings.encode()).hexdigest()[:16])


def _tag_key(key: tuple[str, ...]) -> dict[str, str]:
    return dict(zip(CONFIG_KEYS, key[: len(CONFIG_KEYS)], strict=True))


def _seed_fold(run: pd.Series) -> tuple[str, str]:
    return _tag(run, "seed", "0"), _tag(run, "fold")


def failed_note(failed: pd.DataFrame, split: str, groups: dict[tuple[str, ...], dict[tuple[str, str], pd.Series]]) -> str:
    """A note naming each configuration (of ``split``) whose newest run per (seed, fold) is one of the
    ``failed`` runs: missing from the table, or shown with an older finished run. ``""`` when there is none."""
    lines: dict[tuple[tuple[str, ...], tuple[str, str]], str] = {}
    for _, run in failed.sort_values("start_time", ascending=False).iterrows():
        key, seed_fold = _config_key(run), _seed_fold(run)
        if split_family(run) != split or (key, seed_fold) in lines:
            continue
        finished = groups.get(key, {}).get(seed_fold)
        if finished is not None and finished["start_time"] > run["start_time"]:
            continue  # rerun since, and finished
        what = (f"row {key[0] or '-'} ({_tag(run, 'label') or key[1]}), seed {seed_fold[0]}"
                + (f", fold {seed_fold[1]}" if seed_fold[1] else ""))
        shown = "an older finished run is shown" if finished is not None else "not in the table"
        lines[(key, seed_fold)] = f"- {what}: run {run['run_id']} {run['status']}; {shown}"
    if not lines:
        return ""
    return ("**Runs that FAILED** (their newest run per seed and fold; rerun them, e.g. `make reproduce-table1` "
            "again, which skips the finished rows):\n" + "\n".join(lines.values()))


def row_numbers(groups: dict[tuple[str, ...], list[pd.Series]]) -> list[int]:
    """The Table 1 row numbers present, sorted."""
    position = CONFIG_KEYS.index("row")
    return sorted({int(key[position]) for key in groups if key[position].isdigit()})


def load(groups: dict[tuple[str, ...], list[pd.Series]], tracker: Any, cache_dir: Path,
         pooled: Sequence[str] = POOLED_PARAMS) -> list[ConfigResult]:
    """Download each selected run's metrics.csv (and the first run's summary.json) into ``cache_dir``."""
    results = []
    for key, runs in groups.items():
        tables: list[pd.DataFrame] = []
        summary: dict[str, Any] = {}
        for run in runs:
            local = cache_dir / run["run_id"]
            metrics_csv = local / "metrics.csv"
            if not metrics_csv.exists():
                tracker.download_artifact(run["run_id"], "metrics.csv", local)
            table = pd.read_csv(metrics_csv)
            table.insert(0, "fold", _tag(run, "fold"))
            table.insert(0, "seed", _tag(run, "seed", "0"))
            table.insert(0, "run_id", run["run_id"])
            tables.append(table)
            if not summary:
                summary_path = local / "summary.json"
                if not summary_path.exists():
                    tracker.download_artifact(run["run_id"], "summary.json", local)
                summary = json.loads(summary_path.read_text())
        results.append(ConfigResult(
            _tag_key(key), _tag(runs[0], "label"), [r["run_id"] for r in runs],
            [_tag(r, "seed", "0") for r in runs], pd.concat(tables, ignore_index=True),
            {r["run_id"]: cache_dir / r["run_id"] / "predictions" for r in runs}, summary,
            sorted({_tag(r, "fold") for r in runs}),
            sum(_tag(r, "brainbench.convergence") == "still_improving" for r in runs),
            _count_unlearned(runs), identity_params(runs[0], pooled), runs=run_costs(runs)))
    name_variants(results)
    return sorted(results, key=lambda r: (int(r.key["row"]) if r.key["row"].isdigit() else 99, r.key["framework"],
                                          r.variant))


def run_costs(runs: Sequence[pd.Series]) -> pd.DataFrame:
    """One row per run: ``run_id, seed, fold``, the cost metrics (``COST_METRICS``, training ``patches_per_s``
    of its last epoch), ``precision`` and where it ran (``env.*`` params: library versions, host, CPU)."""
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run_id": run["run_id"], "seed": _tag(run, "seed", "0"), "fold": _tag(run, "fold")}
        for metric in (*COST_METRICS, "patches_per_s"):
            value = run.get(f"metrics.{metric}")
            row[metric] = float(value) if value is not None and not pd.isna(value) else np.nan
        row["precision"] = str(run.get("params.train.precision") or "")
        for column, value in run.items():
            if str(column).startswith(f"params.{ENVIRONMENT_PARAMS}") and value is not None and not pd.isna(value):
                row[str(column).removeprefix("params.")] = str(value)
        rows.append(row)
    return pd.DataFrame(rows)


def mixed_environment(result: ConfigResult) -> list[str]:
    """What differs between the runs of one configuration that should not: the precision, library versions, the
    host or its CPU (a resumed sweep can mix them). ``["env.version.torch: 2.5.1, 2.6.0", ...]``; empty when
    nothing does."""
    if result.runs.empty:
        return []
    out = []
    for column in result.runs.columns:
        if column == "precision" or column.startswith(ENVIRONMENT_PARAMS):
            values = sorted({str(v) for v in result.runs[column] if isinstance(v, str) and v})
            if len(values) > 1:
                out.append(f"{column}: {', '.join(values)}")
    return out


def name_variants(results: Sequence[ConfigResult]) -> None:
    """Give every configuration that shares its row's tags with another one the settings that differ:
    ``sampling.region=overlaps_brain`` (keys whose values are not the same in all of them)."""
    by_row: dict[tuple[str, ...], list[ConfigResult]] = {}
    for result in results:
        by_row.setdefault(tuple(result.key.values()), []).append(result)
    for group in by_row.values():
        if len(group) < 2:
            continue
        keys = sorted({k for r in group for k in r.params})
        differing = [k for k in keys if len({r.params.get(k, "∅") for r in group}) > 1]
        for result in group:
            result.variant = " · ".join(f"{k}={result.params.get(k, '∅')}" for k in differing)


def _count_unlearned(runs: Sequence[pd.Series]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        for tissue in filter(None, _tag(run, "brainbench.unlearned_classes").split(",")):
            counts[tissue] = counts.get(tissue, 0) + 1
    return counts


def collect(tracker: Any, cache_dir: Path, split: str | None = None,
            pooled: Sequence[str] = POOLED_PARAMS) -> list[ConfigResult]:
    """Read the experiment's FINISHED child runs (of one split) and group them by configuration (``pooled``: see
    ``select_runs``)."""
    return load(select_runs(tracker, split, pooled)[0], tracker, cache_dir, pooled)


def open_experiment(experiment: str | None, uri: str | None, runs_root: Path) -> tuple[str, Any]:
    """The experiment's name (default: the one with the newest run) and its tracker; never creates a store."""
    from bench.tracking.runs import Tracker, existing_store, experiment_names, latest_experiment

    uri = existing_store(uri, runs_root)
    if experiment is not None and experiment not in (names := experiment_names(uri)):
        raise BenchError(f"no MLflow experiment named {experiment!r} in {uri}",
                         fix=f"use one of: {', '.join(names)}" if names else "run a sweep first")
    name = experiment or latest_experiment(uri, runs_root)
    if name is None:
        raise BenchError("no MLflow experiment with brainbench runs found",
                         fix="run `make reproduce-table1` first, or pass --experiment")
    return name, Tracker(name, uri, runs_root)
