"""How a comparison along one setting is written (``bench compare``, ``bench report --axis``): the Markdown tables
(a table per metric, the cost table, the unpaired configurations, the method), the CSV of every number and the
figure of each pair's mean difference with its interval (``bench.evaluation.compare`` makes the comparison)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.evaluation import stats
from bench.evaluation.compare import COSTS, Comparison, along
from bench.evaluation.runs import log_report_files, open_experiment
from bench.io import write_atomic, write_text_atomic

UNITS = {"dice": "", "avd": " % points", "hd": " mm", "hd95": " mm", "assd": " mm"}
DIGITS = {"dice": 4, "avd": 2, "hd": 2, "hd95": 2, "assd": 3}  # differences: one digit more than the report's


def _p(value: Any, method: str = "") -> str:
    if value is None or pd.isna(value):
        return ""
    text = "<0.0001" if value < 1e-4 else f"{value:.2g}"
    return text + {"": "", "exact": "", "permutation, exhaustive": " (sign flips)",
                   "asymptotic": " (normal approx.)"}.get(method, f" ({method})")


def _amount(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _cost_cell(row: pd.Series, column: str) -> str:
    a, b, ratio = row[f"a_{column}"], row[f"b_{column}"], row[f"ratio_{column}"]
    if not (math.isfinite(a) or math.isfinite(b)):
        return "n/a"
    return f"{_amount(a)} → {_amount(b)}" + (f" (×{ratio:.2f})" if math.isfinite(ratio) else "")


def markdown(comparison: Comparison, title: str) -> str:
    """The comparison as Markdown: a table per metric, the cost table, the unpaired configurations, the method."""
    axis, table = comparison.axis, comparison.table
    order = ", ".join(comparison.values)
    lines = [f"### {title}", "",
             f"Pairs: configurations whose recorded settings are equal except `{axis.setting}`"
             + (f" (every setting under it: {', '.join(axis.keys)})" if axis.group else "")
             + f"; A and B in the order {order}, so every difference is B − A"
             + (f" ({comparison.values[-1]} − {comparison.values[0]})" if len(comparison.values) == 2 else "")
             + ". Verdict: `equivalent` when the difference is shown to lie within ±margin (TOST p < 0.05), "
             "`different` when it is significant after Holm and not equivalent, else `inconclusive`.", ""]
    for metric, margin in comparison.margins.items():
        digits = DIGITS.get(metric, 3)
        lines += [f"#### {metric.upper()}: B − A (equivalence margin ±{margin:g}{UNITS.get(metric, '')})", "",
                  "| # | Pair (A → B) | Class | n | B − A [95 % CI] | p | Holm p | p TOST | Verdict |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for _, r in table[table["metric"] == metric].iterrows():
            diff = ("n/a" if pd.isna(r["mean_diff"]) else
                    f"{r['mean_diff']:+.{digits}f} [{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}]")
            why = {stats.NOTE_FEW_PAIRS: f" (n<{stats.MIN_PAIRS})", stats.NOTE_ALL_ZERO: " (all d = 0)"}.get(
                str(r["note"]), "")
            lines.append(f"| {r['pair']} | {r['label']} | {r['class']} | {r['n']} | {diff} | {_p(r['p'], r['method'])}"
                         f" | {_p(r['p_holm'])} | {_p(r['p_tost'], r['tost_method'])} | {r['verdict']}{why} |")
        lines.append("")
    lines += ["#### Cost: A → B (×B/A), median over each configuration's runs", "",
              "| # | Pair (A → B) | Runs | Seeds compared | " + " | ".join(heading for *_, heading in COSTS) + " |",
              "|---|---|---|---|" + "---|" * len(COSTS)]
    seeds = table.drop_duplicates("pair").set_index("pair")["seeds"]
    for pair, (_, row) in zip(comparison.pairs, comparison.costs.iterrows(), strict=True):
        cells = [_cost_cell(row, column) for column, *_ in COSTS]
        runs = f"{int(row['a_runs'])} → {int(row['b_runs'])}"
        lines.append(f"| {int(row['pair'])} | {pair.label} | {runs} | {seeds.get(int(row['pair']), '')} | "
                     + " | ".join(cells) + " |")
    lines.append("")
    if comparison.unpaired:
        lines += [f"**Not compared** ({len(comparison.unpaired)} configuration"
                  f"{'s' * (len(comparison.unpaired) > 1)} without a partner on `{axis.setting}`; ∅: not "
                  "recorded):", ""]
        lines += [f"- {line}" for line in comparison.unpaired] + [""]
    lines.append(method_notes(comparison))
    if comparison.note:
        lines += ["", comparison.note]
    return "\n".join(lines) + "\n"


def method_notes(comparison: Comparison) -> str:
    """How the numbers were made (the module docstring, in a paragraph)."""
    family = comparison.table.groupby(["metric", "class"])["p"].count()
    m = int(family.max()) if len(family) else 0
    margins = ", ".join(f"{k} ±{v:g}{UNITS.get(k, '')}" for k, v in comparison.margins.items())
    return (f"Method: seeds are matched (where A and B ran seeds in common only those are compared; column 'Seeds "
            f"compared'), and a subject's value is its mean over the compared seeds (folds pool: each subject is tested "
            f"in one fold); differences B − A on the subjects both configurations were tested on. 95 % CI: "
            f"percentile bootstrap of the mean difference ({stats.BOOTSTRAP_RESAMPLES:,} resamples, seed "
            f"{stats.BOOTSTRAP_SEED}). p: two-sided Wilcoxon signed-rank test, exact without zero or tied differences;"
            f" otherwise zeros are dropped and p comes from all sign flips up to {stats.MAX_EXHAUSTIVE} pairs "
            "(marked 'sign flips'), from the tie-corrected normal approximation above. Holm: over the "
            f"{m} tested pair{'s' * (m != 1)} of each metric and class. TOST: two one-sided Wilcoxon signed-rank "
            f"tests of d + margin > 0 and d − margin < 0 (same method rule), p TOST the larger, not adjusted; "
            f"margins {margins}. Fewer than {stats.MIN_PAIRS} shared subjects: not tested. Cost: medians over "
            f"each configuration's runs (training patches/s of the last epoch). Every number: "
            f"`{comparison.axis.file_stem}.csv`.")


def csv_frame(comparison: Comparison) -> pd.DataFrame:
    """Every number: the table with each pair's costs on its rows."""
    return comparison.table.merge(comparison.costs, on="pair", how="left")


