"""Datasets: discovery of a dataset root, named splits, and loading with checks.

Two layouts are recognised under a dataset root (``.nii.gz`` or ``.nii`` files):

* course layout: ``root/{Training_Set,Validation_Set,Test_Set}/<id>/<id>.nii.gz`` (+ ``<id>_seg.nii.gz``
  when labelled). The folder gives the course split: ``Training_Set`` -> ``train``,
  ``Validation_Set`` -> ``test`` (the course's labelled hold-out), ``Test_Set`` -> ``predict``.
* flat layout: ``root/<id>/<id>.nii.gz`` (+ ``<id>_seg.nii.gz``); no folder split.

Named splits (see :data:`NAMED_SPLITS`) turn the subjects into ``train``/``val``/``test``/``predict``
sets; an explicit :class:`SplitSpec` lists the ids of each set instead. :func:`load_cohort` reads every
assigned subject and checks it (geometry, label values, finite and non-constant intensities), raising a
:class:`~bench.errors.DataError` that names the file and the bad value.

Images keep the dtype they were stored with (IBSR: int16); the cast to float32 happens in
preprocessing. Labels are always ``uint8`` with values in ``{0, 1, 2, 3}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bench.errors import ConfigError, DataError
from bench.io import Volume, read_volume
from bench.types import LABELS, NUM_CLASSES, TISSUE_NAMES, Spacing

SPLITS = ("train", "val", "test", "predict")
"""``predict`` holds unlabelled subjects that are predicted but never scored."""

COURSE_FOLDERS: Mapping[str, str] = {
    "Training_Set": "train",
    "Validation_Set": "test",
    "Test_Set": "predict",
}
"""Course folder -> its split under the ``course`` split (Validation_Set is the labelled hold-out)."""

NAMED_SPLITS = ("course", "paper", "holdout")

SPACING_TOL_MM = 1e-3
IBSR_SPACINGS_MM: tuple[Spacing, ...] = (
    (0.9375, 1.5, 0.9375),
    (1.0, 1.5, 1.0),
    (0.8370536, 1.5, 0.8370536),
)
"""The three voxel sizes of IBSR18 (axis 1 is the 1.5 mm coronal slice axis)."""


@dataclass(frozen=True)
class IbsrSubject:
    """Where one IBSR18 subject sits in the course distribution."""

    id: str
    folder: str
    spacing_mm: Spacing


def _ibsr_table() -> dict[str, IbsrSubject]:
    groups = {
        IBSR_SPACINGS_MM[0]: {"Training_Set": (1, 3, 4, 5, 6), "Validation_Set": (13, 14), "Test_Set": (2,)},
        IBSR_SPACINGS_MM[1]: {"Training_Set": (7, 8, 9), "Validation_Set": (11, 12), "Test_Set": (10,)},
        IBSR_SPACINGS_MM[2]: {"Training_Set": (16, 18), "Validation_Set": (17,), "Test_Set": (15,)},
    }
    table = {}
    for spacing, folders in groups.items():
        for folder, numbers in folders.items():
            for n in numbers:
                table[f"IBSR_{n:02d}"] = IbsrSubject(f"IBSR_{n:02d}", folder, spacing)
    return dict(sorted(table.items()))


IBSR18: Mapping[str, IbsrSubject] = _ibsr_table()
"""The 18 IBSR subjects with their course folder and spacing (from the course's description.json)."""


# --------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One subject.

    Attributes:
        id: Subject id, e.g. ``IBSR_01``.
        split: One of ``SPLITS``.
        image: The T1 volume (native grid).
        label: The reference label map (0 bg, 1 CSF, 2 GM, 3 WM) on the same grid, or ``None``.
        image_path, label_path: Where they were read from (``None`` for in-memory cases).
    """

    id: str
    split: str
    image: Volume
    label: Volume | None = None
    image_path: Path | None = None
    label_path: Path | None = None


@dataclass(frozen=True)
class Cohort:
    """All cases of a dataset, each tagged with its split.

    Attributes:
        cases: The cases, in discovery order.
        root: The dataset root they were loaded from (``None`` for in-memory cohorts).
        split_name: The split that assigned them (a named split, or ``"explicit"``).
    """

    cases: tuple[Case, ...] = field(default_factory=tuple)
    root: Path | None = None
    split_name: str = ""

    def split(self, name: str) -> list[Case]:
        """The cases of one split (``train``, ``val``, ``test`` or ``predict``)."""
        return [c for c in self.cases if c.split == name]

    def ids(self, split: str | None = None) -> list[str]:
        """Subject ids of one split, or of every case when ``split`` is ``None``."""
        return [c.id for c in self.cases if split is None or c.split == split]

    def get(self, case_id: str) -> Case:
        """The case with this id (``KeyError`` naming the available ids if absent)."""
        for case in self.cases:
            if case.id == case_id:
                return case
        raise KeyError(f"no case {case_id!r}; available: {', '.join(self.ids())}")


# ----------------------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class SubjectFiles:
    """The files of one subject found on disk.

    Attributes:
        id: Subject id (its folder name).
        folder: Course folder (``Training_Set``, ...) or ``None`` in the flat layout.
        image_path: ``<id>.nii[.gz]``.
        label_path: ``<id>_seg.nii[.gz]`` or ``None`` when unlabelled.
    """

    id: str
    folder: str | None
    image_path: Path
    label_path: Path | None


@dataclass(frozen=True)
class Discovery:
    """What :func:`discover` found under a dataset root."""

    root: Path
    layout: Literal["course", "flat"]
    subjects: tuple[SubjectFiles, ...]

    def by_id(self) -> dict[str, SubjectFiles]:
        return {s.id: s for s in self.subjects}


def _is_nifti(path: Path) -> bool:
    return path.is_file() and (path.name.endswith(".nii") or path.name.endswith(".nii.gz"))


def _contains_nifti(folder: Path) -> bool:
    return any(_is_nifti(p) for p in folder.rglob("*"))


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _find_named(folder: Path, stem: str, what: str) -> Path | None:
    """``folder/stem.nii.gz`` or ``folder/stem.nii``; both present is ambiguous."""
    found = [folder / f"{stem}{ext}" for ext in (".nii.gz", ".nii") if (folder / f"{stem}{ext}").is_file()]
    if len(found) > 1:
        raise DataError(
            f"both {found[0].name} and {found[1].name} exist for the {what}",
            path=folder,
            fix="keep only one of them",
        )
    return found[0] if found else None


def _subject_files(folder: Path, course_folder: str | None) -> SubjectFiles:
    subject_id = folder.name
    image = _find_named(folder, subject_id, "image")
    if image is None:
        present = [p.name for p in _visible(folder)] or ["nothing"]
        raise DataError(
            f"subject folder has no image file {subject_id}.nii.gz (or .nii); it contains: "
            f"{', '.join(present)}",
            path=folder,
            fix=f"name the T1 image {subject_id}.nii.gz and its label {subject_id}_seg.nii.gz",
        )
    label = _find_named(folder, f"{subject_id}_seg", "label")
    return SubjectFiles(subject_id, course_folder, image, label)


def _refuse_loose_files(folder: Path) -> None:
    loose = [p.name for p in _visible(folder) if _is_nifti(p)]
    if loose:
        raise DataError(
            f"NIfTI files lying loose in the folder: {', '.join(loose[:5])}",
            path=folder,
            fix="put each subject in its own folder <id>/<id>.nii.gz (+ <id>_seg.nii.gz)",
        )


def _check_unique(subjects: Sequence[SubjectFiles]) -> None:
    seen: dict[str, Path] = {}
    for s in subjects:
        if s.id in seen:
            raise DataError(
                f"duplicate subject id {s.id!r}: {seen[s.id].parent} and {s.image_path.parent}",
                path=s.image_path.parent,
                fix="each subject id may appear in only one folder",
            )
        seen[s.id] = s.image_path


def discover(root: str | Path) -> Discovery:
    """Find the subjects under a dataset root (course or flat layout, see the module docstring).

    Raises:
        DataError: The root is missing or not a folder, no subject was found, a subject folder lacks its
            image (the message lists what is there), or a subject id appears twice.
    """
    root = Path(root)
    if not root.exists():
        raise DataError("dataset root does not exist", path=root, fix="pass the folder that holds the subjects")
    if not root.is_dir():
        raise DataError("dataset root is not a folder", path=root, fix="pass the folder that holds the subjects")
    course = [root / name for name in COURSE_FOLDERS if (root / name).is_dir()]
    subjects: list[SubjectFiles] = []
    _refuse_loose_files(root)
    if course:
        layout: Literal["course", "flat"] = "course"
        for sub in _visible(root):
            if sub.is_dir() and sub.name not in COURSE_FOLDERS and _contains_nifti(sub):
                raise DataError(
                    f"unknown folder {sub.name!r} with NIfTI files next to the course folders",
                    path=sub,
                    fix=f"move its subjects into one of {', '.join(COURSE_FOLDERS)}, or remove it",
                )
        for folder in course:
            _refuse_loose_files(folder)
            subjects += [_subject_files(s, folder.name) for s in _visible(folder) if s.is_dir()]
    else:
        layout = "flat"
        subjects = [_subject_files(s, None) for s in _visible(root) if s.is_dir() and _contains_nifti(s)]
    if not subjects:
        raise DataError(
            "no subjects found; looked for the course layout "
            "{Training_Set,Validation_Set,Test_Set}/<id>/<id>.nii.gz and the flat layout <id>/<id>.nii.gz",
            path=root,
            fix="point --root at the dataset folder (e.g. the one holding Training_Set/)",
        )
    _check_unique(subjects)
    return Discovery(root, layout, tuple(subjects))


# -------------------------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class SplitSpec:
    """An explicit split: the subject ids of each set (subjects in no list are not loaded).

    Lists are accepted and stored as tuples.
    """

    train: Sequence[str] = ()
    val: Sequence[str] = ()
    test: Sequence[str] = ()
    predict: Sequence[str] = ()

    def __post_init__(self) -> None:
        for name in SPLITS:
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigError(f"split {name!r} must be a list of ids, got the string {value!r}")
            object.__setattr__(self, name, tuple(str(v) for v in value))

    def assignment(self) -> dict[str, str]:
        """Subject id -> split name; an id listed twice is a ``ConfigError``."""
        out: dict[str, str] = {}
        for name in SPLITS:
            for subject_id in getattr(self, name):
                if subject_id in out:
                    raise ConfigError(
                        f"subject {subject_id!r} is listed in both {out[subject_id]!r} and {name!r}",
                        fix="put each id in one split only",
                    )
                out[subject_id] = name
        return out


PAPER_VAL = ("IBSR_07", "IBSR_16")
HOLDOUT_VAL = ("IBSR_05", "IBSR_07")
HOLDOUT_TEST = ("IBSR_04", "IBSR_09", "IBSR_18")


def _folders(found: Discovery, split_name: str) -> dict[str, str]:
    """Subject id -> course folder: from disk (course layout) or from the IBSR18 table (flat layout)."""
    if found.layout == "course":
        return {s.id: str(s.folder) for s in found.subjects}
    unknown = [s.id for s in found.subjects if s.id not in IBSR18]
    if unknown:
        raise DataError(
            f"split {split_name!r} on a flat layout assigns subjects by their IBSR id, but these ids are not "
            f"IBSR18 ids: {', '.join(unknown)}",
            path=found.root,
            fix="use the course layout, or an explicit split (SplitSpec)",
        )
    return {s.id: IBSR18[s.id].folder for s in found.subjects}


def _require_ids(found: Discovery, split_name: str, ids: Iterable[str]) -> None:
    missing = [i for i in ids if i not in found.by_id()]
    if missing:
        raise DataError(
            f"split {split_name!r} needs subjects that are not in this dataset: {', '.join(missing)} "
            f"(found: {', '.join(found.by_id())})",
            path=found.root,
            fix="choose another split (course, paper, holdout) or an explicit one",
        )


def course_split(found: Discovery) -> dict[str, str]:
    """The course's own split: Training_Set -> train, Validation_Set -> test, Test_Set -> predict."""
    if found.layout != "course":
        raise DataError(
            "split 'course' needs the course folders Training_Set/Validation_Set/Test_Set; this root has the "
            "flat layout",
            path=found.root,
            fix="use --split paper or holdout (IBSR ids), or an explicit split",
        )
    return {s.id: COURSE_FOLDERS[str(s.folder)] for s in found.subjects}


def paper_split(found: Discovery) -> dict[str, str]:
    """The paper's split: IBSR_07 and IBSR_16 validate, the rest of Training_Set trains,
    Validation_Set is the test set and Test_Set is predicted."""
    _require_ids(found, "paper", PAPER_VAL)
    out = {}
    for subject_id, folder in _folders(found, "paper").items():
        out[subject_id] = "val" if subject_id in PAPER_VAL else COURSE_FOLDERS[folder]
    return out


def holdout_split(found: Discovery) -> dict[str, str]:
    """A hold-out inside Training_Set, for copies of IBSR18 without the Validation_Set folder.

    Our local IBSR18 copy has only Training_Set (10 labelled) and Test_Set (3 unlabelled), so the
    ``paper`` split would have no test subjects. ``holdout`` keeps one or two subjects of each of the three
    IBSR spacings out of training: val = IBSR_05, IBSR_07; test = IBSR_04, IBSR_09, IBSR_18; train = the
    rest of Training_Set; predict = Test_Set. Validation_Set subjects, if present, are not used.
    """
    _require_ids(found, "holdout", HOLDOUT_VAL + HOLDOUT_TEST)
    out = {}
    for subject_id, folder in _folders(found, "holdout").items():
        if subject_id in HOLDOUT_VAL:
            out[subject_id] = "val"
        elif subject_id in HOLDOUT_TEST:
            out[subject_id] = "test"
        elif folder == "Training_Set":
            out[subject_id] = "train"
        elif folder == "Test_Set":
            out[subject_id] = "predict"
    return out


def explicit_split(found: Discovery, spec: SplitSpec) -> dict[str, str]:
    """Assign the ids listed in ``spec``; unknown ids are a ``DataError`` listing the available ones."""
    assignment = spec.assignment()
    available = found.by_id()
    unknown = [i for i in assignment if i not in available]
    if unknown:
        raise DataError(
            f"explicit split lists unknown subject ids: {', '.join(unknown)} (available: "
            f"{', '.join(available)})",
            path=found.root,
            fix="fix the ids in the split",
        )
    order = list(available)
    return dict(sorted(assignment.items(), key=lambda item: order.index(item[0])))


def assign_split(found: Discovery, split: str | SplitSpec) -> dict[str, str]:
    """Subject id -> split (``train``/``val``/``test``/``predict``) for a named or explicit split."""
    if isinstance(split, SplitSpec):
        return explicit_split(found, split)
    named = {"course": course_split, "paper": paper_split, "holdout": holdout_split}
    if split not in named:
        raise ConfigError(f"unknown split {split!r}", fix=f"use one of {', '.join(NAMED_SPLITS)} or a SplitSpec")
    return named[split](found)


# ------------------------------------------------------------------------------------------- loading


def _nonfinite_on_disk(array: np.ndarray, path: Path) -> np.ndarray:
    """The voxels as stored, for counting NaN/Inf.

    ITK's NIfTI reader (SimpleITK 2.5) silently turns NaN and ±Inf into 0, so float NIfTI files are read
    again with nibabel to see their true values; other formats are taken as read.
    """
    if path.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib  # only for float images, which IBSR never has

        return np.asanyarray(nib.load(path).dataobj)  # type: ignore[attr-defined]
    return array


def _check_image(image: Volume, path: Path) -> None:
    array = image.array
    if np.issubdtype(array.dtype, np.floating):
        stored = _nonfinite_on_disk(array, path)
        n_nan = int(np.count_nonzero(np.isnan(stored)))
        n_inf = int(np.count_nonzero(np.isinf(stored)))
        if n_nan or n_inf:
            raise DataError(
                f"image has non-finite intensities: {n_nan} NaN and {n_inf} Inf voxels", path=path
            )
    low, high = array.min(), array.max()
    if low == high:
        what = "all-zero" if low == 0 else f"constant (every voxel = {low})"
        raise DataError(f"image is {what}; it holds no anatomy", path=path, fix="check the file")


def _label_array(label: Volume, path: Path) -> np.ndarray:
    array = label.array
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            examples = np.unique(array[bad])[:10].tolist()
            raise DataError(f"label map has non-integer values, e.g. {examples}", path=path)
    low, high = array.min(), array.max()
    if low < 0 or high > NUM_CLASSES - 1:
        bad_values = np.unique(array[(array < 0) | (array > NUM_CLASSES - 1)])
        shown = ", ".join(str(int(v)) for v in bad_values[:10])
        raise DataError(
            f"label values outside {{0, 1, 2, 3}}: {shown}",
            path=path,
            fix="labels must be 0 background, 1 CSF, 2 GM, 3 WM",
        )
    return array.astype(np.uint8, copy=False)


def _check_label(label: Volume, image: Volume, label_path: Path, image_path: Path) -> Volume:
    if label.shape != image.shape:
        raise DataError(
            f"label shape {label.shape} differs from image shape {image.shape} ({image_path.name})",
            path=label_path,
        )
    if not np.allclose(label.spacing_mm, image.spacing_mm, rtol=0.0, atol=SPACING_TOL_MM):
        raise DataError(
            f"label spacing {_fmt_spacing(label.spacing_mm)} mm differs from image spacing "
            f"{_fmt_spacing(image.spacing_mm)} mm ({image_path.name})",
            path=label_path,
        )
    return label.with_array(_label_array(label, label_path))


def _load_case(files: SubjectFiles, split: str) -> Case:
    image = read_volume(files.image_path)
    _check_image(image, files.image_path)
    label = None
    if files.label_path is not None:
        raw = read_volume(files.label_path)
        label = _check_label(raw, image, files.label_path, files.image_path)
    return Case(files.id, split, image, label, files.image_path, files.label_path)


def _check_required_labels(subjects: Iterable[tuple[SubjectFiles, str]], require: Sequence[str]) -> None:
    for files, split in subjects:
        if split in require and files.label_path is None:
            expected = files.image_path.parent / f"{files.id}_seg.nii.gz"
            raise DataError(
                f"subject {files.id} is in split {split!r}, which needs labels, but has no label file",
                path=expected,
                fix="add the label map, or move the subject to the predict split",
            )


def load_cohort(
    root: str | Path,
    split: str | SplitSpec = "course",
    *,
    require_labels: Sequence[str] = ("train", "val", "test"),
    max_workers: int = 2,
) -> Cohort:
    """Discover, assign and read every subject of a dataset, checking each file.

    Args:
        root: Dataset root (course or flat layout).
        split: ``course``, ``paper``, ``holdout`` or an explicit :class:`SplitSpec`.
        require_labels: Splits whose subjects must have a label file. Labels of other splits are read
            when present.
        max_workers: Files are read in this many threads (SimpleITK decompresses outside the GIL).

    Returns:
        The cohort; images keep their stored dtype, labels are ``uint8``.

    Raises:
        ConfigError: Unknown split name or ``require_labels`` entry.
        DataError: Any problem with the files (see the module docstring), naming the file.
    """
    bad = [s for s in require_labels if s not in SPLITS]
    if bad:
        raise ConfigError(f"require_labels has unknown splits {bad}", fix=f"use names from {SPLITS}")
    found = discover(root)
    assignment = assign_split(found, split)
    files = found.by_id()
    pairs = [(files[subject_id], name) for subject_id, name in assignment.items()]
    _check_required_labels(pairs, require_labels)
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        cases = list(pool.map(lambda pair: _load_case(*pair), pairs))
    split_name = "explicit" if isinstance(split, SplitSpec) else split
    return Cohort(tuple(cases), root=found.root, split_name=split_name)


# ------------------------------------------------------------------------------------------ describe


def _fmt_spacing(spacing: Sequence[float]) -> str:
    return "×".join(f"{s:.4g}" for s in spacing)


CLASS_COLUMNS = ("bg", *TISSUE_NAMES.values())


def class_voxels(label: Volume | None) -> dict[str, int | None]:
    """Voxels per class (``bg``, ``CSF``, ``GM``, ``WM``); ``None`` values for an unlabelled case."""
    if label is None:
        return dict.fromkeys(CLASS_COLUMNS)
    counts = np.bincount(label.array.ravel(), minlength=NUM_CLASSES)
    return {name: int(counts[k]) for name, k in zip(CLASS_COLUMNS, LABELS, strict=True)}


def describe_cohort(cohort: Cohort) -> list[dict[str, Any]]:
    """One row per subject: id, split, shape, spacing_mm and voxels per class (None when unlabelled)."""
    rows = []
    for case in cohort.cases:
        row: dict[str, Any] = {
            "id": case.id,
            "split": case.split,
            "shape": case.image.shape,
            "spacing_mm": tuple(round(float(s), 7) for s in case.image.spacing_mm),
        }
        row.update(class_voxels(case.label))
        rows.append(row)
    return rows

