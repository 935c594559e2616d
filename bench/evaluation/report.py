"""MLflow runs → Table 1 / Table 2 with the paper's values side by side, statistics, and figures.

One row per configuration (which runs make it: ``bench.evaluation.runs``). With one seed a cell is mean ± sd over test subjects; with several seeds it is mean ± sd
over the seeds' means. Each cell also gives a 95 % bootstrap interval over subjects, a mark from a paired
test against a reference row (``bench.evaluation.stats``), the paper's value and our difference
(ours − paper). Figures are drawn by ``bench.evaluation.plots``.

Columns follow the runs' label set (``summary.json``'s ``"labels"``, IBSR's for runs written before label
sets): one per scored class and metric, in class-index order. A report covers one label set: runs of
different label sets in one experiment are refused (:func:`report_labels`), since their classes cannot share
columns or be tested against each other. The paper's values and differences (and its model names) appear
only for configurations whose runs are on IBSR18 with the paper's labels (:func:`paper_applies`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.data.labels import IBSR_LABELS, LabelSet, same_labels
from bench.errors import ConfigError, DataError
from bench.evaluation import paper as paper_numbers
from bench.evaluation import plots, stats
from bench.evaluation.evaluate import summary_labels
from bench.evaluation.paper import TABLE1_ROWS, paper_value
from bench.evaluation.ranking import write_ranking_stability
from bench.evaluation.runs import (
    ConfigResult,
    load,
    log_report_files,
    mixed_environment,
    open_experiment,
    row_numbers,
    select_runs,
)
from bench.io import write_text_atomic

TABLE1_METRICS = ("dice",)
TABLE2_METRICS = ("avd", "hd")
DEFAULT_REFERENCE = 9  # the paper's best row
NOT_CONVERGED = "†"  # beside the row number: a run's epochs ran out while it still improved
MIXED = "≠"  # after N: the row's runs differ in precision, library versions, host or CPU
NOT_LEARNED = "∅"  # on a cell: the class's validation Dice was still 0 at the end of training
DIGITS = {"dice": 3, "avd": 2, "hd": 2, "hd95": 2, "assd": 3}


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


def dataset_name(summary: Mapping[str, Any]) -> str | None:
    """``spec.data.name`` of a run's summary (``ibsr18``, ``synthetic``, ``nnunet``), None when not recorded."""
    data = (summary.get("spec") or {}).get("data") or {}
    name = data.get("name") if isinstance(data, Mapping) else None
    return None if name is None else str(name)


def paper_applies(result: ConfigResult) -> bool:
    """Whether the paper's numbers are this configuration's to compare with: its runs are on IBSR18 or its synthetic
    stand-in (a summary that records no dataset counts as IBSR18, as reports always assumed) with the paper's label
    set. The
    paper's value of a cell is then that of the configuration's Table 1 row, when the paper has that row."""
    name = dataset_name(result.summary)
    return (name is None or name in paper_numbers.DATASETS) and same_labels(summary_labels(result.summary), IBSR_LABELS)


def report_labels(results: Sequence[ConfigResult]) -> LabelSet:
    """The one label set of every configuration (IBSR's when there are none).

    Raises:
        ConfigError: Configurations of different label sets (each named with its rows).
        DataError: A configuration's per-subject metrics hold a class its label set lacks.
    """
    found: dict[tuple[tuple[str, ...], tuple[int, ...]], tuple[LabelSet, list[str]]] = {}
    for result in results:
        labels = summary_labels(result.summary)
        found.setdefault((labels.names, labels.values), (labels, []))[1].append(_label(result))
    if len(found) > 1:
        sets = "; ".join(f"{{{labels.describe()}}} in {', '.join(names)}" for labels, names in found.values())
        raise ConfigError(f"the runs to report use {len(found)} different label sets: {sets}; a report compares "
                          "configurations on the same classes",
                          fix="keep each dataset's runs in their own MLflow experiment (tracking.experiment=NAME) "
                          "and report them one at a time (bench report --experiment NAME)")
    labels = next(iter(found.values()))[0] if found else IBSR_LABELS
    for result in results:
        classes = result.per_subject["class"].astype(str) if "class" in result.per_subject else []
        extra = sorted(set(classes) - set(labels.scored))
        if extra:
            raise DataError(f"{_label(result)}: the per-subject metrics hold classes {extra} that its label set "
                            f"({labels.describe()}) lacks", fix="its runs mix label sets; rerun them")
    return labels


def _class_word(labels: LabelSet) -> str:
    return "tissue" if same_labels(labels, IBSR_LABELS) else "class"


