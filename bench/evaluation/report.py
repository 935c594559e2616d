"""MLflow runs → Table 1 / Table 2 with the paper's values side by side, box plots and overlays.

One row per configuration (row, model, data, optimizer, loss, framework, sampling, profile): its FINISHED
runs are counted once per seed, the newest, so a configuration re-run with changed settings (say more
epochs) replaces the older numbers instead of being averaged with them. With one seed a cell is mean ± sd over test subjects; with
several seeds it is mean ± sd over the seeds' means. Each cell also gives the paper's value and our
difference (ours − paper).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.evaluation.paper import CLASSES, TABLE1_ROWS, paper_value
from bench.io import write_atomic, write_text_atomic

TABLE1_METRICS = ("dice",)
TABLE2_METRICS = ("avd", "hd")
CONFIG_KEYS = ("row", "architecture", "preprocess", "optimizer", "loss", "framework", "sampling", "profile")
COLORS = {1: (1.0, 0.55, 0.0), 2: (0.2, 0.4, 1.0), 3: (0.1, 0.8, 0.2)}  # CSF orange, GM blue, WM green
DIGITS = {"dice": 3, "avd": 2, "hd": 2, "hd95": 2, "assd": 3}


@dataclass
class ConfigResult:
    """All FINISHED runs of one configuration (over seeds), with their per-subject metrics."""

    key: dict[str, str]
    label: str
    run_ids: list[str]
    seeds: list[str]
    per_subject: pd.DataFrame  # columns: seed, case, class, dice, avd, hd, hd95, assd
    predictions: dict[str, Path]  # run_id -> local predictions folder (first seed)
    summary: dict[str, Any]



def collect(tracker: Any, cache_dir: Path) -> list[ConfigResult]:
    """Read the experiment's FINISHED child runs and group them by configuration."""
    frame = tracker.runs_frame(status="FINISHED")
    if frame.empty:
        raise BenchError(f"MLflow experiment {tracker.experiment!r} has no finished runs",
                         fix="run `make reproduce-table1` (or python -m bench.run) first")
    frame = frame.sort_values("start_time", ascending=False).drop_duplicates("tags.brainbench.config_hash")
    groups: dict[tuple[str, ...], dict[str, pd.Series]] = {}
    for _, run in frame.iterrows():  # newest first: the first run seen per (configuration, seed) is kept
        key = tuple(str(run.get(f"tags.{k}" if k != "row" else "tags.table_row", "") or "") for k in CONFIG_KEYS)
        groups.setdefault(key, {}).setdefault(str(run.get("tags.seed", "0")), run)
    results = []
    for key, by_seed in groups.items():
        runs = list(by_seed.values())
        tables: list[pd.DataFrame] = []
        seeds: list[str] = []
        run_ids: list[str] = []
        summary: dict[str, Any] = {}
        predictions: dict[str, Path] = {}
        for run in sorted(runs, key=lambda r: str(r.get("tags.seed", ""))):
            local = cache_dir / run["run_id"]
            metrics_csv = local / "metrics.csv"
            if not metrics_csv.exists():
                tracker.download_artifact(run["run_id"], "metrics.csv", local)
            table = pd.read_csv(metrics_csv)
            table["seed"] = str(run.get("tags.seed", "0"))
            tables.append(table)
            seeds.append(str(run.get("tags.seed", "0")))
            run_ids.append(run["run_id"])
            if not summary:
                summary_path = local / "summary.json"
                if not summary_path.exists():
                    tracker.download_artifact(run["run_id"], "summary.json", local)
                summary = json.loads(summary_path.read_text())
                predictions[run["run_id"]] = local / "predictions"
        results.append(ConfigResult(dict(zip(CONFIG_KEYS, key, strict=True)), str(runs[0].get("tags.label", "")),
                                    run_ids, seeds, pd.concat(tables, ignore_index=True), predictions, summary))
    return sorted(results, key=lambda r: (int(r.key["row"]) if r.key["row"].isdigit() else 99, r.key["framework"]))


def cell_stats(result: ConfigResult, metric: str, tissue: str) -> tuple[float, float, int]:
    """(mean, sd, n) of a metric for a tissue: over subjects (one seed) or over seed means."""
    table = result.per_subject[result.per_subject["class"] == tissue]
    values = pd.to_numeric(table[metric], errors="coerce").replace([np.inf, -np.inf], np.nan)
    if table["seed"].nunique() > 1:
        per_seed = values.groupby(table["seed"]).mean().dropna()
        return float(per_seed.mean()), float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0, len(per_seed)
    finite = values.dropna()
    sd = float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
    return float(finite.mean()) if len(finite) else float("nan"), sd, len(finite)


