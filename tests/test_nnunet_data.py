"""nnU-Net v2 and Decathlon datasets (issue 36): dataset.json, channels, label values mapped to indices, splits
(explicit, k-fold, splits_final.json), every bad dataset as one error naming the file, ``bench data`` on them,
``bench convert ibsr18 ... --to nnunet`` (a lossless round trip) and ``bench synth --format nnunet``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bench.cli import main
from bench.data.cohort import load_cohort
from bench.data.discovery import discover
from bench.data.folds import FoldSplit, fold_of_subject, fold_split
from bench.data.labels import IBSR_LABELS
from bench.data.nnunet import is_nnunet_root, read_dataset_json
from bench.data.nnunet_write import CONVERSION_MANIFEST
from bench.data.splits import SplitSpec
from bench.data.synth import IBSR_DIRECTION, LESION_LABELS, nnunet_subject, phantom_case
from bench.errors import BenchError, ConfigError, DataError
from bench.io import Volume, read_volume, write_volume

SHAPE = (12, 10, 8)
LABELS = {"background": 0, "CSF": 1, "GM": 2, "lesion": 10}
TRAIN = ("c1", "c2", "c3", "c4", "c5")
TEST = ("t1",)


def case_arrays(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two channels and a label with the stored values 0, 1, 2, 10 (the phantom's WM becomes ``lesion``)."""
    case = phantom_case(SHAPE, seed=seed)
    assert case.label is not None
    label = case.label.array.copy()
    label[label == 3] = 10
    return case.image.array, case.image.array * 2.0 + 1.0, label


def write_json(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=1))


def write_v2(root: Path, train: tuple[str, ...] = TRAIN, test: tuple[str, ...] = TEST, **changes: object) -> Path:
    """A 2-channel nnU-Net v2 dataset of 12×10×8 phantoms; ``changes`` replace dataset.json keys (None: drop)."""
    content: dict[str, object] = {"name": "tiny", "channel_names": {"0": "T1", "1": "FLAIR"}, "labels": LABELS,
                                  "numTraining": len(train), "file_ending": ".nii.gz"}
    content.update(changes)
    write_json(root / "dataset.json", {k: v for k, v in content.items() if v is not None})
    for seed, case_id in enumerate((*train, *test)):
        t1, flair, label = case_arrays(seed)
        images = "imagesTr" if case_id in train else "imagesTs"
        write_volume(Volume(t1, (1.0, 1.0, 1.0)), root / images / f"{case_id}_0000.nii.gz")
        write_volume(Volume(flair, (1.0, 1.0, 1.0)), root / images / f"{case_id}_0001.nii.gz")
        if case_id in train:
            write_volume(Volume(label, (1.0, 1.0, 1.0)), root / "labelsTr" / f"{case_id}.nii.gz")
    return root


@pytest.fixture
def v2_root(tmp_path: Path) -> Path:
    return write_v2(tmp_path / "Dataset001_Tiny")


def write_decathlon(root: Path, *, per_channel: bool = False) -> Path:
    """A Decathlon task: 4-D images (X, Y, Z, 2) or, ``per_channel``, nnU-Net v1's _0000/_0001 files."""
    training = []
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    for seed, case_id in enumerate(("BRATS_003", "BRATS_001", "BRATS_002", "BRATS_004")):
        t1, flair, label = case_arrays(seed)
        label = np.where(label == 10, 2, label).astype(np.uint8)  # Decathlon values 0, 1, 2
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        if per_channel:
            for c, array in enumerate((flair, t1)):
                nib.save(nib.Nifti1Image(array, affine), root / "imagesTr" / f"{case_id}_{c:04d}.nii.gz")
        else:
            nib.save(nib.Nifti1Image(np.stack([flair, t1], axis=-1), affine), root / "imagesTr" / f"{case_id}.nii.gz")
        (root / "labelsTr").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"{case_id}.nii.gz")
        training.append({"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"})
    (root / "imagesTs").mkdir(parents=True, exist_ok=True)
    if not per_channel:
        test_image = np.stack(case_arrays(9)[:2][::-1], axis=-1)
        nib.save(nib.Nifti1Image(test_image, affine), root / "imagesTs" / "BRATS_100.nii.gz")
    write_json(root / "dataset.json", {
        "name": "BRATS", "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "edema", "2": "tumour"}, "numTraining": 4,
        "training": training, "test": [] if per_channel else ["./imagesTs/BRATS_100.nii.gz"]})
    return root


