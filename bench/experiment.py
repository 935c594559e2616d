"""``run(spec) -> RunResult``: the one place that wires data, preprocessing, training, inference,
evaluation and tracking together for one configuration.

Outputs of a run go to ``<outputs>/<experiment>/<run name>-<config hash>/``: ``predictions/<id>.nii.gz``
(native geometry of each subject), ``metrics.csv`` (subject × class), ``summary.json``, ``history.csv``,
``run.log``, ``checkpoint/`` and ``model/`` (CNN runs: the model ``bench predict`` applies, also logged as the
run's MLflow logged model; its network files are hard links to ``checkpoint/``). The same files are logged to the
run's MLflow child run: on a local store as hard links to this folder (its source), so each is on disk once.
``tracking.log_images``/``log_paths``/``hash_subject_ids`` filter what goes to the store (``bench.privacy``);
the outputs folder always holds everything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.contract import EpochRecord, NullLogger, RunLogger, TrainHistory
from bench.data.cohort import Cohort, load_cohort
from bench.data.discovery import discover
from bench.data.folds import FoldSplit, fold_of_subject
from bench.data.labels import same_labels
from bench.data.manifest import content_digest, manifest
from bench.errors import BenchError, DataError
from bench.evaluation.evaluate import evaluate_case, mean_test_metrics, summarize, write_summary
from bench.evaluation.plots import history_plot
from bench.io import is_no_space, link_tree, no_space_error, write_volume
from bench.predict.package import PACKAGE_FILE, write_package
from bench.preprocess.pipeline import Pipeline, PreparedCase, PreprocessCache
from bench.privacy import HIDDEN, Privacy, run_filter
from bench.processes import PeakMemory
from bench.segmenters import Method, PatchNetwork, TrainingData, build_method
from bench.spec import NetworkSpec, RunSpec, effective_settings, spec_summary
from bench.tracking.models import log_model
from bench.tracking.runs import DESCRIPTION_TAG, TAG_CONVERGENCE, TAG_UNLEARNED, ChildRun, Tracker, flatten

log = logging.getLogger(__name__)
METRICS = ("dice", "avd", "hd", "hd95", "assd")


@dataclass
class RunResult:
    """What one configuration produced (``skipped`` when it had already FINISHED)."""

    name: str
    config_hash: str
    status: str
    run_id: str | None = None
    output_dir: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def load_data(spec: RunSpec) -> Cohort:
    """Load and check the cohort; a run needs training subjects and labelled test subjects."""
    root = Path(spec.data.root)
    if not root.exists():
        raise DataError("data root does not exist", path=root,
                        fix="set data.root=... (or IBSR18_ROOT), or run `bench synth` for a synthetic cohort")
    cohort = load_cohort(root, spec.data.split)  # labels as class indices of the dataset's label set
    if spec.data.train_on_val:
        cohort = cohort.with_val_in_train()
    if not same_labels(cohort.labels, spec.data.labels) or cohort.channel_names != spec.data.channels:
        raise DataError(f"the dataset changed since the run was configured: labels {cohort.labels.record()}, "
                        f"channels {list(cohort.channel_names)} (configured: {spec.data.labels.record()}, "
                        f"{list(spec.data.channels)})", path=root, fix="start the run again")
    if not cohort.split("train"):
        raise DataError(f"split {spec.data.split!r} has no training subjects", path=root)
    if not cohort.split("test"):
        raise DataError(
            f"split {spec.data.split!r} has no test subjects (is Validation_Set missing?)", path=root,
            fix="use data.split=holdout, or give explicit lists",
        )
    return cohort


def _prepare(spec: RunSpec, cohort: Cohort) -> tuple[Pipeline, dict[str, PreparedCase]]:
    pipeline = Pipeline.from_spec(spec.preprocess.steps, name=spec.preprocess.name)
    cache = PreprocessCache(Path(spec.cache_dir) / "preprocess")
    pipeline.fit(cohort.split("train"), cache=cache)
    prepared = {case.id: cache.get_or_compute(pipeline, case) for case in cohort.cases}
    return pipeline, prepared


def _history_frame(history: TrainHistory) -> pd.DataFrame:
    rows = []
    for r in history.epochs:
        row = {"epoch": r.epoch, "patches_seen": r.patches_seen, "train_loss": r.train_loss, "val_loss": r.val_loss,
               "lr": r.lr, "seconds": r.seconds, "patches_per_s": r.patches_per_s, "skipped_steps": r.skipped_steps}
        row.update({f"val_dice_{k}": v for k, v in (r.val_dice or {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def execute(spec: RunSpec, cohort: Cohort, out: Path, child: ChildRun | None, method: Method | None = None
            ) -> dict[str, Any]:
    """Train, predict and evaluate one configuration (``method``: built from the spec unless given); write
    outputs under ``out``; return the summary. Its ``peak_memory_mb`` is this run's own peak (see
    ``bench.processes.PeakMemory``), whatever ran before it in the same worker process."""
    with PeakMemory() as memory:
        return _execute(spec, cohort, out, child, method, memory)


def _execute(spec: RunSpec, cohort: Cohort, out: Path, child: ChildRun | None, method: Method | None,
             memory: PeakMemory) -> dict[str, Any]:
    logger = EpochLog(child if child is not None else NullLogger())
    t0 = time.perf_counter()
    pipeline, prepared = _prepare(spec, cohort)
    preprocess_s = time.perf_counter() - t0
    log.info("%s: %d subjects preprocessed (%s) in %.1f s; training on %d, validating on %d", spec.name,
             len(prepared), spec.preprocess.name, preprocess_s, len(cohort.split("train")), len(cohort.split("val")))
    segmenter = method if method is not None else build_method(spec.segmenter)
    t_fit = time.perf_counter()
    data = TrainingData(train=cohort.split("train"), val=cohort.split("val"), prepared=prepared,
                        labels=spec.data.labels)
    history = segmenter.fit(data, logger)
    fit_s = time.perf_counter() - t_fit
    log.info("%s: fit in %.1f s, %d epochs, best epoch %s (%s)", spec.name, fit_s, len(history.epochs),
             history.best_epoch, history.convergence.replace("_", " "))
    if history.unlearned:
        log.warning("%s: validation Dice of %s is still 0 after %d epochs (the network never predicts it)",
                    spec.name, ", ".join(history.unlearned), len(history.epochs))
    if history.skipped_steps:
        log.warning("%s: %d train step(s) had a non-finite gradient with a finite loss; their updates were "
                    "skipped (summary.json and the MLflow metric skipped_steps count them)", spec.name,
                    history.skipped_steps)
    if not history.converged:
        log.warning("%s: the epochs ran out while the %s was still improving (best epoch %s of %d)", spec.name,
                    "validation loss" if data.val else "training loss (nothing validated)", history.best_epoch,
                    len(history.epochs))
    checkpoint = out / "checkpoint"
    segmenter.save(checkpoint)
    model_dir = None
    if isinstance(spec.segmenter, NetworkSpec):  # the model `bench predict` applies (bench.predict.package)
        model_dir = write_package(out / "model", lambda network: link_tree(checkpoint, network),  # stored once
                                  spec.segmenter, pipeline, cohort.split("train"),
                                  {"run_id": None if child is None else child.run_id, "run_name": spec.name,
                                   "config_hash": spec.config_hash, "label": spec.label},
                                  spec.data.labels, spec.data.channels)

    labels = spec.data.labels
    rows: list[dict[str, Any]] = []
    predict_times: list[float] = []
    patches_done = patches_skipped = 0
    for case in [*cohort.split("test"), *cohort.split("predict")]:
        t_case = time.perf_counter()
        prediction = segmenter.predict(case, prepared[case.id], pipeline)
        indices = np.argmax(prediction.probabilities, axis=0).astype(np.uint8)
        predict_times.append(time.perf_counter() - t_case)
        patches_done += prediction.patches_predicted
        patches_skipped += prediction.patches_skipped
        label_map = case.image.with_array(indices)  # class indices, as the case's reference holds
        write_volume(label_map.with_array(labels.to_values(indices)), out / "predictions" / f"{case.id}.nii.gz")
        if case.label is not None and case.split == "test":
            rows.extend(evaluate_case(label_map, case.label, case.id, ref_path=case.label_path,
                                      labels=labels.as_indices()))

    table = pd.DataFrame(rows)
    table.to_csv(out / "metrics.csv", index=False)
    curves = _history_frame(history)
    curves.to_csv(out / "history.csv", index=False)
    if len(curves):
        history_plot(curves, out / "history.png", title=f"{spec.name}: {history.convergence.replace('_', ' ')}")
    summary = summarize(rows)
    summary["labels"] = labels.record()
    summary["channels"] = list(spec.data.channels)
    summary["run"] = {
        "name": spec.name, "config_hash": spec.config_hash, "row": spec.row, "label": spec.label,
        "mlflow_run_id": None if child is None else child.run_id, "mlflow_experiment": spec.tracking.experiment,
        "preprocess_seconds": preprocess_s, "fit_seconds": fit_s,
        "seconds_per_volume": float(np.mean(predict_times)) if predict_times else None,
        "patches_predicted": patches_done, "patches_skipped": patches_skipped,
        "best_epoch": history.best_epoch, "epochs_run": len(history.epochs), "stopped_early": history.stopped_early,
        "convergence": history.convergence, "unlearned_classes": list(history.unlearned),
        "skipped_steps": history.skipped_steps,
        "patches_seen": history.epochs[-1].patches_seen if history.epochs else 0,
        "peak_memory_mb": memory.peak_mb, "peak_memory_method": memory.method, "segmenter": segmenter.describe(),
        "split": cohort.split_name,
        "folds": fold_of_subject(discover(spec.data.root), spec.data.split)
        if isinstance(spec.data.split, FoldSplit) else None,
        "test_subjects": [c.id for c in cohort.split("test")],
        "train_subjects": [c.id for c in cohort.split("train")],
        "val_subjects": [c.id for c in cohort.split("val")],
        "subject_files": {
            c.id: {"image": str(c.image_path), "label": None if c.label_path is None else str(c.label_path),
                   **({"channels": [str(c.image_path), *map(str, c.extra_paths)]} if c.extra else {})}
            for c in cohort.cases
        },
    }
    summary["spec"] = spec_summary(spec)
    write_summary(summary, out / "summary.json")

    if child is not None:
        metrics: dict[str, float] = {
            "fit_seconds": fit_s, "seconds_per_volume": summary["run"]["seconds_per_volume"] or 0.0,
            "preprocess_seconds": preprocess_s, "peak_memory_mb": summary["run"]["peak_memory_mb"],
            "patches_skipped_fraction": patches_skipped / max(1, patches_done + patches_skipped),
            "skipped_steps": float(history.skipped_steps),
        }
        child.log_metrics({**metrics, **mean_test_metrics(summary, labels)})
        child.set_tags({TAG_CONVERGENCE: history.convergence, TAG_UNLEARNED: ",".join(history.unlearned),
                        TAG_DEVICE: str(summary["run"]["segmenter"].get("device", "cpu"))})
        child.log_table(table, "per_subject_metrics.json")
        for name in ("summary.json", "metrics.csv", "history.csv", "history.png"):
            if (out / name).exists():
                child.log_artifact(out / name)
        child.log_artifacts(out / "predictions", "predictions")
        child.log_artifacts(checkpoint, "checkpoint")
        if model_dir is not None:
            _log_model(child, spec, model_dir)
    return summary


def _log_model(child: ChildRun, spec: RunSpec, model_dir: Path) -> None:
    """Log the model folder as the run's MLflow logged model (settings as its params, identity as tags)."""
    network = spec.segmenter
    assert isinstance(network, NetworkSpec)
    inference = network.inference
    params = {"architecture": network.architecture, "framework": network.framework,
              "preprocess": spec.preprocess.name, "patch_size": list(network.sampling.patch_size),
              "overlap": inference.overlap, "blending": inference.blending,
              "background_margin_voxels": inference.background_margin_voxels,
              "skip_background": inference.skip_background, "labels": spec.data.labels.describe(),
              "channels": ", ".join(spec.data.channels),
              "versions": json.dumps(json.loads((model_dir / PACKAGE_FILE).read_text())["versions"])}
    tags = {"framework": network.framework, "architecture": network.architecture,
            "brainbench.config_hash": spec.config_hash, "table_row": "" if spec.row is None else str(spec.row)}
    log_model(child, model_dir, spec.name, params=params, tags=tags,
              flavor={"format": "brainbench_model.json", "framework": network.framework,
                      "load": "bench predict --model runs:/<run id>"})


