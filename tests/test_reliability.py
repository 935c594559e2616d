"""Bad files and folders at every entry point that reads them (``bench data``, ``bench evaluate``, ``bench
synth``): exit code 2, one ``error:`` line naming the file, no traceback, no half-written output (issue 5);
and the oddities that are allowed (a class absent from a label). Harness: ``bad_input.py``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from bad_input import (
    IMAGE,
    LABEL,
    TEST_LABEL,
    TRAIN,
    Builder,
    Call,
    assert_fails_cleanly,
    data_call,
    write_label_out_of_range,
    write_raw,
)
from conftest import Workspace

from bench.cli import main as bench_main
from bench.evaluation.metrics import EMPTY_MASK_RULE
from bench.io import Volume, read_volume, write_volume

# --------------------------------------------------------------------------------------------- cases


def not_nifti(tmp: Path, data: Path, ws: Workspace) -> Call:
    (data / IMAGE).write_text("subject,age\nIBSR_01,37\n")
    return data_call(data, IMAGE, "cannot read image")


def truncated_gzip(tmp: Path, data: Path, ws: Workspace) -> Call:
    raw = (data / IMAGE).read_bytes()
    (data / IMAGE).write_bytes(raw[: len(raw) // 2])
    return data_call(data, IMAGE, "cannot read image")


def corrupt_gzip(tmp: Path, data: Path, ws: Workspace) -> Call:
    raw = bytearray((data / IMAGE).read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(255 - b for b in raw[middle : middle + 64])
    (data / IMAGE).write_bytes(bytes(raw))
    return data_call(data, IMAGE, "cannot read image")


def gzip_of_text(tmp: Path, data: Path, ws: Workspace) -> Call:
    (data / IMAGE).write_bytes(gzip.compress(b"not an image at all\n" * 50))
    return data_call(data, IMAGE, "cannot read image")


def empty_file(tmp: Path, data: Path, ws: Workspace) -> Call:
    (data / LABEL).write_bytes(b"")
    return data_call(data, LABEL, "empty")


def unreadable(tmp: Path, data: Path, ws: Workspace) -> Call:
    """chmod 000; as root (which reads anything) the permission check is emulated instead."""
    path = data / IMAGE
    path.chmod(0)
    call = data_call(data, IMAGE, "permission denied")
    if os.access(path, os.R_OK):
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        call.deny_read = path
    return call


def missing_seg(tmp: Path, data: Path, ws: Workspace) -> Call:
    (data / LABEL).unlink()
    return data_call(data, "IBSR_01_seg.nii.gz", "has no label file")


def missing_root(tmp: Path, data: Path, ws: Workspace) -> Call:
    return data_call(tmp / "no_such_dataset", "no_such_dataset", "does not exist")


def misnamed_folder(tmp: Path, data: Path, ws: Workspace) -> Call:
    (data / "Training_Set").rename(data / "training_set")
    return data_call(data, "training_set", "unknown folder")


def misnamed_file(tmp: Path, data: Path, ws: Workspace) -> Call:
    (data / IMAGE).rename(data / TRAIN / "IBSR_1.nii.gz")
    return data_call(data, TRAIN, "no image file IBSR_01.nii.gz", "IBSR_1.nii.gz")


def no_subjects(tmp: Path, data: Path, ws: Workspace) -> Call:
    empty = tmp / "empty_root"
    (empty / "notes").mkdir(parents=True)
    return data_call(empty, "empty_root", "no subjects found")


def duplicate_ids(tmp: Path, data: Path, ws: Workspace) -> Call:
    shutil.copytree(data / TRAIN, data / "Validation_Set" / "IBSR_01")
    return data_call(data, "IBSR_01", "duplicate subject id")


def _label(data: Path) -> Volume:
    return read_volume(data / LABEL)


def shape_mismatch(tmp: Path, data: Path, ws: Workspace) -> Call:
    label = _label(data)
    write_volume(Volume(label.array[:-4], label.spacing_mm), data / LABEL)
    return data_call(data, LABEL, "label shape (44, 32, 48) differs from image shape (48, 32, 48)")


def spacing_mismatch(tmp: Path, data: Path, ws: Workspace) -> Call:
    label = _label(data)
    write_volume(Volume(label.array, (1.0, 1.0, 1.0)), data / LABEL)
    return data_call(data, LABEL, "label spacing 1×1×1 mm differs from image spacing")


def image_2d(tmp: Path, data: Path, ws: Workspace) -> Call:
    image = sitk.GetImageFromArray(np.full((32, 48), 100, dtype=np.int16))
    sitk.WriteImage(image, str(data / IMAGE))
    return data_call(data, IMAGE, "2D image")


def image_4d(tmp: Path, data: Path, ws: Workspace) -> Call:
    image = read_volume(data / IMAGE)
    write_raw(data / IMAGE, np.stack([image.array, image.array], axis=-1), image.spacing_mm)
    return data_call(data, IMAGE, "4D image with 2 volumes")


def label_out_of_range(tmp: Path, data: Path, ws: Workspace) -> Call:
    write_label_out_of_range(data)
    return data_call(data, LABEL, "label values outside {0, 1, 2, 3}: 7")


def _float_image_with(data: Path, value: float) -> None:
    image = read_volume(data / IMAGE)
    array = image.array.astype(np.float32)
    array[24, 16, 24] = value
    write_raw(data / IMAGE, array, image.spacing_mm)


def nan_intensity(tmp: Path, data: Path, ws: Workspace) -> Call:
    _float_image_with(data, np.nan)
    return data_call(data, IMAGE, "1 NaN and 0 Inf voxels")


def complex_image(tmp: Path, data: Path, ws: Workspace) -> Call:
    image = nib.load(str(data / IMAGE))
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj).astype(np.complex64), image.affine), str(data / IMAGE))
    return data_call(data, IMAGE, "complex-valued image")


def zero_voxel_size(tmp: Path, data: Path, ws: Workspace) -> Call:
    """pixdim[1] = 0 written into the header bytes (nibabel would write 1)."""
    raw = bytearray(gzip.decompress((data / IMAGE).read_bytes()))
    raw[80:84] = np.float32(0).tobytes()
    (data / IMAGE).write_bytes(gzip.compress(bytes(raw)))
    return data_call(data, IMAGE, "voxel size unknown", "pixdim[1:4]")


def inf_intensity(tmp: Path, data: Path, ws: Workspace) -> Call:
    _float_image_with(data, np.inf)
    return data_call(data, IMAGE, "0 NaN and 1 Inf voxels")


def all_zero(tmp: Path, data: Path, ws: Workspace) -> Call:
    image = read_volume(data / IMAGE)
    write_volume(image.with_array(np.zeros_like(image.array)), data / IMAGE)
    return data_call(data, IMAGE, "all-zero")


# bench evaluate ------------------------------------------------------------------------------------


def _eval_folders(tmp: Path, data: Path) -> tuple[Path, Path, Path, Path]:
    pred_dir = tmp / "pred"
    pred_dir.mkdir()
    for case in ("IBSR_11", "IBSR_12"):
        shutil.copy(data / f"Validation_Set/{case}/{case}_seg.nii.gz", pred_dir / f"{case}.nii.gz")
    return pred_dir, data / "Validation_Set", tmp / "scores" / "table.csv", tmp / "scores" / "summary.json"


def eval_args(pred_dir: Path, ref_dir: Path, out: Path, summary: Path) -> list[str]:
    return ["evaluate", "--pred-dir", str(pred_dir), "--ref-dir", str(ref_dir), "--out", str(out),
            "--summary", str(summary)]


def eval_not_nifti(tmp: Path, data: Path, ws: Workspace) -> Call:
    pred_dir, ref_dir, out, summary = _eval_folders(tmp, data)
    (pred_dir / "IBSR_12.nii.gz").write_bytes(b"\x00" * 1000)
    return Call(eval_args(pred_dir, ref_dir, out, summary), ("pred/IBSR_12.nii.gz", "cannot read image"),
                absent=(out, summary))


def eval_spacing_mismatch(tmp: Path, data: Path, ws: Workspace) -> Call:
    pred_dir, ref_dir, out, summary = _eval_folders(tmp, data)
    pred = read_volume(pred_dir / "IBSR_12.nii.gz")
    write_volume(Volume(pred.array, (2.0, 2.0, 2.0)), pred_dir / "IBSR_12.nii.gz")
    return Call(eval_args(pred_dir, ref_dir, out, summary), ("pred/IBSR_12.nii.gz", "spacing (2, 2, 2) mm"),
                absent=(out, summary))


def eval_shape_mismatch(tmp: Path, data: Path, ws: Workspace) -> Call:
    ref = read_volume(data / TEST_LABEL)
    pred = tmp / "IBSR_11.nii.gz"
    write_volume(Volume(ref.array[:, :-2], ref.spacing_mm), pred)
    return Call(["evaluate", "--pred", str(pred), "--ref", str(data / TEST_LABEL)],
                (str(pred), "shape (48, 30, 48)", TEST_LABEL))


def eval_labels_outside(tmp: Path, data: Path, ws: Workspace) -> Call:
    image = data / "Validation_Set/IBSR_11/IBSR_11.nii.gz"  # a T1 image passed as the prediction
    return Call(["evaluate", "--pred", str(image), "--ref", str(data / TEST_LABEL)],
                (str(image), "not labels of this dataset; the labels are 0 background, 1 CSF, 2 GM, 3 WM"))


def eval_missing_reference(tmp: Path, data: Path, ws: Workspace) -> Call:
    pred_dir, ref_dir, out, summary = _eval_folders(tmp, data)
    (ref_dir / "IBSR_12" / "IBSR_12_seg.nii.gz").unlink()
    return Call(eval_args(pred_dir, ref_dir, out, summary),
                ("predictions without a reference", "pred/IBSR_12.nii.gz"), absent=(out, summary))


def eval_missing_dir(tmp: Path, data: Path, ws: Workspace) -> Call:
    out = tmp / "scores" / "table.csv"
    return Call(["evaluate", "--pred-dir", str(tmp / "no_predictions"), "--ref-dir", str(data), "--out", str(out)],
                ("no_predictions", "does not exist"), absent=(out,))


# bench synth ---------------------------------------------------------------------------------------


def synth_zero_subjects(tmp: Path, data: Path, ws: Workspace) -> Call:
    out = tmp / "synthetic"
    return Call(["synth", "--out", str(out), "--subjects", "0"], ("--subjects", "0"), absent=(out,))


def synth_bad_spacing(tmp: Path, data: Path, ws: Workspace) -> Call:
    out = tmp / "synthetic"
    return Call(["synth", "--out", str(out), "--subjects", "1", "--spacing-scale", "-1"],
                ("spacing scale", "-1"), absent=(out,))


def synth_tiny_shape(tmp: Path, data: Path, ws: Workspace) -> Call:
    out = tmp / "synthetic"
    return Call(["synth", "--out", str(out), "--subjects", "1", "--shape", "4", "32", "48"],
                ("shape", "(4, 32, 48)"), absent=(out,))


def synth_foreign_folder(tmp: Path, data: Path, ws: Workspace) -> Call:
    out = tmp / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("\\chapter{Intro}\n")
    return Call(["synth", "--out", str(out), "--subjects", "1", "--shape", "16", "16", "16"],
                (str(out), "not empty"), absent=(out / "synth.json", out / "Training_Set"),
                untouched=(out / "chapter1.tex",))



CASES: dict[str, Builder] = {
    "not-nifti": not_nifti,
    "truncated-gzip": truncated_gzip,
    "corrupt-gzip": corrupt_gzip,
    "gzip-of-text": gzip_of_text,
    "empty-file": empty_file,
    "unreadable": unreadable,
    "missing-seg": missing_seg,
    "missing-root": missing_root,
    "misnamed-folder": misnamed_folder,
    "misnamed-file": misnamed_file,
    "no-subjects": no_subjects,
    "duplicate-ids": duplicate_ids,
    "shape-mismatch": shape_mismatch,
    "spacing-mismatch": spacing_mismatch,
    "2d-image": image_2d,
    "4d-image": image_4d,
    "label-out-of-range": label_out_of_range,
    "nan-intensity": nan_intensity,
    "inf-intensity": inf_intensity,
    "complex-image": complex_image,
    "zero-voxel-size": zero_voxel_size,
    "all-zero-image": all_zero,
    "evaluate-not-nifti": eval_not_nifti,
    "evaluate-spacing-mismatch": eval_spacing_mismatch,
    "evaluate-shape-mismatch": eval_shape_mismatch,
    "evaluate-labels-outside": eval_labels_outside,
    "evaluate-missing-reference": eval_missing_reference,
    "evaluate-missing-folder": eval_missing_dir,
    "synth-zero-subjects": synth_zero_subjects,
    "synth-bad-spacing": synth_bad_spacing,
    "synth-tiny-shape": synth_tiny_shape,
    "synth-foreign-folder": synth_foreign_folder,
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_fails_cleanly(case: str, cohort_copy: Path, workspace: Workspace, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert_fails_cleanly(CASES[case](tmp_path, cohort_copy, workspace), workspace, tmp_path, capsys, monkeypatch)


# ---------------------------------------------------------------------------------- allowed oddities


def test_class_absent_from_reference_is_scored_by_the_empty_mask_rule(cohort_copy: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """No CSF in the reference: allowed. Both empty → dice 1, avd 0, distances 0; only the prediction has
    CSF → dice 0 and avd/distances inf (null in JSON); the rule is stated in summary.json."""
    ref = read_volume(cohort_copy / TEST_LABEL)
    no_csf = ref.array.copy()
    no_csf[no_csf == 1] = 2
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    write_volume(ref.with_array(no_csf), ref_dir / "IBSR_11_seg.nii.gz")
    write_volume(ref.with_array(no_csf), pred_dir / "IBSR_11.nii.gz")  # CSF absent from both
    write_volume(ref.with_array(ref.array), ref_dir.parent / "with_csf" / "IBSR_11.nii.gz")

    capsys.readouterr()
    assert bench_main(["evaluate", "--pred", str(pred_dir / "IBSR_11.nii.gz"),
                       "--ref", str(ref_dir / "IBSR_11_seg.nii.gz"), "--json"]) == 0
    both_empty = json.loads(capsys.readouterr().out)["CSF"]
    assert both_empty == {"dice": 1.0, "avd": 0.0, "hd": 0.0, "hd95": 0.0, "assd": 0.0}

    assert bench_main(["evaluate", "--pred", str(ref_dir.parent / "with_csf" / "IBSR_11.nii.gz"),
                       "--ref", str(ref_dir / "IBSR_11_seg.nii.gz"), "--json"]) == 0
    only_pred = json.loads(capsys.readouterr().out)["CSF"]
    assert only_pred == {"dice": 0.0, "avd": None, "hd": None, "hd95": None, "assd": None}

    out, summary = tmp_path / "scores.csv", tmp_path / "summary.json"
    assert bench_main(["evaluate", "--pred-dir", str(ref_dir.parent / "with_csf"), "--ref-dir", str(ref_dir),
                       "--out", str(out), "--summary", str(summary)]) == 0
    stated = json.loads(summary.read_text())
    assert stated["rules"]["empty_masks"] == EMPTY_MASK_RULE
    assert stated["n_nonfinite"]["CSF"] == {"dice": 0, "avd": 1, "hd": 1, "hd95": 1, "assd": 1}
    assert stated["mean"]["CSF"]["dice"] == 0.0 and stated["mean"]["CSF"]["hd"] is None
    assert stated["mean"]["WM"]["dice"] == 1.0 and stated["mean"]["GM"]["dice"] < 1.0


def test_class_absent_from_a_training_label_is_accepted(cohort_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    label = read_volume(cohort_copy / LABEL)
    array = label.array.copy()
    array[array == 1] = 0
    write_volume(label.with_array(array), cohort_copy / LABEL)
    assert bench_main(["data", "--root", str(cohort_copy), "--split", "paper"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("IBSR_01"))
    subject, split, _, _, bg, csf, gm, wm = row.split()  # id, split, shape, spacing, voxels per class
    assert (subject, split, csf) == ("IBSR_01", "train", "0") and min(int(bg), int(gm), int(wm)) > 0