# ------------------------------------------------------------------------------------------- reading


def test_read_dataset_json_v2(v2_root: Path) -> None:
    info = read_dataset_json(v2_root)
    assert is_nnunet_root(v2_root) and not is_nnunet_root(v2_root / "imagesTr")
    assert (info.kind, info.name, info.file_ending, info.num_training) == ("nnunet", "tiny", ".nii.gz", 5)
    assert info.channel_names == ("T1", "FLAIR")
    assert info.labels.names == ("background", "CSF", "GM", "lesion") and info.labels.values == (0, 1, 2, 10)


def test_discover_v2_dispatches_and_lists_channels(v2_root: Path) -> None:
    found = discover(v2_root)
    assert found.layout == "nnunet" and found.channel_names == ("T1", "FLAIR")
    assert [s.id for s in found.subjects] == [*TRAIN, *TEST]
    c1 = found.by_id()["c1"]
    assert c1.folder == "imagesTr" and c1.image_path == v2_root / "imagesTr" / "c1_0000.nii.gz"
    assert c1.extra_image_paths == (v2_root / "imagesTr" / "c1_0001.nii.gz",)
    assert c1.label_path == v2_root / "labelsTr" / "c1.nii.gz"
    t1 = found.by_id()["t1"]
    assert t1.folder == "imagesTs" and t1.label_path is None and t1.channels_in_image == 1


def test_load_v2_channels_and_non_contiguous_labels(v2_root: Path) -> None:
    cohort = load_cohort(v2_root, FoldSplit(folds=5, fold=0))
    assert cohort.labels.values == (0, 1, 2, 10) and cohort.channel_names == ("T1", "FLAIR")
    case = cohort.get("c2")
    t1, flair, stored = case_arrays(1)
    assert case.num_channels == 2 and case.extra_paths == (v2_root / "imagesTr" / "c2_0001.nii.gz",)
    np.testing.assert_array_equal(case.image.array, t1)
    np.testing.assert_array_equal(case.extra[0].array, flair)
    assert case.label is not None and case.label.array.dtype == np.uint8
    np.testing.assert_array_equal(case.label.array, np.where(stored == 10, 3, stored))  # value 10 -> index 3
    assert cohort.get("t1").split == "predict" and cohort.get("t1").label is None


def test_labels_ts_are_read_when_present(v2_root: Path) -> None:
    write_volume(Volume(case_arrays(5)[2], (1.0, 1.0, 1.0)), v2_root / "labelsTs" / "t1.nii.gz")
    cohort = load_cohort(v2_root, FoldSplit(folds=5, fold=0))
    assert cohort.get("t1").split == "predict" and cohort.get("t1").label is not None


