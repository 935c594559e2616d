"""Any dataset end to end: the format changes nothing downstream (an IBSR-layout cohort and its nnU-Net
conversion give the same Dice), and an nnU-Net dataset of 2 channels and 5 non-contiguous labels trains in torch
and TF, is reported per label name, predicted and scored."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from bad_input import assert_fails_cleanly, run_call
from conftest import TINY_SHAPE, TINY_SPACING_SCALE, Workspace

from bench.cli import main as bench_main

PAPER_SPLIT = "data.split={train:[IBSR_01,IBSR_03],val:[IBSR_07,IBSR_16],test:[IBSR_11,IBSR_12],predict:[IBSR_02]}"
"""The tiny cohort's paper split, named explicitly (the converted copy has no IBSR course folders)."""
LESION_LABELS = {"background": 0, "CSF": 1, "GM": 2, "WM": 3, "lesion": 10}


def _metrics(outputs: Path) -> dict[str, pd.DataFrame]:
    """Run name (without its hash) -> its metrics.csv."""
    found = {}
    for csv in outputs.rglob("metrics.csv"):
        found[csv.parent.name.rsplit("-", 1)[0]] = pd.read_csv(csv).sort_values(["case", "class"]).reset_index(drop=True)
    return found


def test_nnunet_copy_of_a_cohort_gives_the_same_rows(tiny_cohort: Path, workspace: Workspace) -> None:
    converted = workspace.root / "nnunet"
    assert bench_main(["convert", "ibsr18", str(tiny_cohort), "--to", "nnunet", str(converted)]) == 0
    assert json.loads((converted / "dataset.json").read_text())["labels"] == {"background": 0, "CSF": 1, "GM": 2, "WM": 3}
    results = {}
    for name, data in (("ibsr", ["data=synthetic", f"data.root={tiny_cohort}"]),
                       ("nnunet", ["data=nnunet", f"data.root={converted}", "data.fold=null"])):
        args = workspace.overrides(Path(data[1].split("=", 1)[1]), "+experiment=table1/row5,table1/row9", data[0],
                                   *data[2:], PAPER_SPLIT, f"paths.outputs={workspace.runs / name}")
        done = workspace.bench_run(args, multirun=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        results[name] = _metrics(workspace.runs / name)
    assert sorted(results["ibsr"]) == sorted(results["nnunet"]) == ["row5-unet3d-torch-raw-seed0",
                                                                    "row9-unet3d-torch-histmatch-seed0"]
    for run, table in results["ibsr"].items():
        other = results["nnunet"][run]
        assert table[["case", "class"]].equals(other[["case", "class"]])
        np.testing.assert_allclose(other["dice"], table["dice"], rtol=0, atol=1e-6, err_msg=run)


@pytest.fixture(scope="module")
def lesion_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lesion") / "Dataset001_Lesion"
    assert bench_main(["synth", "--format", "nnunet", "--channels", "2", "--labels", "5", "--out", str(root),
                       "--subjects", "7", "--shape", *map(str, TINY_SHAPE),
                       "--spacing-scale", str(TINY_SPACING_SCALE)]) == 0
    return root


def test_two_channels_five_labels_train_report_predict_and_score(lesion_dataset: Path, workspace: Workspace,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = lesion_dataset
    info = json.loads((root / "dataset.json").read_text())
    assert info["labels"] == LESION_LABELS and info["channel_names"] == {"0": "T1", "1": "FLAIR"}
    args = workspace.overrides(root, "+experiment=table1/row5", "data=nnunet", "data.folds=3", "framework=torch,tf")
    done = workspace.bench_run(args, multirun=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    outputs = sorted((workspace.runs / "outputs" / "table1-Dataset001_Lesion-smoke").iterdir())
    assert [o.name.split("-")[2] for o in outputs] == ["tf", "torch"]
    for out in outputs:
        summary = json.loads((out / "summary.json").read_text())
        assert summary["labels"] == LESION_LABELS and summary["channels"] == ["T1", "FLAIR"]
        assert summary["spec"]["model"]["params"]["in_channels"] == 2
        assert summary["spec"]["model"]["params"]["num_classes"] == 5
        metrics = pd.read_csv(out / "metrics.csv")
        assert sorted(set(metrics["class"])) == ["CSF", "GM", "WM", "lesion"]
        history = pd.read_csv(out / "history.csv")
        assert {"val_dice_CSF", "val_dice_lesion"} <= set(history.columns)
        for prediction in (out / "predictions").glob("*.nii.gz"):  # written in the dataset's label values
            assert set(np.unique(np.asarray(nib.load(prediction).dataobj)).tolist()) <= set(LESION_LABELS.values())
    runs = workspace.runs_()
    assert {"test_dice_lesion", "val_dice_lesion"} <= set(runs[0].data.metrics)
    assert runs[0].data.params["data.labels.lesion"] == "10"

    assert bench_main(["report", "--runs-dir", str(workspace.runs), "--out", "reports"]) == 0
    table = (workspace.root / "reports" / "table1.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| N |"))
    assert [c.strip() for c in header.split("|") if c.strip().startswith("DICE")] == [
        "DICE CSF", "DICE GM", "DICE WM", "DICE lesion"]
    assert "paper" not in table

    model = outputs[1] / "model"
    capsys.readouterr()
    assert bench_main(["predict", "--model", str(model), "--input", str(root / "imagesTs"), "--out", "labels"]) == 0
    written = sorted(p.name for p in (workspace.root / "labels").iterdir())
    assert written == ["IBSR_02.nii.gz"]
    assert bench_main(["evaluate", "--labels", str(root / "dataset.json"), "--pred-dir", "labels",
                       "--ref-dir", str(root / "labelsTs"), "--out", "scores.csv"]) == 0
    scores = pd.read_csv(workspace.root / "scores.csv")
    assert list(scores["class"]) == ["CSF", "GM", "WM", "lesion"] and scores["dice"].between(0, 1).all()
    assert bench_main(["predict", "--model", str(model), "--input", str(root / "imagesTs" / "IBSR_02_0000.nii.gz"),
                       "--out", "one"]) == 2
    assert "1 input file(s) for a model of 2 input channel(s)" in capsys.readouterr().err


def _missing_channel(root: Path) -> tuple[str, str]:
    (root / "imagesTr" / "IBSR_03_0001.nii.gz").unlink()
    return "imagesTr/IBSR_03_0001.nii.gz", "case IBSR_03 has no channel 1 (FLAIR)"


def _unknown_label_value(root: Path) -> tuple[str, str]:
    path = root / "labelsTr" / "IBSR_07.nii.gz"
    image = nib.load(path)
    array = np.asarray(image.dataobj).copy()
    array[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(array, image.affine, image.header), path)
    return "labelsTr/IBSR_07.nii.gz", "label values 7 are not in"


def _region_label(root: Path) -> tuple[str, str]:
    info = json.loads((root / "dataset.json").read_text())
    info["labels"]["whole brain"] = [1, 2, 3]
    (root / "dataset.json").write_text(json.dumps(info))
    return "dataset.json", "region-based training (nnU-Net regions) is not supported"


def _channel_geometry(root: Path) -> tuple[str, str]:
    path = root / "imagesTr" / "IBSR_11_0001.nii.gz"
    image = nib.load(path)
    affine = image.affine.copy()
    affine[:3, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine, image.header), path)
    return "imagesTr/IBSR_11_0001.nii.gz", "channel 1 origin"


@pytest.mark.parametrize("damage", [_missing_channel, _unknown_label_value, _region_label, _channel_geometry],
                         ids=["missing channel", "unknown label value", "region label", "channel geometry"])
def test_a_bad_dataset_stops_the_run_before_anything_is_tracked(
    damage: Callable[[Path], tuple[str, str]], lesion_dataset: Path, workspace: Workspace, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = Path(shutil.copytree(lesion_dataset, tmp_path / "dataset"))
    file, problem = damage(root)
    call = run_call(workspace, root, "data=nnunet", "data.folds=3", mentions=(str(root / file), problem))
    assert_fails_cleanly(call, workspace, tmp_path, capsys, monkeypatch)