def run_privacy(spec: RunSpec, cohort: Cohort) -> Privacy:
    """The filter for what this run sends to the store (``spec.tracking``'s switches; ids of every subject the
    data root holds, loaded by this split or not)."""
    folders = {"<paths.cache>": spec.cache_dir, "<paths.outputs>": spec.outputs_dir, "<paths.runs>": spec.runs_dir}
    return run_filter(spec.tracking.record(), data_root=spec.data.root, folders=folders,
                      subjects=[case.id for case in cohort.cases], runs_dir=Path(spec.runs_dir))


def run_params(spec: RunSpec) -> dict[str, str]:
    """The run's MLflow params: its effective settings, where it ran (``env.*``) and the privacy switches
    (``tracking.*``); without ``log_paths`` the data root as ``***/<its folder name>``."""
    params = {**flatten(effective_settings(spec)), **_environment_params(spec),
              **flatten(spec.tracking.record(), "tracking.")}
    if not spec.tracking.log_paths:
        params["data.root"] = f"{HIDDEN}/{Path(spec.data.root).resolve().name}"
    return params


def _log_datasets(child: ChildRun, spec: RunSpec, cohort: Cohort) -> None:
    """One MLflow dataset input per split used (train, val, test): subject ids, files and content digest."""
    frame = manifest(cohort)
    for context in ("train", "val", "test"):
        subjects = frame[frame["split"] == context].reset_index(drop=True)
        if len(subjects):
            child.log_dataset(subjects, name=f"{spec.data.name}:{cohort.split_name}:{context}",
                              source=spec.data.root, digest=content_digest(subjects), context=context)


