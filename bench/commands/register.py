"""``bench register RUN_ID NAME``: put a run's logged model into the MLflow model registry."""

from __future__ import annotations

import argparse
from typing import Any

from bench.commands import add_runs_dir


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "register", help="register a CNN run's logged model in the MLflow model registry",
        description="Register the logged model of a CNN run as a new version of a registered model; then "
        "`bench predict --model models:/NAME/VERSION` applies it.",
    )
    parser.add_argument("run_id", metavar="RUN_ID", help="the CNN run whose model to register")
    parser.add_argument("name", metavar="NAME", help="registered model name (created if missing)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    add_runs_dir(parser, "runs folder of the default store")
    return parser


def run(args: argparse.Namespace) -> int:
    from bench.tracking.models import register_model
    from bench.tracking.runs import existing_store

    version = register_model(args.run_id, args.name, existing_store(args.tracking_uri, args.runs_dir))
    print(f"registered run {args.run_id}'s model as models:/{args.name}/{version}")
    return 0
