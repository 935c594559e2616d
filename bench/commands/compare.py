"""``bench compare --axis SETTING``: configurations that differ in one setting alone, compared pair by pair
(paired differences, Wilcoxon and Holm, equivalence by TOST, costs) into runs/reports/<experiment>/."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.commands import add_runs_dir

METRICS = ("dice", "avd", "hd", "hd95", "assd")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "compare", help="compare configurations that differ in one setting (pairs, tests, equivalence, cost)",
        description="Pair the FINISHED configurations of an MLflow experiment that differ only in one setting "
        "(--axis) and write compare-<setting>.md/.csv/.png: per pair, metric and class the paired per-subject "
        "difference B − A (A and B in the setting's order) with a 95 percent bootstrap interval, a two-sided "
        "Wilcoxon signed-rank p, its Holm adjustment over the pairs of each metric and class, an equivalence test "
        "(TOST within ±margin) and a verdict (equivalent, different, inconclusive); then each pair's training "
        "patches/s, fit minutes, inference s/volume and peak memory side by side. Configurations without a "
        "partner are named. Prints the Markdown; also logs the files to the sweep's parent run.",
    )
    parser.add_argument("--axis", required=True, metavar="SETTING",
                        help="the setting compared, as runs record it (framework, train.precision, sampling.region, "
                        "seed, model.params.base_filters, train.optimizer, ...) or its Hydra path (profile.precision, "
                        "optimizer.lr, loss.name, model.base_filters, ...)")
    parser.add_argument("--experiment", help="MLflow experiment name (default: the one with the newest run)")
    parser.add_argument("--split", default=None,
                        help="compare the runs of this split only, e.g. holdout or '5-fold (fold_seed 0)' (default: "
                        "the newest run's split)")
    parser.add_argument("--metric", action="append", choices=METRICS, default=None,
                        help="metric to compare; repeat for several (default: dice)")
    parser.add_argument("--margin", type=float, default=None,
                        help="equivalence margin of the first --metric, in its units (default: dice 0.01, avd 1 "
                        "percentage point, hd and hd95 1 mm, assd 0.1 mm; other metrics keep theirs)")
    add_runs_dir(parser, "runs folder (default store and artifacts)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default <runs-dir>/reports/<experiment>)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    return parser


def run(args: argparse.Namespace) -> int:
    from bench.evaluation.compare_output import write_comparison

    written, text = write_comparison(args.experiment, args.out, args.tracking_uri, args.runs_dir, axis=args.axis,
                                     split=args.split, metrics=args.metric or ["dice"], margin=args.margin)
    for path in written.values():
        print(f"wrote {path}")
    print()
    print(text)
    return 0