def _source_tags() -> dict[str, str]:
    """MLflow's source tags: the entry point that ran (``bench.run``) and how it was started."""
    return {"mlflow.source.name": "python -m bench.run", "mlflow.source.type": "LOCAL",
            "mlflow.user": os.environ.get("USER", "") or "unknown"}


TAG_DEVICE = "brainbench.device"
"""The device the framework trained on, as it names it (``cuda:0``, ``/GPU:0``, ``cpu``, ``/CPU:0``), set after the
fit: the ``env.device.*`` params say what bench saw before it (a CPU-only framework build would train on the CPU)."""
ENVIRONMENT_PREFIX = "env."
"""Params that say where a run ran (library versions, host, CPU): not settings, so not in its hash; a report
flags a configuration whose runs differ in them."""


def _environment_params(spec: RunSpec) -> dict[str, str]:
    """``env.version.<library>``, ``env.host``, ``env.cpu`` of this process and ``env.device.*``, the device the
    run trains on (``bench.hardware.device_record``: kind, name, GPU memory and driver; an atlas: the CPU)."""
    import socket

    from bench.hardware import cpu_model, device_kind, device_record

    params = {f"{ENVIRONMENT_PREFIX}{key}": value for key, value in _version_tags().items() if key.startswith("version.")}
    params.update({f"{ENVIRONMENT_PREFIX}host": socket.gethostname(), f"{ENVIRONMENT_PREFIX}cpu": cpu_model()})
    kind = device_kind(spec.segmenter.train.device) if isinstance(spec.segmenter, NetworkSpec) else "cpu"
    params.update({f"{ENVIRONMENT_PREFIX}device.{key}": value for key, value in device_record(kind).items()})
    return params