def _row_number(result: ConfigResult) -> int | None:
    return int(result.key["row"]) if result.key["row"].isdigit() else None


def table_frame(results: Sequence[ConfigResult], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per configuration with mean, sd, paper value and difference per metric × tissue."""
    rows = []
    for result in results:
        row_no = _row_number(result)
        paper_row = TABLE1_ROWS.get(row_no or -1, {})
        row: dict[str, Any] = {
            "row": row_no, "model": result.key["architecture"], "paper_model": paper_row.get("model", ""),
            "data": result.key["preprocess"], "optimizer": result.key["optimizer"] or "-",
            "loss": result.key["loss"] or "-", "framework": result.key["framework"],
            "sampling": result.key["sampling"], "profile": result.key["profile"],
            "seeds": len(set(result.seeds)), "subjects": int(result.per_subject["case"].nunique()),
        }
        if result.key["architecture"] == "atlas":
            row.update(optimizer="-", loss="-", sampling="-")
        for metric in metrics:
            for tissue in CLASSES:
                mean, sd, _ = cell_stats(result, metric, tissue)
                paper = paper_value(metric, row_no, tissue)
                row[f"{metric}_{tissue}_mean"] = mean
                row[f"{metric}_{tissue}_sd"] = sd
                row[f"{metric}_{tissue}_paper"] = paper
                row[f"{metric}_{tissue}_diff"] = None if paper is None else mean - paper
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt_cell(frame_row: pd.Series, metric: str, tissue: str) -> str:
    digits = DIGITS.get(metric, 3)
    mean, sd = frame_row[f"{metric}_{tissue}_mean"], frame_row[f"{metric}_{tissue}_sd"]
    paper, diff = frame_row[f"{metric}_{tissue}_paper"], frame_row[f"{metric}_{tissue}_diff"]
    text = "n/a" if pd.isna(mean) else f"{mean:.{digits}f} ± {sd:.{digits}f}"
    if paper is not None and not pd.isna(paper):
        text += f" ({paper:.{digits}f}, {diff:+.{digits}f})"
    return text


def markdown_table(frame: pd.DataFrame, metrics: Sequence[str], title: str) -> str:
    """A Markdown table; each cell is ``ours mean ± sd (paper, ours − paper)``."""
    head = ["N", "Model", "Data", "Optim.", "Loss", "Framework", "Seeds"]
    head += [f"{m.upper()} {t}" for m in metrics for t in CLASSES]
    lines = [f"### {title}", "", "Cells: ours mean ± sd (paper, ours − paper).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in frame.iterrows():
        cells = [str(r["row"] if r["row"] is not None and not pd.isna(r["row"]) else "-"), str(r["model"]),
                 str(r["data"]), str(r["optimizer"]), str(r["loss"]), str(r["framework"]), str(r["seeds"])]
        cells += [_fmt_cell(r, m, t) for m in metrics for t in CLASSES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def boxplots(results: Sequence[ConfigResult], path: Path) -> None:
    """Dice per class per configuration (the paper's Figure 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(4 + 1.1 * len(results) * 1.5, 4.5), sharey=True)
    names = [f"{r.key['row']}:{r.key['architecture']}\n{r.key['framework']}" for r in results]
    for ax, tissue in zip(axes, CLASSES, strict=True):
        data = []
        for r in results:
            table = r.per_subject[r.per_subject["class"] == tissue]
            data.append(pd.to_numeric(table["dice"], errors="coerce").dropna().to_numpy())
        ax.boxplot(data, tick_labels=names)
        ax.set_title(f"Dice {tissue}")
        ax.tick_params(axis="x", labelrotation=90, labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), suffix=".png")
    plt.close(fig)


def _view_axes(direction: Sequence[float]) -> dict[str, int]:
    """Array axis normal to each anatomical plane, from the direction cosines (LPS world)."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    world_of_axis = [int(np.argmax(np.abs(matrix[:, i]))) for i in range(3)]
    normal = {0: "sagittal", 1: "coronal", 2: "axial"}
    out = {normal[w]: axis for axis, w in enumerate(world_of_axis)}
    for plane, axis in zip(("axial", "coronal", "sagittal"), (2, 1, 0), strict=True):
        out.setdefault(plane, axis)
    return out


def overlays(results: Sequence[ConfigResult], path: Path, tracker: Any = None) -> str | None:
    """Tri-planar overlays for one test subject: ground truth, then each configuration (Figure 8)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.io import read_volume, write_atomic

    first = next((r for r in results if r.summary.get("run", {}).get("subject_files")), None)
    if first is None:
        return None
    files = first.summary["run"]["subject_files"]
    test_ids = sorted(first.summary["run"].get("test_subjects", []))
    subject = "IBSR_11" if "IBSR_11" in test_ids else (test_ids[0] if test_ids else None)
    if subject is None or subject not in files:
        return None
    image = read_volume(files[subject]["image"])
    truth = read_volume(files[subject]["label"]).array
    columns: list[tuple[str, np.ndarray]] = [("ground truth", truth)]
    for r in results:
        run_id, folder = next(iter(r.predictions.items()), (None, None))
        pred_path = None if folder is None else folder / f"{subject}.nii.gz"
        if pred_path is not None and not pred_path.exists() and tracker is not None:
            try:
                tracker.download_artifact(run_id, f"predictions/{subject}.nii.gz", folder)
            except Exception:  # a run without that prediction is shown without its column
                pred_path = None
        if pred_path is not None and pred_path.exists():
            columns.append((f"{r.key['row']}: {r.key['architecture']} {r.key['framework']}",
                            read_volume(pred_path).array))
    views = _view_axes(image.direction)
    brain = np.argwhere(truth > 0)
    centre = ((brain.min(0) + brain.max(0)) // 2) if len(brain) else np.array(image.shape) // 2
    fig, axes = plt.subplots(3, len(columns), figsize=(2.2 * len(columns), 6.8), squeeze=False)
    vmax = float(np.percentile(image.array[image.array > 0], 99)) if np.any(image.array > 0) else 1.0
    for row, plane in enumerate(("axial", "coronal", "sagittal")):
        axis = views[plane]
        other = [a for a in range(3) if a != axis]
        aspect = image.spacing_mm[other[0]] / image.spacing_mm[other[1]]
        for col, (title, labels) in enumerate(columns):
            ax = axes[row][col]
            img = np.take(image.array, int(centre[axis]), axis=axis).astype(float)
            lab = np.take(labels, int(centre[axis]), axis=axis)
            rgba = np.zeros((*lab.shape, 4))
            for cls, color in COLORS.items():
                rgba[lab == cls] = (*color, 0.55)
            ax.imshow(np.rot90(img), cmap="gray", vmin=0, vmax=vmax, aspect=aspect)
            ax.imshow(np.rot90(rgba), aspect=aspect)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=7)
            if col == 0:
                ax.set_ylabel(plane, fontsize=8)
    fig.suptitle(f"{subject}: CSF orange, GM blue, WM green", fontsize=9)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), suffix=".png")
    plt.close(fig)
    return subject


