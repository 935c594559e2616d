"""Loading a dataset with checks: the :class:`Cohort` of :class:`Case` objects, and a per-subject summary.

:func:`load_cohort` discovers the subjects (``bench.data.discovery``: IBSR's course or flat layout, or an
nnU-Net/Decathlon folder), assigns them to sets (``bench.data.splits``), reads every input channel and label
of every assigned subject and checks them (geometry, label values, finite and non-constant intensities),
raising a :class:`~bench.errors.DataError` that names the file and the bad value.

Images keep the dtype they were stored with (IBSR: int16); the cast to float32 happens in
preprocessing. Labels are ``uint8`` class indices ``0 .. K-1`` of the cohort's label set: stored values are
mapped with :meth:`~bench.data.labels.LabelSet.to_indices` (IBSR: values 0..3 are the indices; any other
value is refused). IBSR roots compare a label's shape and spacing with its image; nnU-Net roots compare
shape, spacing, origin and direction (within :data:`SPACING_TOL_MM`) of every channel and the label.
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
from bench.data.labels import IBSR_LABELS, LabelSet, same_labels
from bench.data.splits import SPLITS, SplitSpec, assign_split
from bench.errors import ConfigError, DataError
from bench.io import Volume, read_channels, read_volume
from bench.types import TISSUE_NAMES

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


def _nonfinite_on_disk(array: np.ndarray, path: Path, channel: int | None = None) -> np.ndarray:
    """The voxels as stored, for counting NaN/Inf.

    ITK's NIfTI reader (SimpleITK 2.5) silently turns NaN and ±Inf into 0, so float NIfTI files are read
    again with nibabel to see their true values (``channel``: one volume of a 4-D file); other formats are
    taken as read.
    """
    if path.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib  # only for float images, which IBSR never has

        stored = np.asanyarray(nib.load(path).dataobj)  # type: ignore[attr-defined]
        return stored[..., channel] if channel is not None and stored.ndim == 4 else stored
    return array


def check_image(image: Volume, path: Path, channel: int | None = None) -> None:
    """Refuse an image that holds no anatomy: non-finite intensities (counted as stored) or a constant volume.

    ``channel``: which volume of a 4-D file ``path`` holds (Decathlon), named in the message.
    """
    array = image.array
    what = "image" if channel is None else f"image channel {channel}"
    if np.issubdtype(array.dtype, np.floating):
        stored = _nonfinite_on_disk(array, path, channel)
        n_nan = int(np.count_nonzero(np.isnan(stored)))
        n_inf = int(np.count_nonzero(np.isinf(stored)))
        if n_nan or n_inf:
            raise DataError(
                f"{what} has non-finite intensities: {n_nan} NaN and {n_inf} Inf voxels", path=path
            )
    low, high = array.min(), array.max()
    if low == high:
        value = "all-zero" if low == 0 else f"constant (every voxel = {low})"
        raise DataError(f"{what} is {value}; it holds no anatomy", path=path, fix="check the file")


def _unknown_values(array: np.ndarray, labels: LabelSet) -> list[int]:
    """Stored values no class has (at most 10; a fast check first, ``np.unique`` only when one is there)."""
    low, high = int(array.min()), int(array.max())
    if low >= 0 and high <= max(labels.values):
        known = np.zeros(max(labels.values) + 1, dtype=bool)
        known[list(labels.values)] = True
        if labels.contiguous or known[array.astype(np.intp, copy=False)].all():
            return []
    return labels.unknown_values(array)


def _label_indices(label: Volume, path: Path, labels: LabelSet, dataset_json: Path | None) -> np.ndarray:
    """The label map as uint8 class indices; non-integer or unknown stored values are refused."""
    array = label.array
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            examples = np.unique(array[bad])[:10].tolist()
            raise DataError(f"label map has non-integer values, e.g. {examples}", path=path)
    unknown = _unknown_values(array, labels)
    if unknown:
        shown = ", ".join(str(v) for v in unknown)
        if dataset_json is None and same_labels(labels, IBSR_LABELS):
            raise DataError(f"label values outside {{0, 1, 2, 3}}: {shown}", path=path,
                            fix="labels must be 0 background, 1 CSF, 2 GM, 3 WM")
        raise DataError(f"label values {shown} are not in {dataset_json or 'the label set'}'s labels "
                        f"({labels.describe()})", path=path,
                        fix="add the classes to dataset.json's labels, or fix the label map")
    return labels.to_indices(array)


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _geometry_difference(volume: Volume, reference: Volume, *, full: bool) -> str | None:
    """How ``volume``'s grid differs from ``reference``'s (shape, spacing; ``full``: origin, direction too)."""
    if volume.shape != reference.shape:
        return f"shape {volume.shape} differs from {{ref}} shape {reference.shape}"
    if not np.allclose(volume.spacing_mm, reference.spacing_mm, rtol=0.0, atol=SPACING_TOL_MM):
        return (f"spacing {_fmt_spacing(volume.spacing_mm)} mm differs from {{ref}} spacing "
                f"{_fmt_spacing(reference.spacing_mm)} mm")
    if full and not np.allclose(volume.origin_mm, reference.origin_mm, rtol=0.0, atol=SPACING_TOL_MM):
        return f"origin {_fmt(volume.origin_mm)} mm differs from {{ref}} origin {_fmt(reference.origin_mm)} mm"
    if full and not np.allclose(volume.direction, reference.direction, rtol=0.0, atol=SPACING_TOL_MM):
        return f"direction {_fmt(volume.direction)} differs from {{ref}} direction {_fmt(reference.direction)}"
    return None


def _check_label(label: Volume, image: Volume, label_path: Path, image_path: Path, labels: LabelSet = IBSR_LABELS,
                 dataset_json: Path | None = None) -> Volume:
    difference = _geometry_difference(label, image, full=dataset_json is not None)
    if difference is not None:
        raise DataError(f"label {difference.format(ref='image')} ({image_path.name})", path=label_path,
                        fix=None if dataset_json is None else "resample the label map onto its image's grid")
    return label.with_array(_label_indices(label, label_path, labels, dataset_json))


def _read_channels(files: SubjectFiles) -> list[tuple[Volume, Path]]:
    """Every input channel of a subject with the file it came from (checked like an image)."""
    if files.channels_in_image > 1:
        volumes = read_channels(files.image_path, files.channels_in_image)
        for c, volume in enumerate(volumes):
            check_image(volume, files.image_path, channel=c)
        return [(v, files.image_path) for v in volumes]
    out = []
    for path in (files.image_path, *files.extra_image_paths):
        volume = read_volume(path)
        check_image(volume, path)
        out.append((volume, path))
    return out


def load_case(files: SubjectFiles, split: str, labels: LabelSet = IBSR_LABELS, dataset_json: Path | None = None
              ) -> Case:
    """Read and check one subject: every input channel and, when it has one, its label map (as class indices).

    Args:
        files: Where the subject's files are.
        split: The split it is assigned to.
        labels: The dataset's label set (stored values are mapped to its class indices).
        dataset_json: An nnU-Net root's dataset.json (named in messages; turns on the full geometry checks),
            ``None`` for IBSR layouts.

    Raises:
        DataError: Naming the file: unreadable, non-finite or constant image, channels of different geometry,
            a label map off its image's grid or with values the label set lacks.
    """
    channels = _read_channels(files)
    image, image_path = channels[0]
    for c, (volume, path) in enumerate(channels[1:], start=1):
        difference = _geometry_difference(volume, image, full=True)
        if difference is not None:
            raise DataError(f"channel {c} {difference.format(ref=f'channel 0 ({image_path.name})')}", path=path,
                            fix="resample every channel of a case onto one grid")
    label = None
    if files.label_path is not None:
        raw = read_volume(files.label_path)
        label = _check_label(raw, image, files.label_path, image_path, labels, dataset_json)
    extra_paths = tuple(path for _, path in channels[1:])
    return Case(files.id, split, image, label, files.image_path, files.label_path,
                tuple(v for v, _ in channels[1:]), extra_paths)


def _check_required_labels(subjects: Iterable[tuple[SubjectFiles, str]], require: Sequence[str]) -> None:
    for files, split in subjects:
        if split in require and files.label_path is None:
            if files.folder in ("imagesTr", "imagesTs"):  # nnU-Net: labelsTr/<id><ending>
                ending = files.image_path.name[len(files.id):].removeprefix("_0000")
                folder = files.folder.replace("images", "labels")
                expected = files.image_path.parent.parent / folder / f"{files.id}{ending}"
            else:
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
        root: Dataset root (course or flat layout, or a folder holding an nnU-Net/Decathlon dataset.json).
        split: ``course``, ``paper``, ``holdout`` (IBSR layouts), an explicit :class:`SplitSpec` or a k-fold
            ``FoldSplit`` (nnU-Net: over imagesTr, or its splits_final.json; imagesTs is ``predict``).
        require_labels: Splits whose subjects must have a label file. Labels of other splits are read
            when present.
        max_workers: Files are read in this many threads (SimpleITK decompresses outside the GIL).

    Returns:
        The cohort with its label set and channel names (IBSR: :data:`IBSR_LABELS`, ``("T1",)``); images
        keep their stored dtype, labels are ``uint8`` class indices.

    Raises:
        ConfigError: Unknown split name or ``require_labels`` entry, a named split on an nnU-Net root.
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
    dataset_json = found.root / "dataset.json" if found.layout == "nnunet" else None
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        cases = list(pool.map(lambda pair: load_case(pair[0], pair[1], found.labels, dataset_json), pairs))
    split_name = "explicit" if isinstance(split, SplitSpec) else split.name if isinstance(split, FoldSplit) else split
    return Cohort(tuple(cases), root=found.root, split_name=split_name, labels=found.labels,
                  channel_names=found.channel_names)


# ------------------------------------------------------------------------------------------ describe


def _fmt_spacing(spacing: Sequence[float]) -> str:
    return "×".join(f"{s:.4g}" for s in spacing)


CLASS_COLUMNS = ("bg", *TISSUE_NAMES.values())
"""IBSR's voxel-count columns (``bench data``); other label sets are named by their class names."""

