"""``bench ensemble --runs ID ID ... --name NAME``: score the mean softmax of finished CNN runs on their test
subjects and log it as an MLflow run that ``bench report`` shows as one more row.

``--sweep OVERRIDES`` names the members by the sweep that trained them instead of by run id: the command line
of ``python -m bench.run --multirun OVERRIDES``, expanded into its jobs, each found by its config hash.

Members run with ``tracking.log_paths=false`` or ``hash_subject_ids=true`` are read from their own outputs folders
(``--data-root`` where those are not on this machine); the ensemble sends what its strictest member sent.
"""

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
    members = parser.add_mutually_exclusive_group(required=True)
    members.add_argument("--runs", nargs="+", metavar="RUN_ID", help="the member runs")
    members.add_argument("--sweep", nargs="+", metavar="OVERRIDE",
                         help="the members are the runs of this sweep: the overrides given to "
                         "`python -m bench.run --multirun` (e.g. +sweep=brainbench data=ibsr18 data.root=...)")
    parser.add_argument("--name", required=True, help="the ensemble's name (its row reads ensemble:NAME)")
    parser.add_argument("--tta", choices=("none", "flips"), default="none",
                        help="also average over the 8 axis-flip combinations")
    parser.add_argument("--out", type=Path, default=None,
                        help="outputs folder (default <runs-dir>/outputs/<experiment>/ensemble-NAME-<hash>)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="the members' data.root on this machine: needed only for members logged with "
                        "tracking.log_paths=false or hash_subject_ids=true whose outputs folders are not here")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="runs folder (default store, lock; default runs, or with --sweep the sweep's paths.runs)")
    return parser


def run(args: argparse.Namespace) -> int:
    from bench.predict.ensemble_run import run_ensemble
    from bench.tracking.runs import existing_store

    runs_dir = args.runs_dir or Path("runs")
    run_ids = args.runs
    outputs_dirs: list[Path] = []
    if args.sweep:
        from bench.tracking.sweep_members import sweep_member_runs

        given = [f"paths.runs={args.runs_dir}"] if args.runs_dir else []  # as the sweep's own paths.runs
        found = sweep_member_runs([*args.sweep, *given], tracking_uri=args.tracking_uri)
        run_ids, runs_dir, outputs_dirs = found.run_ids, found.runs_dir, found.outputs_dirs
        uri = found.uri
        print(f"ensemble {args.name}: members {', '.join(found.described)}")
    else:
        uri = existing_store(args.tracking_uri, runs_dir)
    run_id, summary = run_ensemble(run_ids, args.name, uri, runs_dir, flips=args.tta == "flips", out=args.out,
                                   outputs_dirs=outputs_dirs, data_root=args.data_root)
    if run_id is None:
        print(f"skipping ensemble {args.name}: these runs' ensemble is already logged (or running)")
        return 0
    dice = ", ".join(f"{t} {v['dice']:.4f}" for t, v in summary["mean"].items() if "dice" in v)
    print(f"ensemble {args.name}: run {run_id}: mean Dice {dice}")
    return 0