def write_report(
    experiment: str | None, out_dir: Path, uri: str | None = None, runs_root: Path = Path("runs")
) -> dict[str, Path]:
    """Build every report file for an experiment (default: the one with the newest run); log to its parent."""
    from bench.tracking import Tracker, existing_store, experiment_names, latest_experiment

    uri = existing_store(uri, runs_root)  # a report never creates a store
    if experiment is not None and experiment not in (names := experiment_names(uri)):
        raise BenchError(
            f"no MLflow experiment named {experiment!r} in {uri}",
            fix=f"use one of: {', '.join(names)}" if names else "run a sweep first",
        )
    name = experiment or latest_experiment(uri, runs_root)
    if name is None:
        raise BenchError("no MLflow experiment with brainbench runs found",
                         fix="run `make reproduce-table1` first, or pass --experiment")
    tracker = Tracker(name, uri, runs_root)
    results = collect(tracker, out_dir / ".artifacts")
    written: dict[str, Path] = {}
    for table_name, metrics, title in (("table1", TABLE1_METRICS, "Table 1: Dice"),
                                       ("table2", TABLE2_METRICS, "Table 2: AVD (%) and HD (mm)")):
        frame = table_frame(results, metrics)
        md = markdown_table(frame, metrics, f"{title} — experiment {name}")
        write_text_atomic(out_dir / f"{table_name}.md", md)
        write_text_atomic(out_dir / f"{table_name}.csv", frame.to_csv(index=False))
        written[f"{table_name}.md"] = out_dir / f"{table_name}.md"
        written[f"{table_name}.csv"] = out_dir / f"{table_name}.csv"
    boxplots(results, out_dir / "boxplots.png")
    written["boxplots.png"] = out_dir / "boxplots.png"
    if overlays(results, out_dir / "overlays.png", tracker):
        written["overlays.png"] = out_dir / "overlays.png"
    parent = tracker.parent_run(name)
    for path in written.values():
        tracker.log_artifact(parent, path, "reports")
    return written