def reference_index(results: Sequence[ConfigResult], row: int) -> int | None:
    """The configuration the others are tested against: the first (in table order) of Table 1 row ``row``."""
    return next((i for i, r in enumerate(results) if _row_number(r) == row), None)


def comparison(results: Sequence[ConfigResult], metrics: Sequence[str], reference_row: int,
               labels: LabelSet | None = None) -> pd.DataFrame:
    """:func:`bench.evaluation.stats.compare` with each configuration's row, model and framework, for every
    scored class of ``labels`` (default :func:`report_labels`).

    ``config`` is the index into ``results``; the CSV leaves it out.
    """
    classes = (report_labels(results) if labels is None else labels).scored
    frame = stats.compare([r.per_subject for r in results], reference_index(results, reference_row), metrics,
                          tissues=classes)
    config = frame["config"]
    frame.insert(1, "row", [_row_number(results[i]) for i in config])
    frame.insert(2, "model", [results[i].key["architecture"] for i in config])
    frame.insert(3, "framework", [results[i].key["framework"] for i in config])
    frame.insert(frame.columns.get_loc("n_pairs"), "reference_row", reference_row)
    return frame


def table_frame(results: Sequence[ConfigResult], metrics: Sequence[str],
                compared: pd.DataFrame | None = None, labels: LabelSet | None = None) -> pd.DataFrame:
    """One row per configuration with mean and sd per metric × scored class of ``labels`` (default
    :func:`report_labels`), and where the paper applies to any configuration (:func:`paper_applies`) the
    paper's model, value and our difference (None for the configurations it does not apply to).

    With ``compared`` (from :func:`comparison`, same ``results``) also the 95 % interval, the Holm p-value
    against the reference and the cell's mark.
    """
    classes = (report_labels(results) if labels is None else labels).scored
    with_paper = any(paper_applies(r) for r in results)
    rows = []
    for index, result in enumerate(results):
        row_no = _row_number(result)
        paper_row_no = row_no if paper_applies(result) else None
        paper_row = TABLE1_ROWS.get(paper_row_no or -1, {})
        row: dict[str, Any] = {
            "row": row_no, "model": result.key["architecture"], "label": result.label,
            "paper_model": paper_row.get("model", ""),
            "data": result.key["preprocess"], "optimizer": result.key["optimizer"] or "-",
            "loss": result.key["loss"] or "-", "framework": result.key["framework"],
            "sampling": result.key["sampling"], "profile": result.key["profile"],
            "seeds": len(set(result.seeds)), "folds": len(set(result.folds)) or 1,
            "subjects": int(result.per_subject["case"].nunique()), "runs": len(result.run_ids),
            "not_converged": result.not_converged, "variant": result.variant,
            "mixed": "; ".join(mixed_environment(result)),
        }
        if not with_paper:
            del row["paper_model"]
        if result.key["architecture"] == "atlas":
            row.update(optimizer="-", loss="-", sampling="-")
        cells = None if compared is None else compared[compared["config"] == index].set_index(["metric", "tissue"])
        for metric in metrics:
            for tissue in classes:
                mean, sd, _ = cell_stats(result, metric, tissue)
                row[f"{metric}_{tissue}_mean"] = mean
                row[f"{metric}_{tissue}_sd"] = sd
                if with_paper:
                    paper = paper_value(metric, paper_row_no, tissue)
                    row[f"{metric}_{tissue}_paper"] = paper
                    row[f"{metric}_{tissue}_diff"] = None if paper is None else mean - paper
                row[f"{metric}_{tissue}_unlearned"] = result.unlearned.get(tissue, 0)
                if cells is not None:
                    cell = cells.loc[(metric, tissue)]
                    row[f"{metric}_{tissue}_ci_low"] = cell["ci_low"]
                    row[f"{metric}_{tissue}_ci_high"] = cell["ci_high"]
                    row[f"{metric}_{tissue}_p_holm"] = cell["p_holm"]
                    row[f"{metric}_{tissue}_mark"] = stats.mark(str(cell["note"]), _float(cell["p_holm"]))
        rows.append(row)
    return pd.DataFrame(rows)


