"""``bench runs export`` / ``bench runs import``: carry finished runs' records from one tracking store to another."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.commands import add_runs_dir


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "runs", help="export finished runs' records to a file, or import such a file into a store",
        description="Export: the FINISHED runs of one experiment (params, tags, metric histories, summary.json, "
        "metrics.csv, history.csv, per_subject_metrics.json; no predictions, images or weights) as one JSON file "
        "(gzip when it ends in .gz). Import: recreate them in another store under the same experiment, skipping "
        "configurations already FINISHED there; a sweep run against that store afterwards skips them too.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="{export,import}")
    export = actions.add_parser("export", help="write an experiment's finished runs to FILE")
    export.add_argument("--experiment", help="MLflow experiment name (default: the one with the newest run)")
    export.add_argument("--filter", default="", metavar="MLFLOW_FILTER",
                        help="only runs matching this MLflow search filter, e.g. \"params.`data.fold` = '0'\"")
    export.add_argument("--out", type=Path, required=True, help="the export file (.json or .json.gz)")
    add_runs_dir(export, "runs folder of the source store")
    export.add_argument("--tracking-uri", help="source tracking URI (default: $MLFLOW_TRACKING_URI or the runs folder's)")
    load = actions.add_parser("import", help="recreate the runs of FILE in a store")
    load.add_argument("file", type=Path, help="a file written by `bench runs export`")
    load.add_argument("--experiment", help="experiment to import into (default: the exported experiment's name)")
    add_runs_dir(load, "runs folder of the target store (created when missing)")
    load.add_argument("--tracking-uri", help="target tracking URI (default: $MLFLOW_TRACKING_URI or the runs folder's)")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.action == "export":
        return _export(args)
    return _import(args)


def _export(args: argparse.Namespace) -> int:
    from bench.evaluation.runs import open_experiment
    from bench.tracking.transfer import export_runs, write_export

    _, tracker = open_experiment(args.experiment, args.tracking_uri, args.runs_dir)
    document = export_runs(tracker, args.filter)
    write_export(document, args.out)
    print(f"exported {len(document['runs'])} finished runs of {document['experiment']!r} to {args.out}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from bench.tracking.runs import Tracker
    from bench.tracking.transfer import import_runs, read_export

    document = read_export(args.file)
    tracker = Tracker(args.experiment or document["experiment"], args.tracking_uri, args.runs_dir)
    result = import_runs(tracker, document)
    skipped = f", {len(result.skipped)} skipped (already FINISHED there)" if result.skipped else ""
    print(f"imported {len(result.imported)} runs into {result.experiment!r}{skipped}")
    return 0
