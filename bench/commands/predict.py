"""``bench predict``: segment new scans with one or more trained models (logged by CNN runs).

    bench predict --model runs:/RUN_ID --input scan.nii.gz --out labels/
    bench predict --model models:/NAME/VERSION --model path/to/model --input scans/ --out labels/ --tta flips

    bench predict --model runs:/RUN_ID --input imagesTs/ --out labels/          # nnU-Net naming, N channels
    bench predict --model runs:/RUN_ID --input case_0000.nii.gz --input case_0001.nii.gz --out labels/

Each input gets ``<out>/<id>.nii.gz`` (the model's label values: IBSR 0 background, 1 CSF, 2 GM, 3 WM) in its
own geometry, and with ``--probabilities`` also ``<out>/<id>_probabilities.nii.gz`` (float32 ``[X, Y, Z, K]``,
class-index order). Every model and input is checked before anything is written; each file is written
atomically.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.commands import add_runs_dir
from bench.errors import BenchError


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "predict", help="segment new scans with trained models (ensembles, test-time flips)",
        description="Segment scans (NIfTI) with one model or the average of several (softmax mean on each scan's "
        "grid). A model is runs:/RUN_ID (the run's logged model), models:/NAME/VERSION (model registry), "
        "models:/MODEL_ID, or a model folder (<outputs>/<run>/model). A model of several input channels takes a "
        "case as its channel files (--input repeated, in the model's order) or a folder in nnU-Net naming "
        "(<id>_0000.nii.gz, <id>_0001.nii.gz, ...). Scans whose spacing or orientation differ from the training "
        "data are resampled in and back. Label maps hold the model's label values.",
    )
    parser.add_argument("--model", action="append", required=True, metavar="MODEL",
                        help="runs:/RUN_ID | models:/NAME/VERSION | PATH (repeat to average several)")
    parser.add_argument("--input", type=Path, required=True, action="append",
                        help="a .nii/.nii.gz scan or a folder of them; repeat to give one case's channel files")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--tta", choices=("none", "flips"), default="none",
                        help="test-time augmentation: flips = average over the 8 axis-flip combinations")
    parser.add_argument("--probabilities", action="store_true", help="also write <id>_probabilities.nii.gz")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    add_runs_dir(parser, "runs folder of the default store")
    return parser


def load_models(references: Sequence[str], uri: str | None, runs: Path, tmp: Path) -> list[Any]:
    """Each ``--model``: an existing folder, or an MLflow reference downloaded into ``tmp``."""
    from bench.predict.model import LoadedModel

    models = []
    for index, reference in enumerate(references):
        if reference.startswith(("runs:/", "models:/")):
            from bench.tracking.models import download_model
            from bench.tracking.runs import existing_store

            local = download_model(reference, existing_store(uri, runs), tmp / str(index))
            models.append(LoadedModel.load(local, label=reference))
        elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", reference):  # a scheme; one letter is a drive (C:/)
            raise BenchError(f"--model {reference!r} has a scheme brainbench does not read",
                             fix="use runs:/RUN_ID, models:/NAME/VERSION or a local model folder")
        else:
            models.append(LoadedModel.load(Path(reference), label=reference))
    return models


def run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bench.io import write_probability_maps, write_volume
    from bench.predict.inputs import check_output_folder, find_scans
    from bench.predict.model import ensemble_probabilities, flip_warnings, labels_of

    out = check_output_folder(args.out)
    for path in args.input:
        if not path.exists():
            raise BenchError("input does not exist", path=path, fix="give a .nii/.nii.gz file or a folder of them")
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        models = load_models(args.model, args.tracking_uri, args.runs_dir, Path(tmp))
        labels = models[0].info.labels
        scans = find_scans(args.input, channels=len(models[0].info.channels))
        for scan in scans:  # every input checked before anything is written
            scan.load()
        flips = args.tta == "flips"
        for warning in flip_warnings(models) if flips else []:
            print(f"warning: {warning}", file=sys.stderr)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns) as progress:
            task = progress.add_task("predicting", total=len(scans))
            patches = 0

            def advance(count: int) -> None:
                nonlocal patches
                patches += count
                progress.update(task, description=f"{scan.id}: {patches} patches")

            for scan in scans:
                started = time.perf_counter()
                patches = 0
                case = scan.load()
                probs = ensemble_probabilities(models, case, flips=flips, progress=advance)
                try:
                    write_volume(case.image.with_array(labels_of(probs, labels)), out / f"{scan.id}.nii.gz")
                    if args.probabilities:
                        write_probability_maps(probs, case.image, out / f"{scan.id}_probabilities.nii.gz")
                except OSError as exc:
                    raise BenchError(f"cannot write the output of {scan.id} ({exc})", path=out) from exc
                progress.advance(task)
                progress.console.print(f"wrote {out / (scan.id + '.nii.gz')} ({time.perf_counter() - started:.1f} s)")
    names = ", ".join(m.describe() for m in models)
    print(f"{len(scans)} scan(s) segmented with {names}{' and 8 flips' if flips else ''}")
    return 0