@pytest.mark.parametrize("per_channel", [False, True], ids=["4d", "v1-per-channel"])
def test_decathlon(tmp_path: Path, per_channel: bool) -> None:
    root = write_decathlon(tmp_path / "Task01_BrainTumour", per_channel=per_channel)
    info = read_dataset_json(root)
    assert info.kind == "decathlon" and info.channel_names == ("FLAIR", "T1w")
    assert info.labels.names == ("background", "edema", "tumour")
    found = discover(root)
    assert [s.id for s in found.subjects][:4] == ["BRATS_001", "BRATS_002", "BRATS_003", "BRATS_004"]
    first = found.by_id()["BRATS_001"]
    assert (first.channels_in_image, len(first.extra_image_paths)) == ((1, 1) if per_channel else (2, 0))
    cohort = load_cohort(root, SplitSpec(train=["BRATS_001", "BRATS_002"], test=["BRATS_003"], val=["BRATS_004"],
                                         predict=[] if per_channel else ["BRATS_100"]))
    case = cohort.get("BRATS_002")  # seed 2
    t1, flair, _ = case_arrays(2)
    assert case.num_channels == 2 and cohort.channel_names == ("FLAIR", "T1w")
    np.testing.assert_array_equal(case.image.array, flair)
    np.testing.assert_array_equal(case.extra[0].array, t1)
    assert case.image.spacing_mm == case.extra[0].spacing_mm == (1.0, 1.0, 2.0)
    assert case.label is not None and set(np.unique(case.label.array)) <= {0, 1, 2}


# -------------------------------------------------------------------------------------------- splits


def test_explicit_split(v2_root: Path) -> None:
    cohort = load_cohort(v2_root, SplitSpec(train=["c1", "c3"], val=["c2"], test=["c4"], predict=["t1"]))
    assert cohort.ids() == ["c1", "c2", "c3", "c4", "t1"] and cohort.split_name == "explicit"
    assert cohort.ids("val") == ["c2"]


def test_fold_split_over_images_tr(v2_root: Path) -> None:
    found = discover(v2_root)
    folds = fold_of_subject(found, FoldSplit(5, 0))
    assert sorted(folds) == list(TRAIN) and sorted(folds.values()) == [0, 1, 2, 3, 4]
    for k in range(5):
        split = fold_split(found, FoldSplit(5, k))
        assert [i for i, s in split.items() if s == "test"] == [i for i, f in folds.items() if f == k]
        assert [i for i, s in split.items() if s == "val"] == [i for i, f in folds.items() if f == (k + 1) % 5]
        assert split["t1"] == "predict"


def test_splits_final_json(v2_root: Path) -> None:
    write_json(v2_root / "splits_final.json", [
        {"train": ["c3", "c4", "c5"], "val": ["c1", "c2"]},
        {"train": ["c1", "c2", "c5"], "val": ["c3", "c4"]},
        {"train": ["c1", "c2", "c3", "c4"], "val": ["c5"]},
    ])
    cohort = load_cohort(v2_root, FoldSplit(folds=3, fold=0))
    assert (cohort.ids("test"), cohort.ids("val"), cohort.ids("train")) == (["c1", "c2"], ["c3", "c4"], ["c5"])
    assert cohort.ids("predict") == ["t1"]
    last = fold_split(discover(v2_root), FoldSplit(3, 2))  # fold 0's val cases validate
    assert last == {"c1": "val", "c2": "val", "c3": "train", "c4": "train", "c5": "test", "t1": "predict"}
    assert fold_of_subject(discover(v2_root), FoldSplit(3, 1)) == {"c1": 0, "c2": 0, "c3": 1, "c4": 1, "c5": 2}
    with pytest.raises(ConfigError, match=r"data\.folds=5, but .*splits_final\.json holds 3 folds \(set data\.folds=3"):
        load_cohort(v2_root, FoldSplit(folds=5, fold=0))
    write_json(v2_root / "splits_final.json", [{"train": ["c1", "nope"], "val": ["c2"]}, {"train": [], "val": []}])
    with pytest.raises(DataError, match=r"splits_final\.json: fold 0 lists cases that are not labelled imagesTr "
                                        r"cases: nope"):
        load_cohort(v2_root, FoldSplit(folds=2, fold=0))


def test_named_splits_are_refused_on_an_nnunet_root(v2_root: Path) -> None:
    with pytest.raises(ConfigError, match=r"split 'paper' is one of IBSR18's named splits; .* is an nnU-Net "
                                          r"dataset \(use data\.fold=K"):
        load_cohort(v2_root, "paper")