ROW_KEYS = ("id", "split", "channels", "shape", "spacing_mm", "labelled")


def class_columns(labels: LabelSet = IBSR_LABELS, *, ibsr: bool = True) -> tuple[str, ...]:
    """Voxel-count column names in class-index order: IBSR's ``bg, CSF, GM, WM`` for its label set (``ibsr``),
    else the class names (a name that is also a row key gets `` (label)`` appended)."""
    if ibsr and same_labels(labels, IBSR_LABELS):
        return CLASS_COLUMNS
    return tuple(f"{n} (label)" if n in ROW_KEYS else n for n in labels.names)


def class_voxels(label: Volume | None, labels: LabelSet = IBSR_LABELS, *, ibsr: bool = True) -> dict[str, int | None]:
    """Voxels per class (see :func:`class_columns`); ``None`` values for an unlabelled case."""
    columns = class_columns(labels, ibsr=ibsr)
    if label is None:
        return dict.fromkeys(columns)
    counts = np.bincount(label.array.ravel(), minlength=labels.num_classes)
    return {name: int(counts[k]) for k, name in enumerate(columns)}


def describe_cohort(cohort: Cohort, *, ibsr_columns: bool = True) -> list[dict[str, Any]]:
    """One row per subject: id, split, channels (count), shape, spacing_mm, labelled and voxels per class
    (:func:`class_columns`; ``ibsr_columns=False`` names them by the label set even for IBSR's classes;
    ``None`` when unlabelled)."""
    rows = []
    for case in cohort.cases:
        row: dict[str, Any] = {
            "id": case.id,
            "split": case.split,
            "channels": case.num_channels,
            "shape": case.image.shape,
            "spacing_mm": tuple(round(float(s), 7) for s in case.image.spacing_mm),
            "labelled": case.label is not None,
        }
        row.update(class_voxels(case.label, cohort.labels, ibsr=ibsr_columns))
        rows.append(row)
    return rows