def _version_tags() -> dict[str, str]:
    import importlib.metadata as md
    import subprocess

    tags = {}
    for pkg in ("numpy", "SimpleITK", "torch", "tensorflow-cpu", "tensorflow", "keras", "mlflow", "brainbench"):
        try:
            tags[f"version.{pkg}"] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    tags["git_commit"] = commit or "unknown"
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


RUN_LOG = "run.log"
"""The run's log (every logger's records while it ran), in its outputs folder and logged with its MLflow run."""


@contextlib.contextmanager
def captured_log(path: Path) -> Iterator[Path]:
    """Copy every log record of this process into ``path`` while the block runs."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    level = root.level
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    epochs.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        epochs.removeHandler(handler)
        root.setLevel(level)
        handler.close()


epochs = logging.getLogger("bench.epochs")
"""One line per training epoch, for the run log only (the console has the progress bar)."""
epochs.propagate = False
epochs.setLevel(logging.INFO)


@dataclass
class EpochLog:
    """A RunLogger that writes each epoch as a line of the run log, then passes it on."""

    inner: RunLogger

    def log_epoch(self, record: EpochRecord) -> None:
        dice = ", ".join(f"{k} {v:.3f}" for k, v in (record.val_dice or {}).items())
        val = "" if record.val_loss is None else f", val_loss {record.val_loss:.4f}"
        epochs.info("epoch %d: train_loss %.4f%s%s, lr %.2e, %.1f s, %.1f patches/s", record.epoch,
                    record.train_loss, val, f", val Dice {dice}" if dice else "", record.lr, record.seconds,
                    record.patches_per_s)
        self.inner.log_epoch(record)


def _log_file(child: ChildRun, path: Path) -> None:
    """Log ``path`` with a run that already failed; a failure to do so is a warning, never the run's error (every
    artifact of a run that goes on is required: a store that refuses one fails the run)."""
    try:
        if path.is_file():
            child.log_artifact(path)
    except Exception as exc:  # the run's own outcome is what matters here
        log.warning("could not log %s with run %s: %s", path, child.run_id, exc)


def run_outputs(outputs_dir: Path, experiment: str, name: str, config_hash: str) -> tuple[Path, Path]:
    """A run's output folder and the hidden one it writes into while it runs, renamed to the first only when
    the run FINISHED."""
    out = outputs_dir / experiment / f"{name}-{config_hash}"
    return out, out.with_name(f".{out.name}.partial")


def run(spec: RunSpec) -> RunResult:
    """Run one configuration end to end, tracked in MLflow; skip it if it already FINISHED."""
    tracker = Tracker(spec.tracking.experiment, spec.tracking.uri, Path(spec.runs_dir))
    parent_id = tracker.parent_run(spec.tracking.sweep)
    done = tracker.finished_run(spec.config_hash)  # skip before loading data; start_child checks again, locked
    if done is not None and not spec.force:
        log.info("skipping %s: already finished as run %s", spec.name, done.run_id)
        return RunResult(spec.name, spec.config_hash, "skipped", run_id=done.run_id)
    cohort = load_data(spec)
    method = build_method(spec.segmenter)
    if isinstance(method, PatchNetwork):
        method.check()  # one dry forward pass: a network that cannot train here fails before its run is opened
    network = spec.segmenter if isinstance(spec.segmenter, NetworkSpec) else None
    fold = spec.data.split.fold if isinstance(spec.data.split, FoldSplit) else None
    tags = {
        "table_row": str(spec.row) if spec.row is not None else "", "architecture": spec.model.architecture,
        "framework": spec.segmenter.framework, "preprocess": spec.preprocess.name,
        "optimizer": network.train.optimizer.name if network else "", "loss": network.train.loss.name if network else "",
        "sampling": network.sampling.mode if network else "", "profile": spec.profile, "seed": str(spec.seed),
        "fold": "" if fold is None else str(fold), "split": cohort.split_name, "label": spec.label,
        "data": spec.data.name, DESCRIPTION_TAG: spec.label or spec.name, **_source_tags(), **_version_tags(),
    }
    child = tracker.start_child(parent_id, spec.name, spec.config_hash, run_params(spec), tags,
                                rerun_finished=spec.force, privacy=run_privacy(spec, cohort))
    if child is None:
        log.info("skipping %s: another process is running or has finished it", spec.name)
        return RunResult(spec.name, spec.config_hash, "skipped")
    out, partial = run_outputs(Path(spec.outputs_dir), spec.tracking.experiment, spec.name, spec.config_hash)
    try:
        with child:
            for stale in (out, partial):
                if stale.exists():
                    shutil.rmtree(stale)
            partial.mkdir(parents=True)
            _log_datasets(child, spec, cohort)
            with captured_log(partial / RUN_LOG):
                try:
                    summary = execute(spec, cohort, partial, child, method)
                except BaseException as exc:  # the log goes with the run whether it finished or not (a full disk
                    _log_file(child, partial / RUN_LOG)  # may refuse it too: _log_file warns, the error comes first)
                    if isinstance(exc, Exception) and not isinstance(exc, BenchError) and is_no_space(exc, partial):
                        raise no_space_error(exc, partial.parent) from exc  # one line naming where
                    raise
                child.log_artifact(partial / RUN_LOG)  # part of the record: a store that refuses it fails the run
            partial.rename(out)
            return RunResult(spec.name, spec.config_hash, "finished", child.run_id, out, summary)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # a failed run leaves no half-written outputs
    raise BenchError("unreachable")  # pragma: no cover
