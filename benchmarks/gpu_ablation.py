"""The recipe's ablation (conf/sweep/brainbench_ablation) on a CUDA machine that has PyTorch but not the
rest of brainbench's stack (no MLflow, Hydra, SimpleITK or TensorFlow there: a bare GPU box).

Two steps:

    # here, with the full environment: compose the sweep, preprocess the cohort, write one compressed file
    python -m benchmarks.gpu_ablation pack --out .abl/pack.pkl.gz +sweep=brainbench_ablation data=ibsr18 \\
        data.root=$IBSR18_ROOT data.split=holdout
    # there: every variant trains at once on the GPU, same epochs for all; one JSON per variant + summary
    python -m benchmarks.gpu_ablation run --pack .abl/pack.pkl.gz --out results/ --deadline-s 360

``run`` first trains every variant for ``--calibration-epochs`` at once to measure the seconds per epoch
under that load, then gives every variant the same number of epochs (at most the profile's), the most that
fits the deadline: a budget in epochs (the same for every row, written into the results), chosen from the
measured speed so that the whole ablation ends in one bounded call. The packed file holds preprocessed
subjects: like the data it comes from, never commit it.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import math
import pickle
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

TISSUES = ("CSF", "GM", "WM")


def _stub_simpleitk() -> None:
    """The packed cohort needs no image IO; modules that import SimpleITK at the top still load without it."""
    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        class Missing(types.ModuleType):
            def __getattr__(self, name: str) -> Any:
                if name.startswith("__"):  # the import machinery's probes (__path__, __spec__, ...)
                    raise AttributeError(name)
                raise ImportError(f"SimpleITK is not installed here (SimpleITK.{name} was asked for)")

        sys.modules["SimpleITK"] = Missing("SimpleITK")


def pack(out: Path, overrides: list[str]) -> None:
    """Compose the sweep's jobs, load and preprocess each cohort they use once (variants that differ only in
    their model or training share one; ``data.train_on_val`` is a cohort of its own, since the preprocessing
    is fitted on the training subjects), and write everything ``run`` needs."""
    from bench.experiment import _prepare, load_data
    from bench.sweeps import sweep_specs

    jobs = sweep_specs(overrides)
    specs = [(job[-1] if len(job) == 1 else _variant(job), spec) for job, spec in jobs]
    keys: list[tuple[Any, Any]] = []
    cohorts: list[dict[str, Any]] = []
    cohort_of: list[int] = []
    for _, spec in specs:
        key = (spec.data, spec.preprocess)
        if key not in keys:
            keys.append(key)
            cohort = load_data(spec)
            pipeline, prepared = _prepare(spec, cohort)
            for step in pipeline.steps:  # every packed subject is already prepared: the GPU side only inverts
                if getattr(step, "_reference_image", None) is not None:  # histogram matching's SimpleITK image
                    setattr(step, "_reference_image", None)  # noqa: B010 - a private field of one step kind
            cohorts.append({"pipeline": pipeline, "prepared": prepared,
                            "splits": {s: list(cohort.split(s)) for s in ("train", "val", "test")}})
        cohort_of.append(keys.index(key))
    payload: dict[str, Any] = {"specs": specs, "overrides": overrides, "cohorts": cohorts, "cohort_of": cohort_of}
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with gzip.open(partial, "wb", compresslevel=6) as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
    partial.rename(out)
    subjects = len({c.id for cohort in cohorts for split in cohort["splits"].values() for c in split})
    print(f"packed {len(specs)} variants, {subjects} subjects in {len(cohorts)} preprocessed cohort(s): {out} "
          f"({out.stat().st_size / 2**20:.1f} MiB)")


def _variant(job: list[str]) -> str:
    """A job's short name: the values of its swept overrides (``+ablation=plain_block`` -> ``plain_block``)."""
    swept = [o.split("=", 1)[1] for o in job if o.startswith("+ablation=")]
    return swept[0] if swept else "-".join(o.split("=", 1)[1] for o in job)


def _load(pack_path: Path) -> dict[str, Any]:
    _stub_simpleitk()
    with gzip.open(pack_path, "rb") as f:
        return pickle.load(f)  # a file this script wrote (pickle: never load one from elsewhere)


def train_one(pack_path: Path, index: int, epochs: int, out: Path, evaluate: bool) -> None:
    """Train variant ``index`` for ``epochs`` (same everything else), then score it on the test subjects."""
    payload = _load(pack_path)
    from bench.contract import NullLogger
    from bench.evaluation.evaluate import evaluate_case, summarize
    from bench.segmenters import TrainingData

    name, spec = payload["specs"][index]
    network = spec.segmenter
    train = dataclasses.replace(network.train, epochs=epochs, progress=False)  # device auto: CUDA when present
    network = dataclasses.replace(network, train=train)
    from bench.segmenters import build_method

    segmenter = build_method(network)
    cohort = payload["cohorts"][payload["cohort_of"][index]]
    splits, prepared = cohort["splits"], cohort["prepared"]
    started = time.perf_counter()
    history = segmenter.fit(TrainingData(train=splits["train"], val=splits["val"], prepared=prepared), NullLogger())
    fit_s = time.perf_counter() - started
    result: dict[str, Any] = {
        "variant": name, "label": spec.label, "config_hash": spec.config_hash, "epochs": epochs,
        "patches_seen": history.epochs[-1].patches_seen, "best_epoch": history.best_epoch,
        "convergence": history.convergence, "fit_seconds": fit_s,
        "seconds_per_epoch": [r.seconds for r in history.epochs],
        "val_dice_last": history.epochs[-1].val_dice, "segmenter": segmenter.describe(),
    }
    if evaluate:
        import numpy as np

        rows = []
        for case in splits["test"]:
            probabilities = segmenter.predict(case, prepared[case.id], cohort["pipeline"]).probabilities
            labels = case.image.with_array(np.argmax(probabilities, axis=0).astype(np.uint8))
            rows.extend(evaluate_case(labels, case.label, case.id))
        summary = summarize(rows)
        result["test"] = {t: {k: summary["mean"][t][k] for k in ("dice", "avd", "hd", "hd95")} for t in TISSUES}
        result["per_subject"] = rows
    (out / f"{name}.json").write_text(json.dumps(result, indent=1, default=str))


