"""Loading a dataset with checks: the :class:`Cohort` of :class:`Case` objects, and a per-subject summary.

:func:`load_cohort` discovers the subjects (``bench.data.discovery``), assigns them to sets
(``bench.data.splits``), reads every assigned subject and checks it (geometry, label values, finite and
non-constant intensities), raising a :class:`~bench.errors.DataError` that names the file and the bad
value.

Images keep the dtype they were stored with (IBSR: int16); the cast to float32 happens in
preprocessing. Labels are always ``uint8`` with values in ``{0, 1, 2, 3}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.discovery import SubjectFiles, discover
from bench.data.folds import FoldSplit
from bench.data.splits import SPLITS, SplitSpec, assign_split
from bench.errors import ConfigError, DataError
from bench.io import Volume, read_volume
from bench.data.labels import IBSR_LABELS, LabelSet
from bench.types import LABELS, NUM_CLASSES, TISSUE_NAMES

SPACING_TOL_MM = 1e-3


# --------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One subject.

    Attributes:
        id: Subject id, e.g. ``IBSR_01``.
        split: One of ``SPLITS``.
        image: The first input channel (IBSR: the T1 volume), native grid.
        label: The reference label map as class indices ``0 .. K-1`` of the cohort's ``LabelSet`` (stored
            values mapped on loading; IBSR: 0 bg, 1 CSF, 2 GM, 3 WM) on the same grid, or ``None``.
        image_path, label_path: Where they were read from (``None`` for in-memory cases).
        extra: Input channels 1 .. N-1 on the same grid (nnU-Net's ``_0001`` ...); empty for one channel.
        extra_paths: Their files (one per channel; a 4-D file holding every channel repeats ``image_path``).
    """

    id: str
    split: str
    image: Volume
    label: Volume | None = None
    image_path: Path | None = None
    label_path: Path | None = None
    extra: tuple[Volume, ...] = ()
    extra_paths: tuple[Path, ...] = ()

    @property
    def channels(self) -> tuple[Volume, ...]:
        """Every input channel, in order (``image`` first)."""
        return (self.image, *self.extra)

    @property
    def num_channels(self) -> int:
        return 1 + len(self.extra)


@dataclass(frozen=True)
class Cohort:
    """All cases of a dataset, each tagged with its split.

    Attributes:
        cases: The cases, in discovery order.
        root: The dataset root they were loaded from (``None`` for in-memory cohorts).
        split_name: The split that assigned them (a named split, or ``"explicit"``).
        labels: The dataset's label set (case labels hold its class indices).
        channel_names: One name per input channel (IBSR: ``("T1",)``).
    """

    cases: tuple[Case, ...] = field(default_factory=tuple)
    root: Path | None = None
    split_name: str = ""
    labels: LabelSet = IBSR_LABELS
    channel_names: tuple[str, ...] = ("T1",)

    def split(self, name: str) -> list[Case]:
        """The cases of one split (``train``, ``val``, ``test`` or ``predict``)."""
        return [c for c in self.cases if c.split == name]

    def ids(self, split: str | None = None) -> list[str]:
        """Subject ids of one split, or of every case when ``split`` is ``None``."""
        return [c.id for c in self.cases if split is None or c.split == split]

    def with_val_in_train(self) -> Cohort:
        """The same cohort with every validation case moved to the training set (no validation left)."""
        cases = tuple(replace(c, split="train") if c.split == "val" else c for c in self.cases)
        return replace(self, cases=cases)

    def get(self, case_id: str) -> Case:
        """The case with this id (``KeyError`` naming the available ids if absent)."""
        for case in self.cases:
            if case.id == case_id:
                return case
        raise KeyError(f"no case {case_id!r}; available: {', '.join(self.ids())}")


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


def check_image(image: Volume, path: Path) -> None:
    """Refuse an image that holds no anatomy: non-finite intensities (counted as stored) or a constant volume."""
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
    check_image(image, files.image_path)
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
    split: str | SplitSpec | FoldSplit = "course",
    *,
    require_labels: Sequence[str] = ("train", "val", "test"),
    max_workers: int = 2,
) -> Cohort:
    """Discover, assign and read every subject of a dataset, checking each file.

    Args:
        root: Dataset root (course or flat layout).
        split: ``course``, ``paper``, ``holdout``, an explicit :class:`SplitSpec` or a k-fold ``FoldSplit``.
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
    split_name = "explicit" if isinstance(split, SplitSpec) else split.name if isinstance(split, FoldSplit) else split
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