def plot(comparison: Comparison, path: Path) -> None:
    """One panel per metric × class: each pair's mean difference with its 95 % CI, the ±margin band, zero."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = comparison.table
    metrics = list(comparison.margins)
    classes = list(dict.fromkeys(table["class"]))
    count = len(comparison.pairs)
    fig, axes = plt.subplots(len(metrics), max(1, len(classes)), squeeze=False, sharey=True,
                             figsize=(3 + 3.4 * max(1, len(classes)), (1.2 + 0.4 * count) * len(metrics)))
    positions = np.arange(count)[::-1]
    for row, metric in enumerate(metrics):
        margin = comparison.margins[metric]
        for column, tissue in enumerate(classes):
            ax = axes[row][column]
            cell = table[(table["metric"] == metric) & (table["class"] == tissue)].sort_values("pair")
            mean = cell["mean_diff"].to_numpy(dtype=float)
            err = np.nan_to_num(np.vstack([mean - cell["ci_low"].to_numpy(dtype=float),
                                           cell["ci_high"].to_numpy(dtype=float) - mean]))
            ax.axvspan(-margin, margin, color="tab:green", alpha=0.15, label=f"±{margin:g} margin")
            ax.axvline(0, color="black", linewidth=0.8)
            ax.errorbar(mean, positions, xerr=err, fmt="o", color="black", ecolor="grey", capsize=3)
            ax.set_title(f"{metric.upper()} {tissue}: B − A", fontsize=9)
            ax.grid(axis="x", alpha=0.3)
        axes[row][0].set_yticks(positions, [p.label for p in comparison.pairs], fontsize=7)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(f"Along {comparison.axis.setting}: mean difference, 95 % bootstrap CI", fontsize=10)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), suffix=".png")
    plt.close(fig)


def write_files(comparison: Comparison, out_dir: Path, experiment: str) -> tuple[dict[str, Path], str]:
    """Write ``compare-<setting>.md/.csv/.png`` into ``out_dir``; returns the paths and the Markdown."""
    stem = comparison.axis.file_stem
    text = markdown(comparison, f"Compared along {comparison.axis.setting} — experiment {experiment}")
    written = {f"{stem}.md": write_text_atomic(out_dir / f"{stem}.md", text),
               f"{stem}.csv": write_text_atomic(out_dir / f"{stem}.csv", csv_frame(comparison).to_csv(index=False))}
    plot(comparison, out_dir / f"{stem}.png")
    written[f"{stem}.png"] = out_dir / f"{stem}.png"
    return written, text




def write_comparison(experiment: str | None, out_dir: Path | None, uri: str | None = None,
                     runs_root: Path = Path("runs"), *, axis: str, split: str | None = None,
                     metrics: Sequence[str] = ("dice",), margin: float | None = None) -> tuple[dict[str, Path], str]:
    """``bench compare``: write ``compare-<setting>.md/.csv/.png`` into ``out_dir`` (default
    ``<runs_root>/reports/<experiment>``) and log them to the sweep's parent run; returns the paths and the
    Markdown."""
    name, tracker = open_experiment(experiment, uri, runs_root)
    out_dir = runs_root / "reports" / name if out_dir is None else out_dir
    comparison = along(tracker, axis, split, out_dir / ".artifacts", metrics, margin)
    written, text = write_files(comparison, out_dir, name)
    log_report_files(tracker, tracker.parent_run(name), written.values())
    return written, text