# -------------------------------------------------------------------------------------- bad datasets


def _edit_json(root: Path, **changes: object) -> None:
    content = json.loads((root / "dataset.json").read_text())
    content.update(changes)
    write_json(root / "dataset.json", {k: v for k, v in content.items() if v is not None})


def _rewrite(path: Path, array: np.ndarray | None = None, **geometry: object) -> None:
    volume = read_volume(path)
    write_volume(Volume(volume.array if array is None else array, **{  # type: ignore[arg-type]
        "spacing_mm": volume.spacing_mm, "origin_mm": volume.origin_mm, "direction": volume.direction, **geometry}),
        path)


def _label_value_7(root: Path) -> None:
    label = case_arrays(2)[2]
    label[0, 0, 0] = 7
    _rewrite(root / "labelsTr/c3.nii.gz", label)


def _move(root: Path, source: str, target: str) -> None:
    (root / target).parent.mkdir(parents=True, exist_ok=True)
    (root / source).rename(root / target)


def _drop_c1_images(root: Path) -> None:
    for c in (0, 1):
        _move(root, f"imagesTr/c1_000{c}.nii.gz", f"elsewhere/c1_000{c}.nii.gz")


BAD: dict[str, tuple[Callable[[Path], object], str, str]] = {
    "no labels key": (lambda r: _edit_json(r, labels=None), "dataset.json", r"lacks the key\(s\) labels"),
    "no channel_names": (lambda r: _edit_json(r, channel_names=None), "dataset.json", r"lacks the key\(s\) channel_names"),
    "no file_ending": (lambda r: _edit_json(r, file_ending=None), "dataset.json", r"lacks the key\(s\) file_ending"),
    "neither v2 nor Decathlon": (lambda r: _edit_json(r, file_ending=None, channel_names=None), "dataset.json",
                                 "neither nnU-Net v2's channel_names and file_ending nor the Medical Segmentation Decathlon's modality"),
    "not JSON": (lambda r: (r / "dataset.json").write_text("{labels: 1"), "dataset.json", "cannot read JSON"),
    "channel keys": (lambda r: _edit_json(r, channel_names={"0": "T1", "2": "FLAIR"}), "dataset.json",
                     "channel_names has the keys 0, 2; they must be the channel indices 0 .. 1"),
    "region labels": (lambda r: _edit_json(r, labels={"background": 0, "whole tumour": [1, 2], "GM": 2}),
                      "dataset.json", r"'whole tumour' is a region label \[1, 2\]; region-based training .* not supported"),
    "ignore label": (lambda r: _edit_json(r, labels={**LABELS, "ignore": 11}), "dataset.json", "'ignore' label"),
    "no background": (lambda r: _edit_json(r, labels={"CSF": 1, "GM": 2}), "dataset.json", "no class with value 0"),
    "unknown label value": (_label_value_7, "labelsTr/c3.nii.gz",
                            r"label values 7 are not in .*dataset\.json's labels \(0 background, 1 CSF, 2 GM, 10 lesion\)"),
    "missing channel": (lambda r: (r / "imagesTr/c2_0001.nii.gz").unlink(), "imagesTr/c2_0001.nii.gz",
                        r"case c2 has no channel 1 \(FLAIR\): its file is missing"),
    "extra channel": (lambda r: write_volume(read_volume(r / "imagesTr/c2_0001.nii.gz"), r / "imagesTr/c2_0002.nii.gz"),
                      "imagesTr/c2_0002.nii.gz", r"channel 0002, but dataset.json's channel_names lists 2 channel\(s\)"),
    "channel spacing": (lambda r: _rewrite(r / "imagesTr/c4_0001.nii.gz", spacing_mm=(1.0, 1.0, 1.5)),
                        "imagesTr/c4_0001.nii.gz",
                        r"channel 1 spacing 1×1×1\.5 mm differs from channel 0 \(c4_0000\.nii\.gz\) spacing 1×1×1 mm"),
    "channel origin": (lambda r: _rewrite(r / "imagesTr/c4_0001.nii.gz", origin_mm=(0.0, 0.0, 0.01)),
                       "imagesTr/c4_0001.nii.gz", r"channel 1 origin \(0, 0, 0\.01\) mm differs from channel 0"),
    "channel direction": (lambda r: _rewrite(r / "imagesTr/c4_0001.nii.gz", direction=IBSR_DIRECTION),
                          "imagesTr/c4_0001.nii.gz", r"channel 1 direction \(-1, 0, 0, .*\) differs from channel 0"),
    "channel shape": (lambda r: write_volume(Volume(np.ones((12, 10, 9), np.float32) + np.arange(9), (1.0, 1.0, 1.0)),
                                             r / "imagesTr/c4_0001.nii.gz"),
                      "imagesTr/c4_0001.nii.gz", r"channel 1 shape \(12, 10, 9\) differs from channel 0 .* \(12, 10, 8\)"),
    "label origin": (lambda r: _rewrite(r / "labelsTr/c5.nii.gz", origin_mm=(2.0, 0.0, 0.0)), "labelsTr/c5.nii.gz",
                     r"label origin \(2, 0, 0\) mm differs from image origin \(0, 0, 0\) mm \(c5_0000\.nii\.gz\)"),
    "duplicate id": (lambda r: [write_volume(read_volume(r / f"imagesTr/c1_000{c}.nii.gz"), r / f"imagesTs/c1_000{c}.nii.gz")
                                for c in (0, 1)], "imagesTs/c1_0000.nii.gz", "duplicate case id 'c1'"),
    "label without images": (_drop_c1_images, "labelsTr/c1.nii.gz",
                             r"label file without images: imagesTr/ has no c1_0000\.nii\.gz"),
    "images without label": (lambda r: (r / "labelsTr/c3.nii.gz").unlink(), "labelsTr/c3.nii.gz",
                             "case c3 in imagesTr/ has no label file"),
    "not CASE_XXXX": (lambda r: _move(r, "imagesTs/t1_0000.nii.gz", "imagesTs/t1.nii.gz"), "imagesTs/t1.nii.gz",
                      "image file name is not CASE_XXXX.nii.gz"),
    "other ending": (lambda r: _move(r, "imagesTs/t1_0001.nii.gz", "imagesTs/t1_0001.nrrd"), "imagesTs/t1_0001.nrrd",
                     "does not end with dataset.json's file_ending '.nii.gz'"),
    "splits_final": (lambda r: write_json(r / "splits_final.json", {"train": []}), "splits_final.json",
                     "must hold a non-empty list of folds"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_dataset_is_one_error_naming_the_file(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_v2(tmp_path / "ds")
    damage, file, pattern = BAD[kind]
    damage(root)
    with pytest.raises(BenchError, match=pattern) as caught:
        load_cohort(root, FoldSplit(folds=5, fold=0))
    assert str(root / file) in caught.value.message
    assert main(["data", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and err.startswith("error: ") and str(root / file) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


DECATHLON_BAD: dict[str, tuple[Callable[[Path], object], str, str]] = {
    "listed label missing": (lambda r: (r / "labelsTr/BRATS_002.nii.gz").unlink(), "labelsTr/BRATS_002.nii.gz",
                             "label file of case BRATS_002, listed in dataset.json's training, is missing"),
    "listed image missing": (lambda r: (r / "imagesTr/BRATS_002.nii.gz").unlink(), "imagesTr/BRATS_002.nii.gz",
                             "image of case BRATS_002, listed in dataset.json, is missing"),
    "unlisted label": (lambda r: (r / "labelsTr/BRATS_009.nii.gz").write_bytes((r / "labelsTr/BRATS_001.nii.gz").read_bytes()),
                       "labelsTr/BRATS_009.nii.gz", "label file without images: not listed in dataset.json's training"),
    "3 channels for 2": (lambda r: nib.save(nib.Nifti1Image(np.ones((*SHAPE, 3), np.float32), np.eye(4)),
                                            r / "imagesTr/BRATS_003.nii.gz"), "imagesTr/BRATS_003.nii.gz",
                         r"image holds 3 channel\(s\) .*; 2 expected"),
    "labels as name: value": (lambda r: _edit_json(r, labels={"background": 0, "edema": 1}), "dataset.json",
                              "labels key 'background' is not a label value"),
    "no training list": (lambda r: _edit_json(r, training=None), "dataset.json", r"lacks the key\(s\) training"),
}


@pytest.mark.parametrize("kind", list(DECATHLON_BAD))
def test_bad_decathlon_dataset(tmp_path: Path, kind: str) -> None:
    root = write_decathlon(tmp_path / "Task01")
    damage, file, pattern = DECATHLON_BAD[kind]
    damage(root)
    with pytest.raises(BenchError, match=pattern) as caught:
        load_cohort(root, FoldSplit(folds=2, fold=0))
    assert str(root / file) in caught.value.message


def test_num_training_disagreeing_is_a_warning(v2_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    _edit_json(v2_root, numTraining=7)
    with caplog.at_level(logging.WARNING, logger="bench.data.nnunet"):
        found = discover(v2_root)
    assert len(found.subjects) == 6
    assert "numTraining is 7 but imagesTr holds 5 labelled case(s)" in caplog.text


def test_labels_outside_ibsr_are_still_refused_on_ibsr_roots(tmp_path: Path) -> None:
    case = phantom_case(SHAPE, case_id="IBSR_01")
    assert case.label is not None
    write_volume(case.image, tmp_path / "Training_Set/IBSR_01/IBSR_01.nii.gz")
    write_volume(case.label.with_array(np.where(case.label.array == 3, 10, case.label.array).astype(np.uint8)),
                 tmp_path / "Training_Set/IBSR_01/IBSR_01_seg.nii.gz")
    with pytest.raises(DataError, match=r"IBSR_01_seg\.nii\.gz: label values outside \{0, 1, 2, 3\}: 10"):
        load_cohort(tmp_path, "course")


# ------------------------------------------------------------------------------------------ bench data


def test_bench_data_lists_an_nnunet_dataset(v2_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "--root", str(v2_root)]) == 0  # fold 0 of 5 by default
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["id", "split", "channels", "shape", "spacing_mm", "background", "CSF", "GM", "lesion"]
    assert next(line for line in lines if line.startswith("t1")).split()[1:3] == ["predict", "2"]
    assert "split 'fold0of5-seed0', 6 subjects" in out
    assert "channels: 0 T1, 1 FLAIR; labels: 0 background, 1 CSF, 2 GM, 10 lesion" in out
    assert main(["data", "--root", str(v2_root), "--fold", "1", "--folds", "3"]) == 0
    assert "split 'fold1of3-seed0'" in capsys.readouterr().out
    for args in (["--split", "paper"], ["--split", "course", "--fold", "1"]):
        assert main(["data", "--root", str(v2_root), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------- converting


def write_ibsr_root(root: Path) -> SplitSpec:
    """A tiny course-layout root with int16 images in IBSR's geometry; one image has IBSR's trailing axis."""
    layout = {"Training_Set": ("IBSR_01", "IBSR_03"), "Validation_Set": ("IBSR_11",), "Test_Set": ("IBSR_02",)}
    for seed, (folder, case_id) in enumerate((f, i) for f, ids in layout.items() for i in ids):
        case = phantom_case(SHAPE, spacing_mm=(0.9375, 1.5, 0.9375), seed=seed)
        assert case.label is not None
        image = Volume((case.image.array * 300).astype(np.int16), case.image.spacing_mm, (11.25, -3.5, 7.0),
                       IBSR_DIRECTION)
        subject = root / folder / case_id
        if case_id == "IBSR_03":  # a 4th axis of one volume in the header, as in the real IBSR files
            subject.mkdir(parents=True)
            lps_to_ras = np.diag([-1.0, -1.0, 1.0])
            affine = np.eye(4)
            affine[:3, :3] = lps_to_ras @ np.reshape(image.direction, (3, 3)) @ np.diag(image.spacing_mm)
            affine[:3, 3] = lps_to_ras @ np.asarray(image.origin_mm)
            nib.save(nib.Nifti1Image(image.array[..., None], affine), subject / f"{case_id}.nii.gz")
        else:
            write_volume(image, subject / f"{case_id}.nii.gz")
        if folder != "Test_Set":
            write_volume(image.with_array(case.label.array), subject / f"{case_id}_seg.nii.gz")
    return SplitSpec(train=["IBSR_01", "IBSR_03"], test=["IBSR_11"], predict=["IBSR_02"])


def test_convert_ibsr_to_nnunet_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, out = tmp_path / "ibsr", tmp_path / "Dataset001_IBSR"
    spec = write_ibsr_root(root)
    assert main(["convert", "ibsr18", str(root), "--to", "nnunet", str(out)]) == 0
    assert "wrote 4 cases (3 labelled" in capsys.readouterr().out
    assert json.loads((out / "dataset.json").read_text()) == {
        "name": "ibsr", "channel_names": {"0": "T1"}, "labels": {"background": 0, "CSF": 1, "GM": 2, "WM": 3},
        "numTraining": 3, "file_ending": ".nii.gz"}
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["IBSR_02_0000.nii.gz"]
    original, converted = load_cohort(root, spec), load_cohort(out, spec)
    assert converted.labels == IBSR_LABELS and converted.channel_names == ("T1",)
    assert original.ids() == converted.ids()
    for a, b in zip(original.cases, converted.cases, strict=True):
        for va, vb in ((a.image, b.image), (a.label, b.label)):
            if va is None or vb is None:
                assert va is None and vb is None
                continue
            assert va.array.dtype == vb.array.dtype and np.array_equal(va.array, vb.array)
            assert (va.spacing_mm, va.origin_mm, va.direction) == (vb.spacing_mm, vb.origin_mm, vb.direction)
    assert main(["convert", "ibsr18", str(root), "--to", "nnunet", str(out)]) == 0  # an earlier conversion: redone
    assert len(load_cohort(out, FoldSplit(folds=3, fold=0)).cases) == 4


def test_convert_refuses_foreign_output_and_leaves_nothing_half_written(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ibsr"
    write_ibsr_root(root)
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    assert main(["convert", "ibsr18", str(root), "--to", "nnunet", str(foreign)]) == 2
    assert "OUT is not empty and holds no brainbench_conversion.json" in capsys.readouterr().err
    assert (foreign / "thesis.tex").read_text() == "precious"
    out = tmp_path / "out"
    assert main(["convert", "ibsr18", str(root), "--to", "nnunet", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    assert main(["convert", "ibsr18", str(root), "--to", "nnunet", str(out)]) == 2
    assert "did not write: notes.txt" in capsys.readouterr().err
    (out / "notes.txt").unlink()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    write_volume(Volume(np.zeros(SHAPE, np.int16), (1.0, 1.0, 1.0)), root / "Validation_Set/IBSR_11/IBSR_11.nii.gz")
    assert main(["convert", "ibsr18", str(root), "--to", "nnunet", str(out)]) == 2
    assert "IBSR_11.nii.gz: image is all-zero" in capsys.readouterr().err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # the earlier conversion is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ibsr", "out", "thesis"]  # no temporary folder left
    assert (out / CONVERSION_MANIFEST).is_file()
    assert main(["convert", "ibsr18", str(out), "--to", "nnunet", str(tmp_path / "again")]) == 2
    assert "already is an nnU-Net dataset" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------- synth


def test_synth_nnunet_two_channels_five_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "Dataset002_Synth"
    args = ["synth", "--out", str(out), "--format", "nnunet", "--channels", "2", "--labels", "5", "--subjects", "7",
            "--shape", "24", "16", "24", "--spacing-scale", "9"]
    assert main(args) == 0
    assert "wrote 7 subjects (6 labelled)" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["IBSR_02_0000.nii.gz", "IBSR_02_0001.nii.gz"]
    cohort = load_cohort(out, FoldSplit(folds=3, fold=0))
    assert cohort.labels == LESION_LABELS and cohort.channel_names == ("T1", "FLAIR")
    assert cohort.ids("predict") == ["IBSR_02"] and len(cohort.split("test")) == 2
    labelled = [c for c in cohort.cases if c.label is not None]
    assert all(c.num_channels == 2 for c in cohort.cases)
    lesion = LESION_LABELS.index("lesion")
    assert all((c.label.array == lesion).sum() > 0 for c in labelled if c.label is not None)
    for case in labelled:  # lesions: the brightest tissue of the FLAIR-like channel, dimmer than WM in the T1
        assert case.label is not None
        mean = {k: (case.image.array[case.label.array == k].mean(), case.extra[0].array[case.label.array == k].mean())
                for k in (1, 2, 3, lesion)}
        assert mean[lesion][1] > max(mean[k][1] for k in (1, 2, 3)) and mean[lesion][0] < mean[3][0]
    volumes, label = nnunet_subject("IBSR_16", 0, (24, 16, 24), 9.0, channels=2, labels=5)
    stored = read_volume(out / "labelsTr" / "IBSR_16.nii.gz")
    np.testing.assert_array_equal(stored.array, label.array)  # written = generated (values 0..3, 10)
    assert set(np.unique(stored.array).tolist()) == {0, 1, 2, 3, 10}
    np.testing.assert_array_equal(read_volume(out / "imagesTr" / "IBSR_16_0001.nii.gz").array, volumes[1].array)
    assert main(args) == 0  # an earlier synth output is rewritten, identically
    np.testing.assert_array_equal(read_volume(out / "labelsTr" / "IBSR_16.nii.gz").array, label.array)


def test_synth_nnunet_default_matches_the_ibsr_cohort_and_options_need_the_format(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--subjects", "2", "--seed", "3", "--shape", "24", "16", "24", "--spacing-scale", "9"]
    assert main(["synth", "--out", str(tmp_path / "ibsr"), *common]) == 0
    assert main(["synth", "--out", str(tmp_path / "ibsr"), "--format", "nnunet", *common]) == 0  # over an earlier synth
    assert not (tmp_path / "ibsr" / "Training_Set").exists()
    assert main(["synth", "--out", str(tmp_path / "ibsr2"), *common]) == 0
    a, b = load_cohort(tmp_path / "ibsr2", SplitSpec(train=["IBSR_01", "IBSR_07"])), load_cohort(
        tmp_path / "ibsr", SplitSpec(train=["IBSR_01", "IBSR_07"]))
    for x, y in zip(a.cases, b.cases, strict=True):
        assert x.label is not None and y.label is not None
        assert np.array_equal(x.image.array, y.image.array) and np.array_equal(x.label.array, y.label.array)
    assert main(["synth", "--out", str(tmp_path / "ibsr"), *common]) == 0  # and back to the IBSR layout
    assert sorted(p.name for p in (tmp_path / "ibsr").iterdir()) == ["Training_Set", "synth.json"]
    capsys.readouterr()
    assert main(["synth", "--out", str(tmp_path / "x"), "--channels", "2", *common]) == 2
    assert "need --format nnunet" in capsys.readouterr().err
