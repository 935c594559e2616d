"""Tests for bench.data: discovery, named/explicit splits, load-time checks, describe, ``bench data``."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bench.cli import main
from bench.data.cohort import describe_cohort, load_cohort
from bench.data.discovery import discover
from bench.data.labels import IBSR_LABELS
from bench.data.splits import SplitSpec
from bench.data.synth import phantom_case
from bench.errors import BenchError, ConfigError, DataError
from bench.io import Volume, write_volume

SHAPE = (10, 12, 10)
TRAINING = ("IBSR_01", "IBSR_03", "IBSR_04", "IBSR_05", "IBSR_07", "IBSR_09", "IBSR_16", "IBSR_18")


def write_subject(
    folder: Path,
    case_id: str,
    *,
    labelled: bool = True,
    seed: int = 0,
    image: np.ndarray | None = None,
    label: np.ndarray | None = None,
    label_spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ext: str = ".nii.gz",
) -> Path:
    """Write ``folder/<id>/<id><ext>`` (+ ``_seg``) from a phantom; returns the subject folder."""
    case = phantom_case(SHAPE, seed=seed, case_id=case_id)
    assert case.label is not None
    subject = folder / case_id
    img = case.image if image is None else Volume(image, case.image.spacing_mm)
    write_volume(img, subject / f"{case_id}{ext}")
    if labelled:
        lab = case.label.array if label is None else label
        write_volume(Volume(lab, label_spacing), subject / f"{case_id}_seg{ext}")
    return subject


@pytest.fixture
def course_root(tmp_path: Path) -> Path:
    root = tmp_path / "course"
    for i, case_id in enumerate(TRAINING):
        write_subject(root / "Training_Set", case_id, seed=i)
    write_subject(root / "Validation_Set", "IBSR_11", seed=20)
    write_subject(root / "Test_Set", "IBSR_02", labelled=False, seed=30)
    return root


def split_ids(cohort, name: str) -> set[str]:  # type: ignore[no-untyped-def]
    return set(cohort.ids(name))


# ----------------------------------------------------------------------------------------- discovery


def test_discover_course_layout(course_root: Path) -> None:
    found = discover(course_root)
    assert found.layout == "course"
    files = found.by_id()
    assert set(files) == {*TRAINING, "IBSR_11", "IBSR_02"}
    assert files["IBSR_11"].folder == "Validation_Set"
    assert files["IBSR_02"].label_path is None
    assert files["IBSR_01"].label_path == course_root / "Training_Set/IBSR_01/IBSR_01_seg.nii.gz"


def test_discover_flat_layout_accepts_nii_and_ignores_folders_without_nifti(tmp_path: Path) -> None:
    write_subject(tmp_path, "subjA", ext=".nii")
    write_subject(tmp_path, "subjB", labelled=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a subject")
    found = discover(tmp_path)
    assert found.layout == "flat"
    assert [s.id for s in found.subjects] == ["subjA", "subjB"]
    assert found.by_id()["subjA"].image_path.name == "subjA.nii"
    assert found.by_id()["subjB"].folder is None


# -------------------------------------------------------------------------------------------- splits


def test_course_split(course_root: Path) -> None:
    cohort = load_cohort(course_root, "course")
    assert split_ids(cohort, "train") == set(TRAINING)
    assert split_ids(cohort, "test") == {"IBSR_11"}
    assert split_ids(cohort, "val") == set()
    assert split_ids(cohort, "predict") == {"IBSR_02"}
    assert cohort.get("IBSR_02").label is None
    assert cohort.split_name == "course" and cohort.root == course_root


def test_paper_split(course_root: Path) -> None:
    cohort = load_cohort(course_root, "paper")
    assert split_ids(cohort, "val") == {"IBSR_07", "IBSR_16"}
    assert split_ids(cohort, "train") == set(TRAINING) - {"IBSR_07", "IBSR_16"}
    assert split_ids(cohort, "test") == {"IBSR_11"}
    assert split_ids(cohort, "predict") == {"IBSR_02"}


def test_holdout_split_leaves_out_validation_set(course_root: Path) -> None:
    cohort = load_cohort(course_root, "holdout")
    assert split_ids(cohort, "val") == {"IBSR_05", "IBSR_07"}
    assert split_ids(cohort, "test") == {"IBSR_04", "IBSR_09", "IBSR_18"}
    assert split_ids(cohort, "train") == {"IBSR_01", "IBSR_03", "IBSR_16"}
    assert split_ids(cohort, "predict") == {"IBSR_02"}
    assert "IBSR_11" not in cohort.ids()


def test_validation_subjects_can_join_the_training_set(course_root: Path) -> None:
    cohort = load_cohort(course_root, "paper")
    merged = cohort.with_val_in_train()
    assert split_ids(merged, "val") == set()
    assert split_ids(merged, "train") == set(TRAINING)
    for name in ("test", "predict"):
        assert split_ids(merged, name) == split_ids(cohort, name)
    assert [c.id for c in merged.cases] == [c.id for c in cohort.cases]  # same cases, same order
    assert merged.get("IBSR_07").image is cohort.get("IBSR_07").image
    assert split_ids(cohort, "val") == {"IBSR_07", "IBSR_16"}  # the original is unchanged


def test_explicit_split_and_its_errors(course_root: Path) -> None:
    spec = SplitSpec(train=["IBSR_01", "IBSR_03"], val=("IBSR_04",), predict=("IBSR_02",))
    cohort = load_cohort(course_root, spec)
    assert cohort.ids() == ["IBSR_01", "IBSR_03", "IBSR_04", "IBSR_02"]
    assert cohort.get("IBSR_04").split == "val"
    assert cohort.split_name == "explicit"
    with pytest.raises(DataError, match=r"unknown subject ids: IBSR_99, nope.*available: .*IBSR_01"):
        load_cohort(course_root, SplitSpec(train=("IBSR_99", "IBSR_01", "nope")))
    with pytest.raises(ConfigError, match=r"IBSR_01.*both 'train' and 'test'"):
        load_cohort(course_root, SplitSpec(train=("IBSR_01",), test=("IBSR_01",)))


def test_named_split_with_missing_ids(tmp_path: Path) -> None:
    write_subject(tmp_path / "Training_Set", "IBSR_07")
    with pytest.raises(DataError, match=r"'paper' needs .*: IBSR_16") as err:
        load_cohort(tmp_path, "paper")
    assert str(tmp_path) in str(err.value)
    with pytest.raises(DataError, match=r"IBSR_05, IBSR_04, IBSR_09, IBSR_18"):
        load_cohort(tmp_path, "holdout")


def test_unknown_split_name(course_root: Path) -> None:
    with pytest.raises(ConfigError, match="unknown split 'kfold'"):
        load_cohort(course_root, "kfold")


def test_flat_layout_splits(tmp_path: Path) -> None:
    for case_id in ("IBSR_01", "IBSR_07", "IBSR_16", "IBSR_12"):
        write_subject(tmp_path, case_id)
    write_subject(tmp_path, "IBSR_10", labelled=False)
    with pytest.raises(DataError, match="flat layout"):
        load_cohort(tmp_path, "course")
    cohort = load_cohort(tmp_path, "paper")  # by IBSR id: IBSR_12 is a Validation_Set subject
    assert split_ids(cohort, "train") == {"IBSR_01"}
    assert split_ids(cohort, "val") == {"IBSR_07", "IBSR_16"}
    assert split_ids(cohort, "test") == {"IBSR_12"}
    assert split_ids(cohort, "predict") == {"IBSR_10"}
    write_subject(tmp_path, "brain42")
    with pytest.raises(DataError, match="not IBSR18 ids: brain42"):
        load_cohort(tmp_path, "paper")


# ------------------------------------------------------------------------------------------- loading


def test_loaded_arrays(course_root: Path) -> None:
    cohort = load_cohort(course_root, "course")
    case = cohort.get("IBSR_01")
    expected = phantom_case(SHAPE, seed=0, case_id="IBSR_01")
    assert case.label is not None and expected.label is not None
    assert case.label.array.dtype == np.uint8
    np.testing.assert_array_equal(case.label.array, expected.label.array)
    assert case.image.array.dtype == np.float32  # the stored dtype is kept
    np.testing.assert_array_equal(case.image.array, expected.image.array)
    assert case.image_path == course_root / "Training_Set/IBSR_01/IBSR_01.nii.gz"


def test_ibsr_cohort_has_the_ibsr_labels_and_one_t1_channel(course_root: Path) -> None:
    cohort = load_cohort(course_root, "course")
    assert cohort.labels == IBSR_LABELS and cohort.channel_names == ("T1",)
    assert all(case.num_channels == 1 and case.extra == () for case in cohort.cases)
    assert discover(course_root).labels == IBSR_LABELS


def test_float_labels_with_integer_values_and_absent_class_are_accepted(tmp_path: Path) -> None:
    label = np.zeros(SHAPE, dtype=np.float32)
    label[3:6, 3:6, 3:6] = 2.0  # no CSF, no WM: allowed
    write_subject(tmp_path / "Training_Set", "IBSR_01", label=label)
    case = load_cohort(tmp_path).get("IBSR_01")
    assert case.label is not None and case.label.array.dtype == np.uint8
    assert set(np.unique(case.label.array).tolist()) == {0, 2}


def test_predict_label_loaded_when_present(tmp_path: Path) -> None:
    write_subject(tmp_path / "Test_Set", "IBSR_02", labelled=True)
    assert load_cohort(tmp_path).get("IBSR_02").label is not None


def test_require_labels_can_be_relaxed(tmp_path: Path) -> None:
    write_subject(tmp_path / "Training_Set", "IBSR_01", labelled=False)
    with pytest.raises(DataError, match=r"IBSR_01_seg\.nii\.gz: subject IBSR_01 is in split 'train'"):
        load_cohort(tmp_path)
    assert load_cohort(tmp_path, require_labels=()).get("IBSR_01").label is None
    with pytest.raises(ConfigError, match="require_labels"):
        load_cohort(tmp_path, require_labels=("training",))


def _corrupt_gzip(subject: Path) -> None:
    (subject / "IBSR_01.nii.gz").write_bytes(gzip.compress(b"not a nifti header at all")[:-8])


def _nan_image(subject: Path) -> None:
    """NaN/Inf written with nibabel (SimpleITK would read them back as 0)."""
    array = phantom_case(SHAPE).image.array.copy()
    array.ravel()[:3] = np.nan
    array[5, 5, 5] = np.inf
    nib.save(nib.Nifti1Image(array, np.eye(4)), subject / "IBSR_01.nii.gz")


def _empty(subject: Path) -> None:
    (subject / "IBSR_01.nii.gz").write_bytes(b"")


BAD_SUBJECTS = {
    "shape": (
        {"label": np.zeros((10, 12, 9), np.uint8)},
        None,
        r"IBSR_01_seg\.nii\.gz: label shape \(10, 12, 9\) differs from image shape \(10, 12, 10\)",
    ),
    "spacing": (
        {"label_spacing": (1.0, 1.0, 1.2)},
        None,
        r"IBSR_01_seg\.nii\.gz: label spacing 1×1×1\.2 mm differs from image spacing 1×1×1 mm",
    ),
    "label values": (
        {"label": np.arange(np.prod(SHAPE)).reshape(SHAPE).astype(np.uint8) % 5},
        None,
        r"IBSR_01_seg\.nii\.gz: label values outside \{0, 1, 2, 3\}: 4",
    ),
    "negative label": (
        {"label": np.full(SHAPE, -1, np.int16)},
        None,
        r"IBSR_01_seg\.nii\.gz: label values outside \{0, 1, 2, 3\}: -1",
    ),
    "nan image": ({}, _nan_image, r"IBSR_01\.nii\.gz: image has non-finite intensities: 3 NaN and 1 Inf"),
    "all-zero image": ({"image": np.zeros(SHAPE, np.int16)}, None, r"IBSR_01\.nii\.gz: image is all-zero"),
    "constant image": ({"image": np.full(SHAPE, 7, np.int16)}, None, r"IBSR_01\.nii\.gz: image is constant"),
    "corrupt gzip": ({}, _corrupt_gzip, r"IBSR_01\.nii\.gz: cannot read image"),
    "empty file": ({}, _empty, r"IBSR_01\.nii\.gz: file is empty"),
}


@pytest.mark.parametrize("kind", list(BAD_SUBJECTS))
def test_bad_subject_raises_data_error_naming_the_file(tmp_path: Path, kind: str) -> None:
    kwargs, damage, pattern = BAD_SUBJECTS[kind]
    write_subject(tmp_path / "Training_Set", "IBSR_03", seed=1)  # a good neighbour
    subject = write_subject(tmp_path / "Training_Set", "IBSR_01", **kwargs)  # type: ignore[arg-type]
    if damage is not None:
        damage(subject)
    with pytest.raises(DataError, match=pattern) as err:
        load_cohort(tmp_path)
    assert str(subject) in err.value.message


def test_duplicate_ids(tmp_path: Path) -> None:
    write_subject(tmp_path / "Training_Set", "IBSR_01")
    write_subject(tmp_path / "Test_Set", "IBSR_01", labelled=False)
    with pytest.raises(DataError, match=r"duplicate subject id 'IBSR_01'.*Training_Set/IBSR_01.*Test_Set/IBSR_01"):
        discover(tmp_path)


def test_root_missing_or_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere: dataset root does not exist"):
        load_cohort(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match=r"file\.txt: dataset root is not a folder"):
        load_cohort(tmp_path / "file.txt")


def test_no_subjects_names_both_layouts(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    with pytest.raises(DataError, match=r"no subjects found.*Training_Set.*flat layout") as err:
        discover(tmp_path)
    assert str(tmp_path) in err.value.message


def test_misnamed_image_lists_folder_contents(tmp_path: Path) -> None:
    subject = tmp_path / "Training_Set" / "IBSR_01"
    write_volume(phantom_case(SHAPE).image, subject / "t1.nii.gz")
    with pytest.raises(DataError, match=r"IBSR_01: subject folder has no image file IBSR_01\.nii\.gz.*t1\.nii\.gz"):
        discover(tmp_path)


def test_empty_subject_folder_in_course_layout(tmp_path: Path) -> None:
    write_subject(tmp_path / "Training_Set", "IBSR_03")
    (tmp_path / "Training_Set" / "IBSR_01").mkdir()
    with pytest.raises(DataError, match=r"IBSR_01: subject folder has no image.*contains: nothing"):
        discover(tmp_path)


def test_unknown_folder_with_nifti_next_to_course_folders(tmp_path: Path) -> None:
    write_subject(tmp_path / "Training_Set", "IBSR_01")
    write_subject(tmp_path / "Extra", "IBSR_05")
    (tmp_path / "docs").mkdir()  # no NIfTI: ignored
    with pytest.raises(DataError, match=r"Extra: unknown folder 'Extra' with NIfTI files"):
        discover(tmp_path)


def test_loose_nifti_is_refused(tmp_path: Path) -> None:
    write_subject(tmp_path / "Training_Set", "IBSR_01")
    write_volume(phantom_case(SHAPE).image, tmp_path / "Training_Set" / "IBSR_02.nii.gz")
    with pytest.raises(DataError, match=r"Training_Set: NIfTI files lying loose in the folder: IBSR_02\.nii\.gz"):
        discover(tmp_path)


def test_both_nii_and_nii_gz_is_ambiguous(tmp_path: Path) -> None:
    subject = write_subject(tmp_path, "s1")
    write_volume(phantom_case(SHAPE).image, subject / "s1.nii")
    with pytest.raises(DataError, match=r"both s1\.nii\.gz and s1\.nii exist"):
        discover(tmp_path)


# ------------------------------------------------------------------------------------------ describe


def test_describe_cohort_rows(course_root: Path) -> None:
    cohort = load_cohort(course_root, "paper")
    rows = {row["id"]: row for row in describe_cohort(cohort)}
    assert len(rows) == len(cohort.cases)
    row = rows["IBSR_07"]
    label = cohort.get("IBSR_07").label
    assert label is not None
    counts = np.bincount(label.array.ravel(), minlength=4)
    assert row["split"] == "val" and row["shape"] == SHAPE and row["spacing_mm"] == (1.0, 1.0, 1.0)
    assert (row["bg"], row["CSF"], row["GM"], row["WM"]) == tuple(int(c) for c in counts)
    assert row["bg"] + row["CSF"] + row["GM"] + row["WM"] == np.prod(SHAPE)
    assert min(row["CSF"], row["GM"], row["WM"]) > 0
    assert rows["IBSR_02"]["GM"] is None and rows["IBSR_02"]["split"] == "predict"


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_data_prints_table(course_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "--root", str(course_root), "--split", "holdout"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["id", "split", "shape", "spacing_mm", "bg", "CSF", "GM", "WM"]
    row = next(line for line in lines if line.startswith("IBSR_05"))
    assert row.split()[:4] == ["IBSR_05", "val", "10×12×10", "1×1×1"]
    assert next(line for line in lines if line.startswith("IBSR_02")).split()[-4:] == ["-"] * 4
    assert "test: 3 subjects (3 labelled): IBSR_04, IBSR_09, IBSR_18" in out


def test_cli_data_exit_2_on_bad_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_subject(tmp_path / "Training_Set", "IBSR_01", image=np.zeros(SHAPE, np.int16))
    assert main(["data", "--root", str(tmp_path), "--split", "course"]) == 2  # paper (the default) needs IBSR_07/16
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "IBSR_01.nii.gz: image is all-zero" in err
    assert main(["data", "--root", str(tmp_path / "missing")]) == 2


def test_errors_are_bench_errors() -> None:
    assert issubclass(DataError, BenchError) and issubclass(ConfigError, BenchError)


# ------------------------------------------------------------------------------------------ real data

IBSR_ROOT = Path(os.environ.get("IBSR18_ROOT", Path(__file__).resolve().parents[1].parent / "shared/data/ibsr18"))


@pytest.mark.ibsr
@pytest.mark.skipif(not IBSR_ROOT.is_dir(), reason=f"IBSR18 not found at {IBSR_ROOT}")
def test_ibsr18_holdout() -> None:
    cohort = load_cohort(IBSR_ROOT, "holdout")
    labelled = [c for c in cohort.cases if c.label is not None]
    assert len(labelled) == 10 and len(cohort.split("predict")) == 3
    assert all(c.label is None for c in cohort.split("predict"))
    groups = json.loads((IBSR_ROOT / "description.json").read_text())
    expected: dict[str, tuple[float, ...]] = {}
    for key, folders in groups.items():
        spacing = tuple(float(v) for v in key.strip("()").split(","))[:3]
        for ids in folders.values():
            expected.update(dict.fromkeys(ids, spacing))
    for case in cohort.cases:
        np.testing.assert_allclose(case.image.spacing_mm, expected[case.id], atol=1e-3)
        assert case.image.shape == (256, 128, 256)
    assert set(cohort.ids("test")) == {"IBSR_04", "IBSR_09", "IBSR_18"}