def _launch(args: argparse.Namespace, names: list[str], epochs: int, out: Path, evaluate: bool) -> list[str]:
    """Train every variant at once in its own process; return the names of those that failed."""
    procs = []
    for index, name in enumerate(names):
        cmd = [sys.executable, "-m", "benchmarks.gpu_ablation", "one", "--pack", str(args.pack), "--index",
               str(index), "--epochs", str(epochs), "--out", str(out), *(["--evaluate"] if evaluate else [])]
        log = open(out / f"{name}.log", "w")  # noqa: SIM115 - closed when the process ends
        procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    failed = []
    for name, proc, log in procs:
        if proc.wait() != 0:
            failed.append(name)
        log.close()
    return failed


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    payload = _load(args.pack)
    specs, overrides = payload["specs"], payload["overrides"]
    del payload
    names = [name for name, _ in specs]
    profile_epochs = specs[0][1].segmenter.train.epochs
    out = Path(args.out)
    calib = out / "calibration"
    calib.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    failed = _launch(args, names, args.calibration_epochs, calib, evaluate=False)
    if failed:
        _show_logs(calib, failed)
        return 1
    calib_wall = time.monotonic() - t0
    per_epoch = max(
        sum(s[1:]) / max(1, len(s) - 1)  # the first epoch includes warm-up
        for s in (json.loads((calib / f"{n}.json").read_text())["seconds_per_epoch"] for n in names)
    )
    left = args.deadline_s - (time.monotonic() - started) - args.reserve_s
    epochs = max(1, min(profile_epochs, math.floor(left / per_epoch)))
    print(f"calibration: {len(names)} variants at once, {per_epoch:.2f} s per epoch each ({calib_wall:.0f} s wall); "
          f"{left:.0f} s left for training -> {epochs} epochs each (profile: {profile_epochs})", flush=True)
    t1 = time.monotonic()
    failed = _launch(args, names, epochs, out, evaluate=True)
    results = {n: json.loads((out / f"{n}.json").read_text()) for n in names if (out / f"{n}.json").exists()}
    table = {n: {"label": r["label"], "patches_seen": r["patches_seen"], "best_epoch": r["best_epoch"],
                 "fit_seconds": round(r["fit_seconds"], 1), **{t: r["test"][t] for t in TISSUES}}
             for n, r in results.items()}
    (out / "summary.json").write_text(json.dumps(
        {"epochs": epochs, "seconds_per_epoch_calibrated": per_epoch, "wall_seconds": time.monotonic() - t1,
         "failed": failed, "overrides": overrides, "variants": table, "results": results}, indent=1, default=str))
    print(f"{'variant':22s} {'CSF':>6s} {'GM':>6s} {'WM':>6s}  HD GM/WM  patches")
    for n, row in table.items():
        print(f"{n:22s} {row['CSF']['dice']:6.3f} {row['GM']['dice']:6.3f} {row['WM']['dice']:6.3f}  "
              f"{row['GM']['hd']:.1f}/{row['WM']['hd']:.1f}  {row['patches_seen']}", flush=True)
    _show_logs(out, failed)
    return 1 if failed else 0


def _show_logs(folder: Path, failed: list[str]) -> None:
    for name in failed:
        lines = (folder / f"{name}.log").read_text(errors="replace").splitlines()
        print(f"--- {name} failed; the end of {folder / (name + '.log')}:", *lines[-15:], sep="\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_ablation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="compose the sweep and preprocess the cohort into one file (full environment)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("overrides", nargs="+", help="the sweep's overrides (+sweep=brainbench_ablation data=...)")
    r = sub.add_parser("run", help="train every variant at once on the GPU and score it (bare CUDA machine)")
    r.add_argument("--pack", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--deadline-s", type=float, default=360.0, help="the whole run ends within this (seconds)")
    r.add_argument("--reserve-s", type=float, default=60.0, help="kept for start-up, inference and scoring")
    r.add_argument("--calibration-epochs", type=int, default=3)
    o = sub.add_parser("one")  # internal: one variant, in its own process
    o.add_argument("--pack", type=Path, required=True)
    o.add_argument("--index", type=int, required=True)
    o.add_argument("--epochs", type=int, required=True)
    o.add_argument("--out", type=Path, required=True)
    o.add_argument("--evaluate", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.out, args.overrides)
        return 0
    if args.command == "one":
        train_one(args.pack, args.index, args.epochs, args.out, args.evaluate)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
