"""``bench ensemble --runs ID ID ... --name NAME``: score the mean softmax of finished CNN runs on their test
subjects and log it as an MLflow run that ``bench report`` shows as one more row."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "ensemble", help="log an ensemble of CNN runs as a report row",
        description="Average the softmax of the logged models of two or more FINISHED CNN runs (any mix of "
        "frameworks and architectures, same split and test subjects) on each test subject, score it like a run "
        "(per-subject Dice, AVD, HD, HD95, ASSD) and log an MLflow run in the first run's experiment and sweep.",
    )
    parser.add_argument("--runs", nargs="+", required=True, metavar="RUN_ID", help="the member runs")
    parser.add_argument("--name", required=True, help="the ensemble's name (its row reads ensemble:NAME)")
    parser.add_argument("--tta", choices=("none", "flips"), default="none",
                        help="also average over the 8 axis-flip combinations")
    parser.add_argument("--out", type=Path, default=None,
                        help="outputs folder (default <runs-dir>/outputs/<experiment>/ensemble-NAME-<hash>)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="runs folder (default store, lock)")
    return parser


def run(args: argparse.Namespace) -> int:
    from bench.predict.ensemble_run import run_ensemble
    from bench.tracking import existing_store

    uri = existing_store(args.tracking_uri, args.runs_dir)
    run_id, summary = run_ensemble(args.runs, args.name, uri, args.runs_dir, flips=args.tta == "flips",
                                   out=args.out)
    if run_id is None:
        print(f"skipping ensemble {args.name}: these runs' ensemble is already logged (or running)")
        return 0
    dice = ", ".join(f"{t} {v['dice']:.4f}" for t, v in summary["mean"].items() if "dice" in v)
    print(f"ensemble {args.name}: run {run_id}: mean Dice {dice}")
    return 0
