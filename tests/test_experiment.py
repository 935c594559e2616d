"""One real end-to-end run: ``python -m bench.run`` trains a tiny torch 3D U-Net (Table 1 row 5, smoke
profile) on the tiny synthetic cohort, tracks it in MLflow and writes its outputs; ``bench report`` turns
it into Table 1 / Table 2 and plots; running the same command again skips the finished configuration."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import Workspace, temp_files

from bench import hardware
from bench.cli import main as bench_main
from bench.evaluation.evaluate import evaluate_case
from bench.evaluation.paper import paper_value
from bench.io import read_volume
from bench.training import frameworks
from bench.types import TISSUE_NAMES

TEST_IDS = ["IBSR_11", "IBSR_12"]
PREDICTED_IDS = ["IBSR_02", "IBSR_11", "IBSR_12"]  # test + predict (unlabelled Test_Set) subjects
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def subject_folder(data: Path, subject: str) -> Path:
    return next(p for p in data.glob(f"*/{subject}") if p.is_dir())


def test_smoke_run_end_to_end(tiny_cohort: Path, workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    args = workspace.overrides(tiny_cohort, "+experiment=table1/row5")
    done = workspace.bench_run(args, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "row5-unet3d-torch-raw-seed0: Dice CSF" in done.stdout
    # the line says what the run trained in: smoke is fp32 on every CPU (auto would say bf16 or fp32 here)
    assert re.search(r"row5-unet3d-torch-raw-seed0: Dice CSF .* \(fp32, \d+ epochs, fit \d+\.\d min\)", done.stdout)
    assert "error:" not in done.stderr

    # MLflow: one FINISHED child run with params, tags, metrics and artifacts
    (run,) = workspace.runs_()
    assert run.info.status == "FINISHED"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert (tags["table_row"], tags["architecture"], tags["framework"], tags["profile"]) == ("5", "unet3d", "torch",
                                                                                            "smoke")
    assert tags["git_commit"] and tags["mlflow.parentRunId"]
    assert params["model.architecture"] == "unet3d" and params["train.optimizer.name"] == "adadelta"
    assert params["data.root"] == str(tiny_cohort)
    # where it ran: the device (env.* params, outside the run's identity) and what the framework trained on
    assert params["train.device"] == "auto"
    kind = hardware.device_kind("auto")
    assert {k: v for k, v in params.items() if k.startswith("env.device.")} == {
        f"env.device.{key}": value for key, value in hardware.device_record(kind).items()}
    assert params["env.device.kind"] != "cpu" or params["env.device.name"] == params["env.cpu"]
    assert tags["brainbench.device"] == ("cuda:0" if kind == "cuda" else "cpu")

    # Outputs on disk
    out_dirs = list((workspace.runs / "outputs").glob("*/row5-unet3d-torch-raw-seed0-*"))
    assert len(out_dirs) == 1
    out = out_dirs[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["config_hash"] == tags["brainbench.config_hash"] == out.name.rsplit("-", 1)[1]
    assert summary["run"]["test_subjects"] == TEST_IDS
    # summary.json names its MLflow run; the run's log is in its folder and logged with it
    assert (summary["run"]["mlflow_run_id"], summary["run"]["mlflow_experiment"]) == (
        run.info.run_id, "table1-synthetic-smoke")
    assert "epoch 1: train_loss" in (out / "run.log").read_text()
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert (artifacts / "run.log").read_bytes() == (out / "run.log").read_bytes()
    # Each file is on disk once: the MLflow artifacts (run and logged model) and model/network are hard links
    # to the run folder's files (its checkpoint/ for the weights), never copies
    stored: dict[tuple[int, int], list[Path]] = {}
    for path in [*out.rglob("*"), *(workspace.runs / "artifacts").rglob("*")]:
        if path.is_file():
            stored.setdefault((path.stat().st_dev, path.stat().st_ino), []).append(path)
    by_name: dict[str, set[tuple[int, int]]] = {}
    for inode, paths in stored.items():
        for path in paths:
            if path.name != "MLmodel" and path.name != "per_subject_metrics.json":
                by_name.setdefault(path.name, set()).add(inode)
    assert {name: len(inodes) for name, inodes in by_name.items() if len(inodes) > 1} == {}
    (weights,) = {inode for inode, paths in stored.items() if paths[0].name == "weights.pt"}
    assert len(stored[weights]) == 4  # checkpoint/, model/network/, the run's and the logged model's artifacts
    assert summary["n_cases"] == 2 and summary["run"]["epochs_run"] == 2
    assert "empty_masks" in summary["rules"]
    for tissue in TISSUE_NAMES.values():
        mean_dice = summary["mean"][tissue]["dice"]
        assert 0.0 <= mean_dice <= 1.0
        assert metrics[f"test_dice_{tissue}"] == pytest.approx(mean_dice, abs=1e-12)
    assert metrics["fit_seconds"] > 0 and metrics["seconds_per_volume"] > 0

    # Predictions: one per test/predict subject, on the subject's native grid, labels in {0..3}
    assert sorted(p.name for p in (out / "predictions").iterdir()) == [f"{s}.nii.gz" for s in PREDICTED_IDS]
    table = pd.read_csv(out / "metrics.csv")
    for subject in PREDICTED_IDS:
        folder = subject_folder(tiny_cohort, subject)
        image = read_volume(folder / f"{subject}.nii.gz")
        prediction = read_volume(out / "predictions" / f"{subject}.nii.gz")
        assert prediction.shape == image.shape
        np.testing.assert_allclose(prediction.spacing_mm, image.spacing_mm, rtol=0, atol=1e-6)
        np.testing.assert_allclose(prediction.origin_mm, image.origin_mm, rtol=0, atol=1e-6)
        np.testing.assert_allclose(prediction.direction, image.direction, rtol=0, atol=1e-9)
        assert set(np.unique(prediction.array)) <= {0, 1, 2, 3}
        if subject in TEST_IDS:  # the stored metrics are those of the stored prediction
            reference = read_volume(folder / f"{subject}_seg.nii.gz")
            for row in evaluate_case(prediction, reference, subject):
                stored = table[(table["case"] == subject) & (table["class"] == row["class"])].iloc[0]
                for metric in ("dice", "avd", "hd", "hd95", "assd"):
                    assert math.isclose(row[metric], stored[metric], rel_tol=1e-9) or (
                        math.isinf(row[metric]) and math.isinf(stored[metric])), (subject, row["class"], metric)

    # The checkpoint loads (safely) and predicts class probabilities
    segmenter = frameworks.load(out / "checkpoint")
    probs = segmenter.predict_patches(np.zeros((1, 1, 16, 16, 16), dtype=np.float32))
    assert probs.shape == (1, 4, 16, 16, 16)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    # The same command again: the finished configuration is skipped, not re-run
    again = workspace.bench_run(args, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Dice" not in again.stdout and "skipping" in again.stdout + again.stderr
    assert [r.info.run_id for r in workspace.runs_()] == [run.info.run_id]

    # bench report: tables with the paper's values, plots; nothing half-written
    capsys.readouterr()
    assert bench_main(["report", "--runs-dir", str(workspace.runs)]) == 0
    reports = workspace.runs / "reports" / "table1-synthetic-smoke"  # one folder per experiment
    names = {"table1.md", "table1.csv", "table2.md", "table2.csv", "boxplots.png", "overlays.png"}
    assert names <= {p.name for p in reports.iterdir()}
    assert temp_files(reports) == []
    for png in ("boxplots.png", "overlays.png"):
        assert (reports / png).read_bytes()[:8] == PNG_MAGIC
    table1 = pd.read_csv(reports / "table1.csv")
    assert len(table1) == 1
    row = table1.iloc[0]
    assert (row["row"], row["model"], row["framework"], row["seeds"], row["subjects"]) == (5, "unet3d", "torch", 1, 2)
    for tissue in TISSUE_NAMES.values():
        dice = pd.to_numeric(table[table["class"] == tissue]["dice"])
        assert row[f"dice_{tissue}_mean"] == pytest.approx(dice.mean())
        assert row[f"dice_{tissue}_sd"] == pytest.approx(dice.std(ddof=1))
        assert row[f"dice_{tissue}_paper"] == paper_value("dice", 5, tissue)
        assert row[f"dice_{tissue}_diff"] == pytest.approx(dice.mean() - paper_value("dice", 5, tissue))
    # two smoke epochs without early stopping end while the loss still falls: the row is marked not converged
    assert row["not_converged"] == (run.data.tags["brainbench.convergence"] == "still_improving")
    marked = "| 5 † | unet3d |" if row["not_converged"] else "| 5 | unet3d |"
    assert marked in (reports / "table1.md").read_text()
    assert "wrote" in capsys.readouterr().out