def _float(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _fmt_cell(frame_row: pd.Series, metric: str, tissue: str) -> str:
    digits = DIGITS.get(metric, 3)
    mean, sd = frame_row[f"{metric}_{tissue}_mean"], frame_row[f"{metric}_{tissue}_sd"]
    paper, diff = frame_row.get(f"{metric}_{tissue}_paper"), frame_row.get(f"{metric}_{tissue}_diff")
    text = "n/a" if pd.isna(mean) else f"{mean:.{digits}f} ± {sd:.{digits}f}"
    low, high = frame_row.get(f"{metric}_{tissue}_ci_low"), frame_row.get(f"{metric}_{tissue}_ci_high")
    if low is not None and not pd.isna(low):
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    mark = frame_row.get(f"{metric}_{tissue}_mark")
    if mark:
        text += f" {mark}"
    unlearned, runs = frame_row.get(f"{metric}_{tissue}_unlearned"), frame_row.get("runs")
    if unlearned:
        text += f" {NOT_LEARNED}" if unlearned == runs else f" {NOT_LEARNED}{int(unlearned)}/{int(runs)}"
    if paper is not None and not pd.isna(paper):
        text += f" ({paper:.{digits}f}, {diff:+.{digits}f})"
    return text


def _model_cell(r: pd.Series) -> str:
    """The model, for a row outside Table 1 its label (variants of one model, an ablation, differ in it), and the
    settings that tell it from another configuration of the same row (``· sampling.region=overlaps_brain``)."""
    model, label = str(r["model"]), str(r.get("label") or "")
    numbered = r["row"] is not None and not pd.isna(r["row"])
    cell = model if numbered or not label or label in model else f"{model}: {label}"
    variant = r.get("variant")
    return f"{cell} · {variant}" if isinstance(variant, str) and variant else cell


def frame_classes(frame: pd.DataFrame, metric: str) -> list[str]:
    """The classes of a :func:`table_frame`'s ``metric`` columns, in column order."""
    head, tail = f"{metric}_", "_mean"
    return [c[len(head):-len(tail)] for c in frame.columns if c.startswith(head) and c.endswith(tail)]


def markdown_table(frame: pd.DataFrame, metrics: Sequence[str], title: str, notes: str = "") -> str:
    """A Markdown table; each cell is ``ours mean ± sd [95 % CI] mark (paper, ours − paper)`` (the paper's part
    where the frame has paper columns), one column per metric × class of ``frame``, then ``notes``."""
    classes = frame_classes(frame, metrics[0]) if metrics else []
    head = ["N", "Model", "Data", "Optim.", "Loss", "Framework", "Seeds"]
    head += [f"{m.upper()} {t}" for m in metrics for t in classes]
    cells_are = "ours mean ± sd"
    if any(c.endswith("_ci_low") for c in frame.columns):
        cells_are += " [95 % CI] mark"
    if any(c.endswith("_paper") for c in frame.columns):
        cells_are += " (paper, ours − paper)"
    lines = [f"### {title}", "", f"Cells: {cells_are}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in frame.iterrows():
        number = str(int(r["row"]) if r["row"] is not None and not pd.isna(r["row"]) else "-")
        if r.get("not_converged"):
            number += f" {NOT_CONVERGED}"
        if isinstance(r.get("mixed"), str) and r.get("mixed"):
            number += f" {MIXED}"
        cells = [number, _model_cell(r),
                 str(r["data"]), str(r["optimizer"]), str(r["loss"]), str(r["framework"]), str(r["seeds"])]
        cells += [_fmt_cell(r, m, t) for m in metrics for t in classes]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    flags = []
    if "not_converged" in frame and frame["not_converged"].fillna(0).astype(int).any():
        flags.append(f"`{NOT_CONVERGED}` after N: not converged: in at least one of the row's runs (how many: CSV column "
                     "`not_converged`) the epochs ran out while the validation loss was still improving.")
    if any(frame.get(f"{m}_{t}_unlearned", pd.Series(dtype=float)).fillna(0).astype(int).any()
           for m in metrics for t in classes):
        flags.append(f"`{NOT_LEARNED}`: the class's validation Dice was still 0 at the end of training (`{NOT_LEARNED}k/n`: "
                     "in k of the row's n runs): the network does not predict it.")
    mixed = [f"row {r['row'] if r['row'] is not None and not pd.isna(r['row']) else '-'} ({_model_cell(r)}, "
             f"{r['framework']}): {r['mixed']}" for _, r in frame.iterrows() if isinstance(r.get("mixed"), str) and r["mixed"]]
    if mixed:
        flags.append(f"`{MIXED}` after N: the row's runs did not all run alike (a resumed sweep can mix hosts, library "
                     "versions or precisions): " + "; ".join(mixed) + ".")
    if flags:
        text += "\n" + "\n\n".join(flags) + "\n"
    return text + ("\n" + notes if notes else "")


def _label(result: ConfigResult) -> str:
    return f"row {result.key['row'] or '-'} ({result.key['architecture']}, {result.key['framework']})"


def statistics_notes(results: Sequence[ConfigResult], compared: pd.DataFrame, reference_row: int,
                     stats_file: str) -> str:
    """What the intervals and marks of a table mean: the reference, the test, the pairs, the correction."""
    seeds = "; a subject's value is first averaged over the configuration's seeds" if any(
        len(set(r.seeds)) > 1 for r in results) else ""
    folds = "; the subjects of all folds are pooled" if any(len(set(r.folds)) > 1 for r in results) else ""
    lines = [f"95 % CI: percentile bootstrap of the mean over subjects ({stats.BOOTSTRAP_RESAMPLES:,} resamples "
             f"of the subjects, seed {stats.BOOTSTRAP_SEED}){seeds}{folds}; sd: over subjects with one seed, "
             "over the seeds' means with several."]
    reference = reference_index(results, reference_row)
    if reference is None:
        rows = ", ".join(map(str, sorted({r for r in (_row_number(x) for x in results) if r is not None}))) or "none"
        lines.append(f"No paired test: reference row {reference_row} is not in this experiment (rows here: {rows}; "
                     "choose one with `bench report --reference N`).")
    else:
        tested = compared[compared["p"].notna()]
        pairs = sorted({int(n) for n in compared.loc[compared["config"] != reference, "n_pairs"].dropna()})
        pair_text = ("no configuration to compare" if not pairs else f"{pairs[0]} paired subjects" if len(pairs) == 1
                     else f"{pairs[0]}–{pairs[-1]} paired subjects (per cell in {stats_file})")
        family = tested.groupby(["metric", "tissue"]).size()
        m = f"{int(family.max())}" if len(family) and family.min() == family.max() else (
            f"{int(family.min())}–{int(family.max())}" if len(family) else "0")
        methods = ", ".join(sorted(set(tested["method"]))) or "none computed"
        lines.append(
            f"Test: each configuration against the reference, {_label(results[reference])}, by a two-sided "
            f"Wilcoxon signed-rank test on the subjects both have ({pair_text}); p-values: {methods} (scipy: "
            "exact when the differences have no zeros and no ties; otherwise zero differences are dropped and "
            f"p comes from all sign flips up to {stats.MAX_EXHAUSTIVE} pairs, from the tie-corrected normal "
            f"approximation above); Holm correction over the {m} tested configurations per "
            f"{'metric and ' if compared['metric'].nunique() > 1 else ''}{_class_word(report_labels(results))}."
        )
        lines.append(f"Marks: `*` differs from the reference (Holm p < {stats.ALPHA}); no mark: no significant "
                     f"difference; `ref`: the reference; `n<{stats.MIN_PAIRS}`: fewer than {stats.MIN_PAIRS} paired "
                     "subjects, not tested; `=ref`: equal to the reference on every paired subject, not tested.")
    lines.append(f"Every interval, statistic and p-value: `{stats_file}`.")
    return "\n\n".join(lines) + "\n"


def overlays(results: Sequence[ConfigResult], path: Path, tracker: Any = None,
             labels: LabelSet = IBSR_LABELS) -> str | None:
    """Tri-planar overlays and error maps for one test subject, ground truth then each configuration (Figure 8).

    The label files and predictions hold ``labels``' stored values (one colour per class). Returns the subject
    shown, or None when no run records its subjects' files (nothing is written then).
    """
    from bench.io import read_volume

    first = next((r for r in results if r.summary.get("run", {}).get("subject_files")), None)
    if first is None:
        return None
    files = first.summary["run"]["subject_files"]
    test_ids = sorted(first.summary["run"].get("test_subjects", []))
    subject = "IBSR_11" if "IBSR_11" in test_ids else (test_ids[0] if test_ids else None)
    if subject is None or subject not in files or not Path(files[subject]["image"]).is_file():
        return None  # (runs with tracking.log_paths=false record no file the report can open)
    image = read_volume(files[subject]["image"])
    truth = read_volume(files[subject]["label"]).array
    predictions: list[tuple[str, np.ndarray]] = []
    for r in results:
        tested = r.per_subject.loc[r.per_subject["case"].astype(str) == subject, "run_id"]
        run_id = str(tested.iloc[0]) if len(tested) else next(iter(r.predictions), None)
        folder = r.predictions.get(run_id) if run_id else None
        pred_path = None if folder is None else folder / f"{subject}.nii.gz"
        if pred_path is not None and not pred_path.exists() and tracker is not None:
            try:
                tracker.download_artifact(run_id, f"predictions/{subject}.nii.gz", folder)
            except Exception:  # a run without that prediction is shown without its row
                pred_path = None
        if pred_path is not None and pred_path.exists():
            predictions.append((r.name, read_volume(pred_path).array))
    fig = plots.overlay_figure(image.array, image.spacing_mm, image.direction, truth, predictions,
                               title=f"{subject}: labels and errors against the ground truth, cropped to the brain",
                               labels=labels)
    plots.save_overlays(fig, path)
    return subject


def write_report(
    experiment: str | None, out_dir: Path | None, uri: str | None = None, runs_root: Path = Path("runs"),
    reference: int | None = None, split: str | None = None, axis: str | None = None, margin: float = 0.01,
) -> dict[str, Path]:
    """Build every report file for an experiment (default: the one with the newest run); log to its parent.

    ``out_dir`` defaults to ``<runs_root>/reports/<experiment>``: one folder per experiment, so a report never
    overwrites another experiment's. ``split`` picks the split family reported (default: the newest run's; see ``select_runs``).
    ``reference`` is the Table 1 row every configuration is tested against (default row
    :data:`DEFAULT_REFERENCE`, untested when absent); a ``reference`` the experiment lacks is an error, raised
    before anything is downloaded or written. ``axis``: also compare the configurations that differ only in that
    setting (Dice, equivalence ``margin``; ``bench.evaluation.compare``): its files, and a section of table1.md.
    """
    from bench.evaluation import compare, compare_output

    name, tracker = open_experiment(experiment, uri, runs_root)  # a report never creates a store
    out_dir = runs_root / "reports" / name if out_dir is None else out_dir
    groups, split_note = select_runs(tracker, split)
    if reference is not None and reference not in (rows := row_numbers(groups)):
        raise ConfigError(f"--reference {reference}: no Table 1 row {reference} in experiment {name!r}",
                          fix=f"rows here: {', '.join(map(str, rows)) or 'none'}")
    reference_row = DEFAULT_REFERENCE if reference is None else reference
    compared_along = None if axis is None else compare.along(tracker, axis, split, out_dir / ".artifacts",
                                                             TABLE1_METRICS, margin, groups)
    results = load(groups, tracker, out_dir / ".artifacts")
    labels = report_labels(results)  # one label set, or an error before any report file is written
    texts: dict[str, str] = {}
    for table_name, metrics, title in (("table1", TABLE1_METRICS, "Table 1: Dice"),
                                       ("table2", TABLE2_METRICS, "Table 2: AVD (%) and HD (mm)")):
        compared = comparison(results, metrics, reference_row, labels)
        frame = table_frame(results, metrics, compared, labels)
        notes = statistics_notes(results, compared, reference_row, f"{table_name}_stats.csv")
        notes = f"{split_note}\n\n{notes}" if split_note else notes
        texts[f"{table_name}.md"] = markdown_table(frame, metrics, f"{title} — experiment {name}", notes)
        texts[f"{table_name}.csv"] = frame.to_csv(index=False)
        texts[f"{table_name}_stats.csv"] = compared.drop(columns="config").to_csv(index=False)
    if compared_along is not None:
        along_files, section = compare_output.write_files(compared_along, out_dir, name)
        texts["table1.md"] += "\n" + section
    tables, names = [r.per_subject for r in results], [r.name for r in results]
    stability_files, stability_text = write_ranking_stability(tables, names, out_dir, metric="dice",
                                                              classes=labels.scored)
    texts["table1.md"] += "\n" + stability_text + "\n"
    written = {file: write_text_atomic(out_dir / file, text) for file, text in texts.items()}
    written.update({path.name: path for path in stability_files})
    if compared_along is not None:
        written.update(along_files)
    plots.boxplots(tables, names, out_dir / "boxplots.png", tissues=labels.scored)
    ranks = plots.ranking(tables, names, out_dir / "ranking.png", tissues=labels.scored)
    written["ranking.csv"] = write_text_atomic(out_dir / "ranking.csv", ranks.drop(columns="config").to_csv(index=False))
    written.update({"boxplots.png": out_dir / "boxplots.png", "ranking.png": out_dir / "ranking.png"})
    if overlays(results, out_dir / "overlays.png", tracker, labels):
        written["overlays.png"] = out_dir / "overlays.png"
    log_report_files(tracker, tracker.parent_run(name), written.values())
    return written
