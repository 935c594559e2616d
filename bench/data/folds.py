"""k-fold cross-validation over a dataset's labelled subjects, stratified by voxel spacing.

For a user without a separate test set: with ``folds`` folds every labelled subject is tested exactly once
over ``fold = 0 .. folds-1``, so rows can be compared on every subject. Folds are made once per
``seed`` (independent of the run's seed, so ``seed=0,1,2 data.fold=0,...,4`` trains every seed on the
same partition): the subjects of each voxel spacing (IBSR18's three, or read from the image headers) are
shuffled and dealt to the folds in turn, so each fold holds about the same mix of spacings, as the
``holdout`` split does. Fold ``fold`` is the test set; with three folds or more the next fold
(``fold + 1`` mod ``folds``) validates (early stopping, plateau), the rest train. Unlabelled subjects
are not used.

On an nnU-Net dataset (``bench.data.nnunet``) the folds are made over the labelled ``imagesTr`` cases and
the ``imagesTs`` cases are predicted (split ``predict``). If a ``splits_final.json`` lies beside dataset.json,
its folds are used instead (``folds`` must equal their number, ``seed`` plays no part): fold ``fold``'s
``val`` cases are the test set; with three folds or more, fold ``fold + 1``'s ``val`` cases that are among
fold ``fold``'s ``train`` cases validate; the rest of fold ``fold``'s ``train`` cases train.

Example:
    >>> assignment = fold_split(discover("data/ibsr18"), FoldSplit(folds=5, fold=0))   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.data.discovery import IBSR18, Discovery, SubjectFiles
from bench.data.nnunet import SPLITS_FINAL, read_splits_final
from bench.errors import ConfigError


@dataclass(frozen=True)
class FoldSplit:
    """Fold ``fold`` of ``folds`` (stratified by spacing, shuffled with ``seed``) is the test set."""

    folds: int = 5
    fold: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name, minimum in (("folds", 2), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"data.{'fold_seed' if name == 'seed' else name}={value!r} must be an "
                                  f"integer >= {minimum}")
        if isinstance(self.fold, bool) or not isinstance(self.fold, int) or not 0 <= self.fold < self.folds:
            raise ConfigError(f"data.fold={self.fold!r} is out of range for data.folds={self.folds}",
                              fix=f"use a fold from 0 to {self.folds - 1}")

    @property
    def name(self) -> str:
        """How the split is named in records: ``fold2of5-seed0``."""
        return f"fold{self.fold}of{self.folds}-seed{self.seed}"


def spacing_of(subject: SubjectFiles) -> tuple[float, float, float]:
    """Voxel size in mm: IBSR18's table for its ids, else the image header (rounded to 0.001 mm)."""
    if subject.id in IBSR18:
        return IBSR18[subject.id].spacing_mm
    if not subject.image_path.name.endswith((".nii", ".nii.gz")):
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(subject.image_path))
        reader.ReadImageInformation()
        zooms: tuple[float, ...] = reader.GetSpacing()[:3]
    else:
        import nibabel as nib

        zooms = nib.load(str(subject.image_path)).header.get_zooms()[:3]  # type: ignore[attr-defined]
    return (round(float(zooms[0]), 3), round(float(zooms[1]), 3), round(float(zooms[2]), 3))


def _labelled(found: Discovery) -> list[SubjectFiles]:
    """The subjects folds are made of: labelled ones (nnU-Net: the imagesTr cases), sorted by id."""
    if found.layout == "nnunet":
        return sorted((s for s in found.subjects if s.folder == "imagesTr"), key=lambda s: s.id)
    return sorted((s for s in found.subjects if s.label_path is not None), key=lambda s: s.id)


def splits_final(found: Discovery, split: FoldSplit) -> list[tuple[tuple[str, ...], tuple[str, ...]]] | None:
    """The folds of an nnU-Net root's ``splits_final.json`` as (train, val) ids, or ``None`` (none, or not nnU-Net).

    Raises:
        ConfigError: ``split.folds`` differs from the number of folds in the file.
        DataError: A malformed file (see :func:`bench.data.nnunet.read_splits_final`).
    """
    if found.layout != "nnunet":
        return None
    folds = read_splits_final(found.root, [s.id for s in _labelled(found)])
    if folds is not None and len(folds) != split.folds:
        raise ConfigError(f"data.folds={split.folds}, but {found.root / SPLITS_FINAL} holds {len(folds)} folds",
                          fix=f"set data.folds={len(folds)} (bench data --folds {len(folds)}), or remove the file")
    return folds


def fold_of_subject(found: Discovery, split: FoldSplit) -> dict[str, int]:
    """Labelled subject id -> its fold (``0 .. folds-1``; splits_final.json: the fold it is tested in)."""
    given = splits_final(found, split)
    if given is not None:
        tested: dict[str, int] = {}
        for k, (_, val) in enumerate(given):
            for subject_id in val:
                tested.setdefault(subject_id, k)
        order = [s.id for s in found.subjects]
        return dict(sorted(tested.items(), key=lambda item: order.index(item[0])))
    labelled = _labelled(found)
    if len(labelled) < split.folds:
        raise ConfigError(
            f"data.folds={split.folds} needs at least {split.folds} labelled subjects; {found.root} has "
            f"{len(labelled)}", fix="use fewer folds",
        )
    groups: dict[tuple[float, float, float], list[str]] = {}
    for subject in labelled:
        groups.setdefault(spacing_of(subject), []).append(subject.id)
    rng = np.random.default_rng(split.seed)
    order = [subject_id for spacing in sorted(groups) for subject_id in rng.permutation(groups[spacing])]
    return {str(subject_id): index % split.folds for index, subject_id in enumerate(order)}


def _given_fold(given: list[tuple[tuple[str, ...], tuple[str, ...]]], split: FoldSplit) -> dict[str, str]:
    """Subject id -> split for fold ``split.fold`` of splits_final.json (see the module docstring)."""
    train, test = given[split.fold]
    validate = set(given[(split.fold + 1) % split.folds][1]) if split.folds >= 3 else set()
    out = dict.fromkeys(test, "test")
    out.update({subject_id: "val" if subject_id in validate else "train" for subject_id in train})
    return out


def fold_split(found: Discovery, split: FoldSplit) -> dict[str, str]:
    """Subject id -> ``train``/``val``/``test`` (nnU-Net: ``predict`` for imagesTs) for this fold (see the module
    docstring)."""
    given = splits_final(found, split)
    if given is not None:
        out = _given_fold(given, split)
        source = f"{found.root / SPLITS_FINAL}'s fold {split.fold}"
    else:
        folds = fold_of_subject(found, split)
        val_fold = (split.fold + 1) % split.folds if split.folds >= 3 else None
        out = {}
        for subject_id, fold in folds.items():
            out[subject_id] = "test" if fold == split.fold else "val" if fold == val_fold else "train"
        source = f"data.folds={split.folds}"
    if "train" not in out.values():
        raise ConfigError(
            f"{source} leaves no training subject among {len(out)} labelled subjects "
            "(one fold tests, one validates)", fix="use fewer folds",
        )
    if found.layout == "nnunet":
        out.update({s.id: "predict" for s in found.subjects if s.folder == "imagesTs"})
    order = [s.id for s in found.subjects]
    return dict(sorted(out.items(), key=lambda item: order.index(item[0])))
