"""``bench report``: MLflow runs → runs/reports/<experiment>/ (Table 1, Table 2 with statistics, box plots, ranks, overlays)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.commands import add_runs_dir


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "report", help="write Table 1 / Table 2 (with the paper's values on IBSR18) and plots from MLflow runs",
        description="Read the FINISHED runs of an MLflow experiment and write table1.md/.csv, table2.md/.csv, "
        "their statistics (table1_stats.csv, table2_stats.csv: 95 percent bootstrap intervals, Wilcoxon signed-rank "
        "tests against a reference row with Holm correction), boxplots.png, ranking.png/.csv and overlays.png; "
        "also log them to the sweep's parent run. Columns and plots follow the runs' label set (one per scored "
        "class); runs of different label sets are refused (report each dataset's experiment on its own). The "
        "paper's values and differences appear for runs on IBSR18 with its labels (background, CSF, GM, WM) only.",
    )
    parser.add_argument("--experiment", help="MLflow experiment name (default: the one with the newest run)")
    add_runs_dir(parser, "runs folder (default store and artifacts)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default <runs-dir>/reports/<experiment>: one folder per experiment)")
    parser.add_argument("--reference", type=int, default=None, metavar="N",
                        help="Table 1 row every configuration is tested against (default 9, the paper's best; "
                        "an N the experiment lacks is an error)")
    parser.add_argument("--split", default=None,
                        help="report the runs of this split only, e.g. holdout or '5-fold (fold_seed 0)' (default: the "
                        "newest run's split; runs of other splits are named in the report and left out)")
    parser.add_argument("--axis", default=None, metavar="SETTING",
                        help="also compare the configurations that differ only in this setting (as `bench compare "
                        "--axis`, Dice): writes compare-<setting>.md/.csv/.png and appends the section to table1.md")
    parser.add_argument("--margin", type=float, default=0.01,
                        help="Dice equivalence margin of --axis (default: %(default)s)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    return parser


def run(args: argparse.Namespace) -> int:
    from bench.evaluation.report import write_report

    written = write_report(args.experiment, args.out, args.tracking_uri, args.runs_dir, reference=args.reference,
                           split=args.split, axis=args.axis, margin=args.margin)
    for path in written.values():
        print(f"wrote {path}")
    table = written.get("table1.md")
    if table is not None:
        print()
        print(table.read_text())
    return 0
